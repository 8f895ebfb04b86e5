// What /proc says of a lock's holder or waiter: command line, user, start time, what pidlock runs.
#include "process_info.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "proc_parse.hpp"
#include "sys.hpp"

namespace pidlock::process_info {
namespace {

using namespace std::chrono;
using holder::Hints;

nanoseconds clock_now(clockid_t clock) {
  timespec now{};
  ::clock_gettime(clock, &now);
  return seconds(now.tv_sec) + nanoseconds(now.tv_nsec);
}

nanoseconds to_nanoseconds(const timespec& t) { return seconds(t.tv_sec) + nanoseconds(t.tv_nsec); }

// The command a `pidlock run` holder runs: its first child's argv.
std::vector<std::string> command_run_by(int pid_dir, pid_t pid) {
  const std::string children_path = std::string("task/") + sys::decimal(pid).data() + "/children";
  auto children = sys::read_file_at(pid_dir, children_path.c_str(), sys::small_proc_file_limit);
  if (!children) return {};
  pid_t child = 0;
  const char* begin = children->data();
  const auto [end, ec] = std::from_chars(begin, begin + children->size(), child);
  if (ec != std::errc{} || end == begin) return {};
  const auto child_dir = sys::open_pid_dir(child);
  if (!child_dir) return {};
  auto cmdline = sys::read_file_at(child_dir.get(), "cmdline", sys::small_proc_file_limit);
  return cmdline ? proc::parse_cmdline(*cmdline) : std::vector<std::string>{};
}

bool is_pidlock(const std::string& command) {
  return command == "pidlock" || command == "pidlock-fleet";
}

// Fills in what /proc says of the process. Each read goes through the pid directory opened
// before confirming the holder, so a PID recycled meanwhile reads as gone instead of as
// somebody else. Returns its PIDs in nested namespaces, innermost last.
std::vector<pid_t> describe(int pid_dir, Holder& holder) {
  std::vector<pid_t> namespace_pids;
  if (auto stat = sys::read_file_at(pid_dir, "stat", sys::small_proc_file_limit)) {
    if (auto fields = proc::parse_stat(*stat)) {
      holder.inspectable = true;
      holder.command = fields->command;
      const auto ticks_per_second = ::sysconf(_SC_CLK_TCK);
      if (ticks_per_second > 0) {
        holder.started_since_boot = duration_cast<nanoseconds>(duration<double>(
            static_cast<double>(fields->start_ticks) / static_cast<double>(ticks_per_second)));
      }
    }
  }
  if (auto cmdline = sys::read_file_at(pid_dir, "cmdline", sys::small_proc_file_limit)) {
    holder.cmdline = proc::parse_cmdline(*cmdline);
  }
  if (auto status = sys::read_file_at(pid_dir, "status", sys::small_proc_file_limit)) {
    auto fields = proc::parse_status(*status);
    holder.uid = fields.euid;
    if (holder.uid) holder.user = sys::user_name(*holder.uid);
    namespace_pids = std::move(fields.namespace_pids);
  }
  if (holder.verified() && is_pidlock(holder.command))
    holder.runs = command_run_by(pid_dir, holder.pid);
  return namespace_pids;
}

// Whether the process started after the record was written: then it cannot be the one that
// wrote it, and a record naming its PID names an earlier process of the same number. Start
// times have clock-tick resolution, and the clocks are compared across a conversion.
bool started_after_record(const Holder& holder, const Hints& hints) {
  if (!hints.record_mtime || holder.started_since_boot == nanoseconds(0)) return false;
  const nanoseconds boot_in_realtime = clock_now(CLOCK_REALTIME) - clock_now(CLOCK_BOOTTIME);
  const nanoseconds started = boot_in_realtime + holder.started_since_boot;
  constexpr auto tolerance = milliseconds(20);
  return started > to_nanoseconds(*hints.record_mtime) + tolerance;
}

seconds held_for(const Holder& holder, const Hints& hints) {
  if (!holder.inspectable) return seconds(0);
  const nanoseconds age =
      std::max(nanoseconds(0), clock_now(CLOCK_BOOTTIME) - holder.started_since_boot);
  if (holder.record_agrees && hints.record_mtime) {
    // The record is written right after locking, so its mtime dates the lock, unless it is older
    // than the process (a record that happens to name a recycled PID).
    const nanoseconds since_write = clock_now(CLOCK_REALTIME) - to_nanoseconds(*hints.record_mtime);
    if (since_write >= nanoseconds(0) && since_write <= age) {
      return duration_cast<seconds>(since_write);
    }
  }
  return duration_cast<seconds>(age);
}

}  // namespace

Holder make_holder(pid_t pid, int pid_dir, Verification verification, bool shared,
                   const Hints& hints) {
  Holder holder;
  holder.pid = pid;
  holder.shared = shared;
  holder.verification = verification;
  holder.is_caller = pid == ::getpid();
  const auto namespace_pids = describe(pid_dir, holder);
  const bool record_names_it =
      hints.recorded_pid &&
      (*hints.recorded_pid == pid ||
       (namespace_pids.size() > 1 && *hints.recorded_pid == namespace_pids.back()));
  if (!holder.verified() && record_names_it && started_after_record(holder, hints)) {
    // The kernel's list keeps the PID of the process that took the lock; that process is gone
    // and its number now belongs to a newer one, which must not be shown as the holder.
    Holder reused;
    reused.pid = pid;
    reused.shared = shared;
    reused.verification = Verification::pid_reused;
    return reused;
  }
  holder.record_agrees = holder.verified() && !holder.shared && record_names_it;
  holder.foreign_user = holder.uid && hints.file_owner && *holder.uid != *hints.file_owner;
  holder.held_for = held_for(holder, hints);
  return holder;
}

Holder unseen_holder(pid_t pid, Verification why, bool shared) {
  Holder holder;
  holder.pid = pid;
  holder.shared = shared;
  holder.verification = why;
  return holder;
}

Waiter make_waiter(pid_t pid, bool shared) {
  Waiter waiter;
  waiter.pid = pid;
  waiter.shared = shared;
  const auto pid_dir = sys::open_pid_dir(pid);
  if (pid_dir) {
    if (auto stat = sys::read_file_at(pid_dir.get(), "stat", sys::small_proc_file_limit)) {
      if (auto fields = proc::parse_stat(*stat)) {
        waiter.inspectable = true;
        waiter.command = fields->command;
        waiter.parent = fields->parent;
      }
    }
  }
  return waiter;
}

}  // namespace pidlock::process_info
