// Errors and the messages operators read.
#include <string>

#include "pidlock/pidlock.hpp"

namespace pidlock {
namespace {

std::string describe_holder(const Holder& holder) {
  std::string text = "pid " + std::to_string(holder.pid);
  if (holder.inspectable && !holder.command.empty()) {
    text += ", " + holder.command + ", for " + format_duration(holder.held_for);
  }
  return text;
}

}  // namespace

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
                  std::optional<pid_t> recorded_pid) {
  Error e;
  e.held_ = true;
  e.code_ = std::make_error_code(std::errc::resource_unavailable_try_again);
  e.operation_ = "flock";
  if (holder) {
    e.message_ = "another " + std::string(role) + " is running (" + describe_holder(*holder) +
                 ") — lock file: " + path.string();
  } else if (recorded_pid) {
    e.message_ = "another " + std::string(role) + " holds the lock at " + path.string() +
                 " (holder not visible to us; the record says pid " +
                 std::to_string(*recorded_pid) + ")";
  } else {
    e.message_ = "another " + std::string(role) + " holds the lock at " + path.string() +
                 " (recorded pid unreadable)";
  }
  e.holder_ = std::move(holder);
  e.path_ = std::move(path);
  return e;
}

Error Error::busy_with_message(std::string message, std::optional<Holder> holder) {
  Error e;
  e.held_ = true;
  e.code_ = std::make_error_code(std::errc::resource_unavailable_try_again);
  e.operation_ = "acquire";
  e.message_ = std::move(message);
  e.holder_ = std::move(holder);
  return e;
}

Error Error::failure(std::string_view operation, std::filesystem::path path, std::error_code code,
                     std::string_view detail) {
  Error e;
  e.code_ = code;
  e.operation_ = operation;
  e.message_ = "pidlock: " + std::string(operation) + " " + path.string() + ": " +
               (detail.empty() ? code.message() : std::string(detail));
  e.path_ = std::move(path);
  return e;
}

std::string_view to_string(Record record) noexcept {
  switch (record) {
    case Record::absent: return "absent";
    case Record::agrees: return "agrees";
    case Record::stale: return "stale";
    case Record::unverified: return "unverified";
    case Record::previous: return "previous";
    case Record::unreadable: return "unreadable";
  }
  return "unreadable";
}

std::string_view version() noexcept { return PIDLOCK_VERSION; }

}  // namespace pidlock
