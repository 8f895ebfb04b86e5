// pidlock status: who holds the lock, for people and for scripts.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "process.hpp"

namespace pidlock::cli {
namespace {

// Ordered, so that "path" comes first for the human who reads the JSON too.
using json = nlohmann::ordered_json;

json holder_json(const Holder& h) {
  return {
      {"pid", h.pid},
      {"verified", h.verified()},
      {"unverified_reason", h.verified() ? json(nullptr) : json(std::string(to_string(h.verification)))},
      {"inspectable", h.inspectable},
      {"command", h.inspectable || !h.command.empty() ? json(h.command) : json(nullptr)},
      {"cmdline", h.cmdline},
      {"runs", h.runs},
      {"this_process", h.is_caller},
      {"foreign_user", h.foreign_user},
      {"uid", h.uid ? json(*h.uid) : json(nullptr)},
      {"user", h.user.empty() ? json(nullptr) : json(h.user)},
      {"held_for_seconds", h.held_for.count()},
      {"started_since_boot_seconds",
       std::chrono::duration<double>(h.started_since_boot).count()},
      {"record_agrees", h.record_agrees},
  };
}

json status_json(const Status& s) {
  json holders = json::array();
  for (const auto& h : s.holders) holders.push_back(holder_json(h));
  json waiters = json::array();
  for (const auto& w : s.waiters) {
    waiters.push_back({{"pid", w.pid},
                       {"command", w.inspectable ? json(w.command) : json(nullptr)},
                       {"parent", w.inspectable ? json(w.parent) : json(nullptr)}});
  }
  return {
      {"path", s.path.string()},
      {"exists", s.exists},
      {"state", !s.known() ? "unknown" : s.held ? "held" : "free"},
      {"held", s.known() ? json(s.held) : json(nullptr)},
      {"evidence", std::string(to_string(s.evidence))},
      {"holder", s.holder ? holder_json(*s.holder) : json(nullptr)},
      {"holders", holders},
      {"recorded_pid", s.recorded_pid ? json(*s.recorded_pid) : json(nullptr)},
      {"record", std::string(to_string(s.record))},
      {"record_stale", s.record == Record::stale},
      {"waiters", waiters},
      {"filesystem", s.filesystem.empty() ? json(nullptr) : json(s.filesystem)},
      {"owner_uid", s.owner ? json(*s.owner) : json(nullptr)},
      {"mode", s.exists ? json(fmt::format("{:04o}", s.mode)) : json(nullptr)},
      {"warnings", s.warnings},
  };
}

std::string describe_record(const Status& s) {
  const std::string pid = s.recorded_pid ? fmt::format("pid {}", *s.recorded_pid) : "";
  switch (s.record) {
    case Record::absent: return "empty";
    case Record::agrees: return fmt::format("{} (agrees)", pid);
    case Record::stale: return fmt::format("{} (stale: the kernel says otherwise)", pid);
    case Record::unverified: return fmt::format("{} (cannot be checked)", pid);
    case Record::previous: return fmt::format("{} (the last holder)", pid);
    case Record::unreadable: return "unreadable";
  }
  return "unreadable";
}

void print_human(const Status& s) {
  const std::string path = s.path.string();
  if (!s.exists) {
    fmt::print("{}: free (no lock file)\n", path);
  } else if (!s.known()) {
    fmt::print("{}: cannot tell whether it is held\n", path);
  } else if (!s.held) {
    fmt::print("{}: free{}\n", path, s.evidence == Evidence::probe ? " (by a probe)" : "");
  } else if (s.holder) {
    fmt::print("{}: held by {}\n", path, describe(*s.holder));
    if (!s.holder->cmdline.empty()) fmt::print("  command line: {}\n", join(s.holder->cmdline));
    for (std::size_t i = 1; i < s.holders.size(); ++i) {
      fmt::print("  also held by: {}\n", describe(s.holders[i]));
    }
  } else {
    fmt::print("{}: held (the holder is not visible to us)\n", path);
  }
  if (s.exists) fmt::print("  record: {}\n", describe_record(s));
  for (const auto& w : s.waiters) {
    if (w.inspectable) {
      fmt::print("  waiting: pid {} ({}, parent {})\n", w.pid, w.command, w.parent);
    } else {
      fmt::print("  waiting: pid {}\n", w.pid);
    }
  }
  for (const auto& warning : s.warnings) fmt::print("  warning: {}\n", warning);
}

}  // namespace

int status(const StatusRequest& request) {
  auto found = inspect(request.file);
  if (!found) {
    fmt::print(stderr, "{}\n", found.error().message());
    return exit_code_for(found.error(), exit_code::busy, exit_code::no_input);
  }
  if (request.json) {
    fmt::print("{}\n", status_json(*found).dump());
  } else {
    print_human(*found);
  }
  if (!found->known()) return exit_code::unavailable;
  return found->held ? exit_code::busy : exit_code::ok;
}

}  // namespace pidlock::cli
