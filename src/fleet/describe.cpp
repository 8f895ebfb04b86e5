// How messages name a slot's holder, and how to remove a slot key that never expires.
#include <algorithm>
#include <cctype>
#include <string>

#include "../escape.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {
namespace {

// A word a shell passes on as it is; anything else in single quotes.
std::string for_shell(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("/._-%:+=,@").find(c) != std::string_view::npos;
  });
  if (plain) return word;
  std::string quoted = "'";
  for (const char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

std::string describe(const SlotHolder& holder) {
  if (holder.malformed) return "a malformed record (" + text::for_terminal(holder.problem) + ")";
  // As pidlock::describe() names a local holder, with the host it runs on. Its record says when
  // it took the slot: "for" is how long it has held it.
  std::string text = "pid " + std::to_string(holder.pid) + " on " +
                     text::for_terminal(holder.host.empty() ? "?" : holder.host);
  if (!holder.command.empty()) {
    text += ", running " + text::command_line_for_terminal({holder.command});
  }
  return text + ", for " + format_duration(holder.held_for);
}

std::string removal_hint(const SlotHolder& holder) {
  if (holder.lease != 0 || holder.key.empty()) return {};
  return "key " + text::for_terminal(holder.key) +
         ": it has no lease, so it never expires; remove it with etcdctl del " +
         text::for_terminal(for_shell(holder.key));
}

}  // namespace pidlock::fleet
