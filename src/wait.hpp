// Timed waits for a flock, without polling and without signal handlers.
//
// flock(2) has no timeout: LOCK_EX blocks until granted or a signal interrupts it, which is why
// util-linux `flock -w` arms SIGALRM. A library may not touch its caller's signal disposition, and
// polling with LOCK_NB hands the lock over a poll interval late. So a helper process, with no
// signal to its parent and reachable only through a pidfd, blocks in flock(LOCK_EX) on the *same
// open file description*. A flock belongs to the description, not to a process, so when the
// kernel grants it to the helper the caller holds it too; the helper says so by adding 1 to an
// eventfd, and the caller's ppoll() (on the eventfd and the helper's pidfd) returns at once. It
// does not wait for the helper's exit to tell it: tearing a process down takes longer than the
// grant took. The helper exits right after; the caller reaps it (killing it first unless the
// pidfd already shows it gone: a SIGSTOP or a tracer could hold it) before it returns. On
// timeout the caller kills the helper with pidfd_send_signal() and then asks
// flock(LOCK_EX | LOCK_NB) on its own: that settles the race where the helper won just as time
// ran out, and the case of a helper killed by someone else, which a new helper replaces.
//
// The helper shares the caller's memory and descriptor table (CLONE_VM | CLONE_FILES): starting
// it copies no page tables, and a caller's thread that writes on meanwhile takes no copy-on-write
// faults, however large the caller. It runs on a small stack of its own, with every signal that
// can be blocked blocked, and is a handful of system calls written in assembly: no libc, so
// nothing of the caller's thread (errno, TLS) is touched. It never outlives until_locked(): it
// is killed, reaped and its stack unmapped on every way out, an exception or a thread
// cancellation included.
//
// Where the helper cannot be cloned (an architecture it is not written for, a kernel without
// pidfds, a seccomp filter or an emulator refusing the clone), a forked waiter does the same in
// portable C++ from a copy of the caller (wait_forked.cpp); where no process may be started at
// all, the caller asks flock(LOCK_NB) itself with a bounded backoff. docs/guarantees.md, item 38,
// says which promises each keeps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <functional>
#include <optional>
#include <string_view>
#include <system_error>

namespace pidlock::wait {

// withdrawn: a wait behind another waiter ended because that one no longer waits (see Behind).
enum class Outcome { acquired, timed_out, withdrawn };

using Clock = std::chrono::steady_clock;
using Tick = std::function<void(std::chrono::nanoseconds waited)>;

// The helper names itself (its comm, /proc/<pid>/stat) so that other lockers can tell what waits
// in the kernel's list: a writer's (or a plain reader's) wait, whose parent is the real waiter,
// or a reader deferring to writers, which queues for the exclusive lock only to let them in first
// and is no writer itself.
inline constexpr std::string_view helper_name = "pidlock-wait";
inline constexpr std::string_view deferring_helper_name = "pidlock-defer";

// A wait that is worth going on only while another process waits ahead of it: a reader deferring
// to writers queues for the exclusive lock behind a writer, and must stop as soon as no writer
// waits any more (it gave up, or was granted the lock). No event says "a waiter left the queue",
// so `recheck` is asked the moment the process `waiter` (when known, through a pidfd) exits, and
// every `interval` besides (a waiter may stop waiting without exiting). A wait with a Behind
// always waits through a helper, named deferring_helper_name.
struct Behind {
  pid_t waiter = 0;  // the process queued ahead; 0 when the kernel cannot name it
  // The process to stay behind now (0: unnamed), or nothing to end the wait as withdrawn.
  std::function<std::optional<pid_t>()> recheck;
  std::chrono::nanoseconds interval{};  // positive
};

// A system call that failed: its name for the message, its errno, and, where errno alone would
// mislead, why it was made.
struct Failure {
  std::string_view operation;
  std::error_code code;
  std::string_view why;
};

// Waits until the description behind `fd` holds a flock of `operation` (LOCK_EX or LOCK_SH),
// or until `deadline` (Clock::time_point::max() waits forever), or, with `behind`, until no one
// waits ahead any more. Calls `tick` when the wait starts and every `tick_interval` (positive)
// after. Retries through EINTR; any other failure is returned. An exception thrown by `tick` or
// by `behind->recheck` leaves through here, after the helper is gone and with the lock not taken.
std::expected<Outcome, Failure> until_locked(int fd, int operation, Clock::time_point deadline,
                                             const Tick& tick,
                                             std::chrono::nanoseconds tick_interval,
                                             const Behind* behind = nullptr);

}  // namespace pidlock::wait
