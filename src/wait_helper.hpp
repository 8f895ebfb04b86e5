// How a timed wait's process is started: the helper in assembly for this architecture
// (wait_helper_<arch>.cpp), or the forked waiter in portable C++ (wait_forked.cpp).
#pragma once

#include <linux/sched.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pidlock::wait::start {

// The process exits with 0 when granted the lock and with flock's errno when that fails. When its
// parent is already gone, nobody reads the status.
inline constexpr int orphaned = 255;

// What the process reads from memory, in one place so that one register points at all of it:
// rt_sigprocmask's whole set (glibc's sigfillset() leaves out the two signals it keeps for
// itself, SIGCANCEL and SIGSETXID, whose handlers would run on the calling thread's TLS), the
// eventfd increment that tells the caller it holds the lock, and the name it gives itself.
struct Constants {
  std::uint64_t every_signal;
  std::uint64_t granted;
  char name[16];  // TASK_COMM_LEN, its NUL included
};
static_assert(offsetof(Constants, granted) == 8, "the helper's assembly reads it at +8");
static_assert(offsetof(Constants, name) == 16, "the helper's assembly reads it at +16");

// What the process is told: the description to lock and how, who its parent is, and the eventfd
// it adds 1 to once it holds the lock.
struct Request {
  int fd;
  int operation;  // LOCK_EX or LOCK_SH
  pid_t parent;
  int granted;
  const Constants* constants;
};

// Memory and descriptors shared, and exit_signal (the low byte) 0: the caller gets no SIGCHLD,
// and its waitpid(-1) cannot reap the helper; only the pidfd reaches it.
inline constexpr unsigned long helper_clone_flags = CLONE_VM | CLONE_FILES | CLONE_PIDFD;

// Whether this build has an assembly helper for the architecture it runs on.
#if defined(__x86_64__) || defined(__aarch64__)
inline constexpr bool helper_built = true;
#else
inline constexpr bool helper_built = false;
#endif

// Starts the helper: the clone, and in the child the helper's whole life, in registers and system
// calls, so that it runs no compiled code (no stack frames, no TLS, no errno, no sanitizer hooks)
// on memory it shares with the caller. The helper:
//   1. blocks every signal, the two glibc withholds included;
//   2. asks for SIGKILL when its parent thread dies, names itself (`constants->name`: its own
//      comm, not the caller's), then checks the parent did not die first;
//   3. blocks in flock(fd, operation), again after EINTR;
//   4. once granted, adds 1 to the eventfd `granted`: the caller learns of the lock from that, at
//      once, rather than from the helper's exit, which takes longer to reach it;
//   5. exits with 0, or flock's errno.
// Runs on `stack_top` (page-aligned, so aligned as every ABI wants a stack pointer). Returns the
// helper's PID with its pidfd in *pidfd, or -errno (-ENOSYS where no helper is built); touches no
// errno.
long clone_helper(const Request& request, void* stack_top, int* pidfd) noexcept;

// How each architecture's clone_helper() is defined: not inlined, not instrumented (a
// sanitizer's call between loading the registers and the clone would clobber them).
#if defined(__clang__)
#define PIDLOCK_HELPER_CODE [[gnu::noinline, clang::no_sanitize("address", "thread", "undefined")]]
#else
#define PIDLOCK_HELPER_CODE [[gnu::noinline, gnu::no_sanitize("address", "thread", "undefined")]]
#endif

// Starts the forked waiter: a copy of this process (no CLONE_VM, so plain C++ may run in it, on
// any architecture) that is no clone of the helper's kind, with no exit signal, that does what
// the helper does, and first closes every descriptor but `request.fd`, `request.granted` and
// `keep` (-1: none), so that it keeps no other file of the caller's open. Returns its PID, or
// -errno; touches no errno of the caller's.
long fork_waiter(const Request& request, int keep) noexcept;

}  // namespace pidlock::wait::start
