// The local lock's errors and the messages operators read: how holders, durations and failures
// are worded.
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "escape.hpp"
#include "pidlock/pidlock.hpp"

namespace pidlock {
namespace {

std::string why_unverified(Verification verification) {
  switch (verification) {
    case Verification::verified:
      return {};
    case Verification::other_user:
      return "not verified: another user's process";
    case Verification::hidden:
      return "not verified: /proc hides it from us (hidepid)";
    case Verification::pid_reused:
      return "not verified: that PID now belongs to a process started after the lock was taken";
    case Verification::outside_namespace:
      return "not verified: the record's PID, from a holder outside our PID namespace";
    case Verification::no_proc:
      return "not verified: the record's PID, as /proc is not available";
  }
  return {};
}

// Whether held_for dates the lock rather than the holder's process. It is dated by the record's
// mtime when the record names it and is not older than the process (process_info.cpp); otherwise
// held_for is the process's age, which is also all a lock taken in the process's first second
// can be told from. The second's margin keeps a fallback to the age that a second boundary split
// from ours from passing for a date.
bool lock_age_known(const Holder& holder) {
  if (!holder.record_agrees || holder.started_since_boot == std::chrono::nanoseconds(0)) {
    return false;
  }
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  const auto age = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) -
      holder.started_since_boot);
  return holder.held_for + std::chrono::seconds(1) < age;
}

// Some errnos mean the same to a caller whichever step returned them.
ErrorKind refined(ErrorKind kind, std::error_code code) {
  if (code.category() != std::system_category()) return kind;
  switch (code.value()) {
    case EACCES:
    case EPERM:
      return ErrorKind::permission_denied;
    case EIO:
    case ENOSPC:
    case EDQUOT:
      return ErrorKind::io;
    case ENOENT:
    case ENOTDIR:
      return kind == ErrorKind::cannot_open ? ErrorKind::not_found : kind;
    case EISDIR:
      return kind == ErrorKind::cannot_open ? ErrorKind::not_regular_file : kind;
    default:
      return kind;
  }
}

}  // namespace

std::string describe(const Holder& holder) {
  std::string text = "pid " + std::to_string(holder.pid);
  if (holder.is_caller) text += ", this process";
  if (!holder.runs.empty()) {
    text += (holder.command.empty() ? ", running "
                                    : ", " + text::for_terminal(holder.command) + " running ") +
            text::command_line_for_terminal(holder.runs);
  } else if (!holder.command.empty()) {
    text += ", " + text::for_terminal(holder.command);
  }
  if (holder.foreign_user) {
    const std::string who = !holder.user.empty() ? text::for_terminal(holder.user)
                            : holder.uid         ? "uid " + std::to_string(*holder.uid)
                                                 : std::string("unknown");
    text += ", user " + who + " (not the lock file's owner)";
  }
  if (holder.inspectable) {
    text += ", for " + format_duration(holder.held_for);
    if (!lock_age_known(holder)) text += " since it started";
  }
  if (!holder.verified()) text += "; " + why_unverified(holder.verification);
  return text;
}

std::string format_duration(std::chrono::seconds duration) {
  long long total = std::max<long long>(0, duration.count());
  const long long days = total / 86400;
  const long long hours = total / 3600 % 24;
  const long long minutes = total / 60 % 60;
  const long long secs = total % 60;
  auto two = [](long long n) {  // n < 60
    return std::string{static_cast<char>('0' + n / 10), static_cast<char>('0' + n % 10)};
  };
  if (days > 0) return std::to_string(days) + "d" + two(hours) + "h";
  if (hours > 0) return std::to_string(hours) + "h" + two(minutes) + "m";
  if (minutes > 0) return std::to_string(minutes) + "m" + two(secs) + "s";
  return std::to_string(secs) + "s";
}

Error Error::busy(std::filesystem::path path, std::string_view role, std::optional<Holder> holder,
                  std::optional<pid_t> recorded_pid, std::size_t readers) {
  Error e;
  e.kind_ = ErrorKind::busy;
  e.code_ = std::make_error_code(std::errc::resource_unavailable_try_again);
  e.operation_ = "flock";
  const std::string shown_path = text::for_terminal(path.string());
  const std::string noun = text::for_terminal(role);
  const bool kernel_names_it = holder && holder->verification != Verification::outside_namespace &&
                               holder->verification != Verification::no_proc;
  if (holder && holder->shared && !holder->is_caller && kernel_names_it) {
    const std::size_t count = std::max<std::size_t>(readers, 1);
    e.message_ =
        (count == 1 ? std::string("a reader holds") : std::to_string(count) + " readers hold") +
        " the lock (" + describe(*holder) +
        (count > 1 ? ", and " + std::to_string(count - 1) + " more" : std::string()) +
        ") — lock file: " + shown_path;
  } else if (holder && holder->is_caller) {
    // The seed's phrase, as for any holder: callers match it. describe() says "this process".
    e.message_ = "another " + noun + " is running (" + describe(*holder) +
                 "; it holds the lock through another of its descriptors: one it inherited, or "
                 "an earlier acquire) — lock file: " +
                 shown_path;
  } else if (kernel_names_it) {
    e.message_ =
        "another " + noun + " is running (" + describe(*holder) + ") — lock file: " + shown_path;
  } else if (holder) {
    e.message_ = "another " + noun + " holds the lock at " + shown_path + " (its holder is not " +
                 "visible to us: " +
                 (holder->verification == Verification::no_proc
                      ? std::string("/proc is not available")
                      : std::string("it runs outside our PID namespace")) +
                 "; the record says pid " + std::to_string(holder->pid) + ")";
  } else if (recorded_pid) {
    e.message_ = "another " + noun + " holds the lock at " + shown_path +
                 " (holder not visible to us; the record says pid " +
                 std::to_string(*recorded_pid) + ")";
  } else {
    e.message_ = "another " + noun + " holds the lock at " + shown_path +
                 " (holder not visible to us; no PID recorded)";
  }
  e.holder_ = std::move(holder);
  e.path_ = std::move(path);
  return e;
}

Error Error::busy_with_message(std::string message, std::optional<Holder> holder) {
  Error e;
  e.kind_ = ErrorKind::busy;
  e.code_ = std::make_error_code(std::errc::resource_unavailable_try_again);
  e.operation_ = "acquire";
  e.message_ = std::move(message);
  e.holder_ = std::move(holder);
  return e;
}

Error Error::failure(ErrorKind kind, std::string_view operation, std::filesystem::path path,
                     std::error_code code, std::string_view detail) {
  Error e;
  e.kind_ = refined(kind, code);
  e.code_ = code;
  e.operation_ = operation;
  e.message_ = "pidlock: " + std::string(operation) + " " + text::for_terminal(path.string()) +
               ": " + (detail.empty() ? code.message() : std::string(detail));
  e.path_ = std::move(path);
  return e;
}

std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::busy:
      return "busy";
    case ErrorKind::invalid_argument:
      return "invalid_argument";
    case ErrorKind::not_found:
      return "not_found";
    case ErrorKind::symlink:
      return "symlink";
    case ErrorKind::not_regular_file:
      return "not_regular_file";
    case ErrorKind::kernel_interface:
      return "kernel_interface";
    case ErrorKind::cannot_open:
      return "cannot_open";
    case ErrorKind::permission_denied:
      return "permission_denied";
    case ErrorKind::io:
      return "io";
    case ErrorKind::system:
      return "system";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "system";
}

std::string_view to_string(Record record) noexcept {
  switch (record) {
    case Record::absent:
      return "absent";
    case Record::agrees:
      return "agrees";
    case Record::stale:
      return "stale";
    case Record::unverified:
      return "unverified";
    case Record::previous:
      return "previous";
    case Record::unreadable:
      return "unreadable";
    case Record::not_a_lock_file:
      return "not_a_lock_file";
    case Record::not_readable:
      return "not_readable";
  }
  return "unreadable";
}

std::string_view to_string(RecordOutcome outcome) noexcept {
  switch (outcome) {
    case RecordOutcome::written:
      return "written";
    case RecordOutcome::reader:
      return "reader";
    case RecordOutcome::not_a_lock_file:
      return "not_a_lock_file";
    case RecordOutcome::no_write_access:
      return "no_write_access";
  }
  return "written";
}

std::string_view to_string(Verification verification) noexcept {
  switch (verification) {
    case Verification::verified:
      return "verified";
    case Verification::other_user:
      return "other_user";
    case Verification::hidden:
      return "hidepid";
    case Verification::pid_reused:
      return "pid_reused";
    case Verification::outside_namespace:
      return "pid_namespace";
    case Verification::no_proc:
      return "no_proc";
  }
  return "verified";
}

std::string_view to_string(Evidence evidence) noexcept {
  switch (evidence) {
    case Evidence::kernel:
      return "kernel";
    case Evidence::probe:
      return "probe";
    case Evidence::none:
      return "none";
  }
  return "none";
}

std::string_view version() noexcept { return PIDLOCK_VERSION; }

}  // namespace pidlock
