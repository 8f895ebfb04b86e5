// pidlock status: who holds the lock, for people and for scripts.
#include <fmt/core.h>

#include <algorithm>

#include "commands.hpp"
#include "escape.hpp"
#include "json_text.hpp"
#include "process.hpp"

namespace pidlock::cli {
namespace {

json holder_json(const Holder& h) {
  json object;
  object["pid"] = h.pid;
  object["verified"] = h.verified();
  object["unverified_reason"] =
      h.verified() ? json(nullptr) : json(std::string(to_string(h.verification)));
  object["mode"] = h.shared ? "shared" : "exclusive";
  object["inspectable"] = h.inspectable;
  if (h.inspectable || !h.command.empty()) {
    put_text(object, "command", h.command);
  } else {
    object["command"] = nullptr;
  }
  put_texts(object, "cmdline", h.cmdline);
  put_texts(object, "runs", h.runs);
  object["this_process"] = h.is_caller;
  object["foreign_user"] = h.foreign_user;
  object["uid"] = h.uid ? json(*h.uid) : json(nullptr);
  if (h.user.empty()) {
    object["user"] = nullptr;
  } else {
    put_text(object, "user", h.user);  // passwd names are bytes too
  }
  object["held_for_seconds"] = h.held_for.count();
  object["started_since_boot_seconds"] =
      std::chrono::duration<double>(h.started_since_boot).count();
  object["record_agrees"] = h.record_agrees;
  return object;
}

json waiter_json(const Waiter& w) {
  json object;
  object["pid"] = w.pid;
  object["mode"] = w.shared ? "shared" : "exclusive";
  if (w.inspectable) {
    put_text(object, "command", w.command);
    object["parent"] = w.parent;
  } else {
    object["command"] = nullptr;
    object["parent"] = nullptr;
  }
  return object;
}

json status_json(const Status& s) {
  json holders = json::array();
  for (const auto& h : s.holders) holders.push_back(holder_json(h));
  json waiters = json::array();
  for (const auto& w : s.waiters) waiters.push_back(waiter_json(w));
  json object;
  put_text(object, "path", s.path.native());
  object["exists"] = s.exists;
  object["state"] = !s.known() ? "unknown" : s.held ? "held" : "free";
  object["held"] = s.known() ? json(s.held) : json(nullptr);
  object["evidence"] = std::string(to_string(s.evidence));
  object["mode"] = !s.held ? json(nullptr) : json(s.shared ? "shared" : "exclusive");
  object["readers"] = s.readers;
  object["holder"] = s.holder ? holder_json(*s.holder) : json(nullptr);
  object["holders"] = std::move(holders);
  object["recorded_pid"] = s.recorded_pid ? json(*s.recorded_pid) : json(nullptr);
  object["record"] = std::string(to_string(s.record));
  object["record_stale"] = s.record == Record::stale;
  object["waiters"] = std::move(waiters);
  if (s.filesystem.empty()) {
    object["filesystem"] = nullptr;
  } else {
    put_text(object, "filesystem", s.filesystem);
  }
  object["owner_uid"] = s.owner ? json(*s.owner) : json(nullptr);
  object["file_mode"] = s.exists ? json(fmt::format("{:04o}", s.mode)) : json(nullptr);
  put_texts(object, "warnings", s.warnings);  // they quote the path
  return object;
}

// Every word the holder chose, escaped on its own: a newline in an argument must not start a
// line of our output, nor an ESC reach the terminal.
std::string shown_command_line(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& word : argv) text += (text.empty() ? "" : " ") + text::for_terminal(word);
  return text;
}

std::string describe_record(const Status& s) {
  const std::string pid = s.recorded_pid ? fmt::format("pid {}", *s.recorded_pid) : "";
  switch (s.record) {
    case Record::absent:
      return "empty";
    case Record::agrees:
      return fmt::format("{} (agrees)", pid);
    case Record::stale:
      return fmt::format("{} (stale: the kernel says otherwise)", pid);
    case Record::unverified:
      return fmt::format("{} (cannot be checked)", pid);
    case Record::previous:
      return fmt::format("{} (the last holder)", pid);
    case Record::unreadable:
      return "unreadable (not a PID)";
    case Record::not_a_lock_file:
      return "none: not a lock file (it holds other data, or is executable), locked without "
             "writing to it";
    case Record::not_readable:
      return "not readable by this user";
  }
  return "unreadable (not a PID)";
}

// Everything shown that another process or the filesystem chose goes through text::for_terminal.
void print_human(const Status& s) {
  const std::string path = text::for_terminal(s.path.native());
  if (!s.exists) {
    say(stdout, "{}: free (no lock file)\n", path);
  } else if (!s.known()) {
    say(stdout, "{}: cannot tell whether it is held\n", path);
  } else if (!s.held) {
    say(stdout, "{}: free{}\n", path, s.evidence == Evidence::probe ? " (by a probe)" : "");
  } else if (s.holder && s.shared) {
    say(stdout, "{}: held shared by {} reader{}: {}\n", path, std::max<std::size_t>(s.readers, 1),
        s.readers > 1 ? "s" : "", describe(*s.holder));
  } else if (s.holder) {
    say(stdout, "{}: held by {}\n", path, describe(*s.holder));
  }
  if (s.held && s.holder) {
    if (!s.holder->cmdline.empty()) {
      say(stdout, "  command line: {}\n", shown_command_line(s.holder->cmdline));
    }
    for (std::size_t i = 1; i < s.holders.size(); ++i) {
      say(stdout, "  also held by: {}\n", describe(s.holders[i]));
    }
  } else if (s.held) {
    say(stdout, "{}: held (the holder is not visible to us)\n", path);
  }
  if (s.exists) say(stdout, "  record: {}\n", describe_record(s));
  for (const auto& w : s.waiters) {
    const char* mode = w.shared ? "shared" : "exclusive";
    if (w.inspectable) {
      say(stdout, "  waiting ({}): pid {} ({}, parent {})\n", mode, w.pid,
          text::for_terminal(w.command), w.parent);
    } else {
      say(stdout, "  waiting ({}): pid {}\n", mode, w.pid);
    }
  }
  // The library words warnings for humans and escapes what they quote.
  for (const auto& warning : s.warnings) say(stdout, "  warning: {}\n", warning);
}

}  // namespace

int status(const StatusRequest& request) {
  auto found = inspect(request.file);
  if (!found) {
    // The library escapes the path it quotes.
    say(stderr, "{}\n", found.error().message());
    return exit_code_for(found.error(), FileUse::read);
  }
  if (request.json) {
    say(stdout, "{}\n", dump_json(status_json(*found)));
  } else {
    print_human(*found);
  }
  if (!found->known()) return exit_code::unavailable;
  return found->held ? exit_code::busy : exit_code::ok;
}

}  // namespace pidlock::cli
