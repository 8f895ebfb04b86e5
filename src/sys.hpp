// Small, exception-free wrappers around the syscalls the library repeats.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <ctime>
#include <expected>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace pidlock::sys {

inline std::error_code errno_code(int value) noexcept { return {value, std::system_category()}; }
inline std::error_code last_error() noexcept { return errno_code(errno); }

// `time + offset` on the steady clock, clamped to the clock's range instead of wrapping: a wait of
// nanoseconds::max() - 1 is "forever", not an overflow into the past.
inline std::chrono::steady_clock::time_point saturating_add(
    std::chrono::steady_clock::time_point time, std::chrono::nanoseconds offset) noexcept {
  using Clock = std::chrono::steady_clock;
  static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>);
  Clock::rep sum = 0;
  if (__builtin_add_overflow(time.time_since_epoch().count(), offset.count(), &sum)) {
    return offset.count() > 0 ? Clock::time_point::max() : Clock::time_point::min();
  }
  return Clock::time_point(Clock::duration(sum));
}

// A timeout for ppoll() and friends: `left`, or zero if it is negative.
inline timespec to_timespec(std::chrono::nanoseconds left) noexcept {
  left = std::max(left, std::chrono::nanoseconds(0));
  const auto whole = std::chrono::duration_cast<std::chrono::seconds>(left);
  return {static_cast<time_t>(whole.count()), static_cast<long>((left - whole).count())};
}

// fstat(2). glibc 2.33+ implements fstat() as newfstatat(fd, "", AT_EMPTY_PATH), which copies
// and walks an empty path name first; on x86-64 the kernel's own fstat takes the same struct and
// skips that, and the lock's cycle is only a handful of system calls.
int fstat_descriptor(int fd, struct stat* st) noexcept;

// Owns a file descriptor; closes it exactly once.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    // close() is not retried on EINTR: on Linux the descriptor is gone either way.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Reads at most `limit` bytes of a file (a /proc entry or a lock record) relative to `dirfd`.
// /proc files are generated on read, a buffer at a time, so they are read in a loop until EOF;
// a file that changes meanwhile (/proc/locks) comes from several moments (see holder.cpp).
std::expected<std::string, std::error_code> read_file_at(int dirfd, const char* name,
                                                         std::size_t limit);

// Reads of a /proc file about one process or descriptor (stat, status, cmdline, fdinfo, a thread's
// children) stop here: each is a few lines, or an argv, which is then cut.
constexpr std::size_t small_proc_file_limit = std::size_t{64} * 1024;

// A PID or descriptor as NUL-terminated decimal text, for the /proc paths made of them.
std::array<char, 32> decimal(pid_t pid);

// /proc/<pid>, opened as a directory. Reads through it are of that very process: once it is gone
// they fail, and never reach a later process that took its PID.
UniqueFd open_pid_dir(pid_t pid);

// The name of `uid` in the passwd database, or empty when it has none.
std::string user_name(uid_t uid);

// Reads at most `limit` bytes from an already open descriptor, from offset 0.
std::expected<std::string, std::error_code> read_fd(int fd, std::size_t limit);

// A /proc file that the kernel generates a buffer per read() and may change in between (a
// seq_file such as /proc/locks): the text, and how it came. Every read asks for more than the
// kernel's buffer, so that each one returns as much as the kernel wrote in one go.
struct ProcText {
  std::string text;
  std::size_t reads = 0;       // read() calls that returned data
  std::size_t first_read = 0;  // bytes the first one returned
};
std::expected<ProcText, std::error_code> read_proc_file(int dirfd, const char* name,
                                                        std::size_t limit);

}  // namespace pidlock::sys
