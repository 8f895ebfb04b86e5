// Timed waits for a flock, without polling and without signal handlers.
//
// flock(2) has no timeout: LOCK_EX blocks until granted or a signal interrupts it, which is why
// util-linux `flock -w` arms SIGALRM. A library may not touch its caller's signal disposition, and
// polling with LOCK_NB hands the lock over a poll interval late. So a helper child, cloned with
// no signal to its parent and reachable only through a pidfd, blocks in flock(LOCK_EX) on the
// *same open file description*. A flock belongs to the description, not to a process, so when
// the kernel grants it to the helper the caller holds it too; the helper then exits, its pidfd
// becomes readable, and the caller's ppoll() returns at once. On timeout the caller kills the
// helper with pidfd_send_signal(). Either way the caller then asks flock(LOCK_EX | LOCK_NB)
// on its own: that settles the race where the helper won just as time ran out.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <system_error>

namespace pidlock::wait {

enum class Outcome { acquired, timed_out };

using Clock = std::chrono::steady_clock;
using Tick = std::function<void(std::chrono::nanoseconds waited)>;

// Waits until the description behind `fd` holds an exclusive flock, or until `deadline`
// (Clock::time_point::max() waits forever). Calls `tick` when the wait starts and every
// `tick_interval` after. Retries through EINTR; any other failure is returned.
std::expected<Outcome, std::error_code> until_locked(int fd, Clock::time_point deadline,
                                                     const Tick& tick,
                                                     std::chrono::nanoseconds tick_interval);

}  // namespace pidlock::wait
