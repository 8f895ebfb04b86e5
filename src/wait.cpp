// The timed wait's logic: which way to wait, the deadline, progress reports and deferring readers.
#include "wait.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "sys.hpp"
#include "wait_helper.hpp"
#include "wait_process.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace pidlock::wait {
namespace {

using namespace std::chrono;

constexpr start::Constants waiting_process{~std::uint64_t{0}, 1, "pidlock-wait"};
constexpr start::Constants deferring_process{~std::uint64_t{0}, 1, "pidlock-defer"};
static_assert(std::string_view(waiting_process.name) == helper_name);
static_assert(std::string_view(deferring_process.name) == deferring_helper_name);

Failure failure_of(std::string_view operation, int error, std::string_view why = {}) {
  return {operation, std::error_code(error, std::system_category()), why};
}

// The progress callback's schedule: at the start, then every interval, on the interval's grid.
class Progress {
 public:
  Progress(const Tick& tick, nanoseconds interval)
      : tick_(tick),
        interval_(interval),
        start_(Clock::now()),
        next_(sys::saturating_add(start_, interval)) {}

  // When the next report is due; never, without a callback.
  Clock::time_point next() const noexcept { return tick_ ? next_ : Clock::time_point::max(); }

  void report_start() const {
    if (tick_) tick_(nanoseconds(0));
  }

  void report_if_due() {
    if (!tick_ || Clock::now() < next_) return;
    tick_(Clock::now() - start_);
    next_ = sys::saturating_add(next_, interval_);
    // Reports missed while the callback ran long are skipped, not made up in a burst.
    if (const auto now = Clock::now(); next_ <= now) next_ = sys::saturating_add(now, interval_);
  }

 private:
  const Tick& tick_;
  nanoseconds interval_;
  Clock::time_point start_;
  Clock::time_point next_;
};

// ppoll() is where a cancelled waiting thread is unwound (glibc unwinds it with
// abi::__forced_unwind, the only thing that leaves a C function this way). AddressSanitizer hears
// of a C++ throw, and then unpoisons the stack that the throw will unwind; of this unwinding it
// hears nothing, so the redzones of the frames unwound would stay poisoned and fail the
// destructors' frames placed there next. Here, before any frame of ours is unwound, is the one
// place where telling it is safe.
template <std::size_t N>
int ppoll_unwinding_cleanly(pollfd (&watched)[N], const timespec* timeout) {
  try {
    return ::ppoll(watched, N, timeout, nullptr);
  } catch (...) {
#if defined(__SANITIZE_ADDRESS__)
    __asan_handle_no_return();
#endif
    throw;
  }
}

// The process a Behind wait queues behind: watched through a pidfd while it lives, and asked
// about again when it exits and every interval.
class Ahead {
 public:
  explicit Ahead(const Behind* behind)
      : behind_(behind),
        next_(behind ? sys::saturating_add(Clock::now(), behind->interval)
                     : Clock::time_point::max()) {
    if (behind_) follow(behind_->waiter);
  }

  int pidfd() const noexcept { return pidfd_.get(); }
  Clock::time_point next() const noexcept { return next_; }

  // Whether a waiter is still ahead: asked when the one watched has exited (`exited`), or when
  // the interval is up.
  bool still_behind(bool exited) {
    if (!behind_ || (!exited && Clock::now() < next_)) return true;
    const auto ahead = behind_->recheck();
    next_ = sys::saturating_add(Clock::now(), behind_->interval);
    if (!ahead) return false;
    if (*ahead != watched_) {
      follow(*ahead);
    } else if (exited) {
      pidfd_.reset();  // listed still, but gone: its readable pidfd must not make this a spin
    }
    return true;
  }

 private:
  void follow(pid_t pid) {
    watched_ = pid;
    // Without a pidfd (a PID the kernel could not name, or already gone) the interval alone tells.
    pidfd_.reset(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
  }

  const Behind* behind_;
  Clock::time_point next_;
  pid_t watched_ = 0;
  sys::UniqueFd pidfd_;
};

enum class Ended { granted, granted_and_exited, exited, deadline, withdrawn };

// Blocks until the waiting process reports the lock granted, or exits, or `deadline` passes, or
// nobody waits ahead any more, reporting progress on time. The grant comes first: the process's
// exit reaches its pidfd only once the kernel has torn it down, and on a busy machine that is
// tens of microseconds later.
std::expected<Ended, Failure> watch(const process::Waiter& waiter, int granted, Progress& progress,
                                    Ahead& ahead, Clock::time_point deadline) {
  for (;;) {
    // A descriptor of -1 (nobody ahead to watch) is left alone by ppoll.
    pollfd watched[3] = {
        {granted, POLLIN, 0}, {waiter.exit_fd(), POLLIN, 0}, {ahead.pidfd(), POLLIN, 0}};
    const auto now = Clock::now();
    if (now >= deadline) return Ended::deadline;
    const auto wake = std::min({deadline, progress.next(), ahead.next()});
    const bool forever = wake == Clock::time_point::max();
    const timespec timeout = sys::to_timespec(wake - now);
    const int ready = ppoll_unwinding_cleanly(watched, forever ? nullptr : &timeout);
    if (ready < 0 && errno != EINTR) return std::unexpected(failure_of("ppoll", errno));
    const bool granted_now = ready > 0 && (watched[0].revents & POLLIN) != 0;
    // POLLIN from a pidfd, POLLHUP from the exit pipe.
    const bool waiter_exited = ready > 0 && watched[1].revents != 0;
    if (granted_now) return waiter_exited ? Ended::granted_and_exited : Ended::granted;
    if (waiter_exited) return Ended::exited;
    const bool ahead_exited = ready > 0 && (watched[2].revents & POLLIN) != 0;
    if (!ahead.still_behind(ahead_exited)) return Ended::withdrawn;
    progress.report_if_due();
  }
}

// Nothing to time and nothing to report: blocking in this thread is the cheapest wait there is,
// and needs no helper. A signal's handler interrupting flock() is not a reason to give up.
std::expected<Outcome, Failure> block_in_place(int fd, int operation) {
  while (::flock(fd, operation) != 0) {
    if (errno != EINTR) return std::unexpected(failure_of("flock", errno));
  }
  return Outcome::acquired;
}

// Where no process may be started to wait in flock (every clone refused): asks for the lock
// without blocking, again and again, pausing first_pause after the first try and twice as long
// after each next one, up to longest_pause. The lock is taken at most longest_pause after it
// frees, at a CPU cost of a few microseconds a try (README, Performance).
constexpr nanoseconds first_pause = microseconds(500);
constexpr nanoseconds longest_pause = milliseconds(10);

// Some other process may take the lock in a pause: this waiter is in no queue of the kernel's.
std::expected<Outcome, Failure> poll_until_locked(int fd, int operation, Progress& progress,
                                                  Ahead& ahead, Clock::time_point deadline) {
  nanoseconds pause = first_pause;
  for (;;) {
    if (::flock(fd, operation | LOCK_NB) == 0) return Outcome::acquired;
    if (errno != EWOULDBLOCK && errno != EINTR) return std::unexpected(failure_of("flock", errno));
    const auto now = Clock::now();
    if (now >= deadline) return Outcome::timed_out;
    const auto wake = std::min({deadline, progress.next(), ahead.next(), now + pause});
    const timespec timeout = sys::to_timespec(wake - now);
    pollfd watched[1] = {{ahead.pidfd(), POLLIN, 0}};
    const int ready = ppoll_unwinding_cleanly(watched, &timeout);
    if (ready < 0 && errno != EINTR) return std::unexpected(failure_of("ppoll", errno));
    const bool ahead_exited = ready > 0 && (watched[0].revents & POLLIN) != 0;
    if (!ahead.still_behind(ahead_exited)) {
      if (::flock(fd, operation | LOCK_NB) == 0) return Outcome::acquired;
      if (errno != EWOULDBLOCK && errno != EINTR) {
        return std::unexpected(failure_of("flock", errno));
      }
      return Outcome::withdrawn;
    }
    progress.report_if_due();
    pause = std::min(pause * 2, longest_pause);
  }
}

}  // namespace

std::expected<Outcome, Failure> until_locked(int fd, int operation, Clock::time_point deadline,
                                             const Tick& tick, nanoseconds tick_interval,
                                             const Behind* behind) {
  if (deadline == Clock::time_point::max() && !tick && behind == nullptr) {
    return block_in_place(fd, operation);
  }

  Progress progress(tick, tick_interval);
  progress.report_start();
  Ahead ahead(behind);
  if (process::none_can_start()) return poll_until_locked(fd, operation, progress, ahead, deadline);
  // One per wait: written once, by the process that is granted the lock, after which the wait
  // ends.
  const sys::UniqueFd granted(::eventfd(0, EFD_CLOEXEC));
  if (!granted) {
    return std::unexpected(
        failure_of("eventfd", errno, "the wait's helper reports the grant through it"));
  }
  const start::Constants& kind = behind != nullptr ? deferring_process : waiting_process;
  for (;;) {
    process::Waiter waiter;
    auto started = waiter.start(fd, operation, granted.get(), kind);
    if (!started) return std::unexpected(started.error());
    if (!*started) return poll_until_locked(fd, operation, progress, ahead, deadline);
    auto ended = watch(waiter, granted.get(), progress, ahead, deadline);
    if (!ended) return std::unexpected(ended.error());
    // Granted to the waiter is granted to this description: nothing to ask the kernel again.
    if (*ended == Ended::granted_and_exited) {  // usual: it exits right after saying so
      waiter.reap_exited();
      return Outcome::acquired;
    }
    if (*ended == Ended::granted) {
      waiter.stop();
      return Outcome::acquired;
    }
    // Out of time, withdrawn, or the waiter died: it may have been granted the lock just before.
    const int ending = waiter.stop();
    if (::flock(fd, operation | LOCK_NB) == 0) return Outcome::acquired;
    if (errno != EWOULDBLOCK && errno != EINTR) return std::unexpected(failure_of("flock", errno));
    if (*ended == Ended::withdrawn) return Outcome::withdrawn;
    if (Clock::now() >= deadline) return Outcome::timed_out;
    // A blocking flock that fails where a non-blocking one says "busy" would make this a spin.
    if (ending > 0) return std::unexpected(failure_of("flock", ending));
    // The waiter died without the lock (somebody killed it, or it could not run here: then the
    // next is of another kind): wait on with a new one.
  }
}

}  // namespace pidlock::wait
