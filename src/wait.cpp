#include "wait.hpp"

#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "sys.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace pidlock::wait {
namespace {

using namespace std::chrono;

struct Helper {
  pid_t pid = -1;
  sys::UniqueFd pidfd;
};

// The helper is a copy of a process that may have other threads, so it makes raw system calls
// only: no allocation, no locks, no libc state.
[[noreturn]] void helper_main(int fd, pid_t parent) {
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::syscall(SYS_getppid) != parent) ::syscall(SYS_exit_group, 2);
  long result = 0;
  do {
    result = ::syscall(SYS_flock, fd, LOCK_EX);
  } while (result != 0 && errno == EINTR);
  ::syscall(SYS_exit_group, result == 0 ? 0 : 1);
  __builtin_unreachable();
}

long clone_helper(int* pidfd) {
  // exit_signal 0: no SIGCHLD reaches the caller, and waitpid(-1) in the caller cannot reap it.
  // CLONE_FILES: the helper shares the caller's descriptor table instead of holding copies of
  // every descriptor, so a pipe or socket another thread closes during the wait really closes.
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_FILES;
  args.pidfd = reinterpret_cast<std::uintptr_t>(pidfd);
  args.exit_signal = 0;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0 && errno == ENOSYS) {  // some seccomp profiles refuse clone3 only
    pid = ::syscall(SYS_clone, CLONE_PIDFD | CLONE_FILES, nullptr, pidfd, nullptr, nullptr);
  }
  return pid;
}

std::expected<Helper, std::error_code> spawn_helper(int fd) {
  const pid_t parent = ::getpid();
  // The helper starts with every signal blocked, so that none of the caller's handlers can
  // ever run in the copy. Only this thread's mask changes, and only for the clone.
  sigset_t all{};
  sigset_t previous{};
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  int pidfd = -1;
  const long pid = clone_helper(&pidfd);
  if (pid == 0) helper_main(fd, parent);
  const int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) return std::unexpected(std::error_code(clone_errno, std::system_category()));
  return Helper{static_cast<pid_t>(pid), sys::UniqueFd(pidfd)};
}

void kill_helper(const Helper& helper) {
  ::syscall(SYS_pidfd_send_signal, helper.pidfd.get(), SIGKILL, nullptr, 0);
}

// True when the helper's own flock failed (it exits 1), as opposed to being granted or killed.
bool reap_helper(const Helper& helper) {
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(helper.pidfd.get()), &info,
                  WEXITED | __WALL) != 0) {
    if (errno != EINTR) return false;
  }
  return info.si_code == CLD_EXITED && info.si_status != 0;
}

timespec to_timespec(nanoseconds d) {
  d = std::max(d, nanoseconds(0));
  const auto whole = duration_cast<seconds>(d);
  return {static_cast<time_t>(whole.count()), static_cast<long>((d - whole).count())};
}

// Blocks until the helper exits or `deadline` passes; true when it exited.
std::expected<bool, std::error_code> watch_helper(const Helper& helper,
                                                  Clock::time_point start,
                                                  Clock::time_point deadline, const Tick& tick,
                                                  nanoseconds tick_interval,
                                                  Clock::time_point& next_tick) {
  pollfd watched{helper.pidfd.get(), POLLIN, 0};
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const auto wake = tick ? std::min(deadline, next_tick) : deadline;
    const bool forever = wake == Clock::time_point::max();
    const timespec timeout = to_timespec(wake - now);
    const int ready = ::ppoll(&watched, 1, forever ? nullptr : &timeout, nullptr);
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return std::unexpected(sys::last_error());
    if (tick && Clock::now() >= next_tick) {
      tick(Clock::now() - start);
      next_tick += tick_interval;
    }
  }
}

std::expected<Outcome, std::error_code> block_in_place(int fd) {
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) return std::unexpected(sys::last_error());
  }
  return Outcome::acquired;
}

}  // namespace

std::expected<Outcome, std::error_code> until_locked(int fd, Clock::time_point deadline,
                                                     const Tick& tick,
                                                     nanoseconds tick_interval) {
  // Nothing to time and nothing to report: blocking in this thread is the cheapest wait there is.
  if (deadline == Clock::time_point::max() && !tick) return block_in_place(fd);

  const auto start = Clock::now();
  auto next_tick = start + tick_interval;
  if (tick) tick(nanoseconds(0));
  for (;;) {
    auto helper = spawn_helper(fd);
    if (!helper) return std::unexpected(helper.error());
    auto exited = watch_helper(*helper, start, deadline, tick, tick_interval, next_tick);
    if (!exited || !*exited) kill_helper(*helper);
    const bool helper_failed = reap_helper(*helper);
    if (!exited) return std::unexpected(exited.error());
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return Outcome::acquired;
    if (errno != EWOULDBLOCK && errno != EINTR) return std::unexpected(sys::last_error());
    if (Clock::now() >= deadline) return Outcome::timed_out;
    // A blocking flock that fails where a non-blocking one says "busy" would make this a spin.
    if (helper_failed) return std::unexpected(std::make_error_code(std::errc::no_lock_available));
    // The helper died without the lock (somebody killed it): wait on with a new one.
  }
}

}  // namespace pidlock::wait
