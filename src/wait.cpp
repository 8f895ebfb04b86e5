#include "wait.hpp"

#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "sys.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "the timed wait's helper is written for x86-64 and aarch64; port clone_helper() first"
#endif

namespace pidlock::wait {
namespace {

using namespace std::chrono;

// Memory and descriptors shared, and exit_signal (the low byte) 0: the caller gets no SIGCHLD,
// and its waitpid(-1) cannot reap the helper; only the pidfd reaches it.
constexpr unsigned long helper_clone_flags = CLONE_VM | CLONE_FILES | CLONE_PIDFD;

// The helper exits with 0 when granted the lock and with flock's errno when that fails. When its
// parent is already gone, nobody reads the status.
constexpr int helper_orphaned = 255;

// What the helper reads from memory, in one place so that one register points at all of it:
// rt_sigprocmask's whole set (glibc's sigfillset() leaves out the two signals it keeps for
// itself, SIGCANCEL and SIGSETXID, whose handlers would run on the calling thread's TLS), the
// eventfd increment that tells the caller it holds the lock, and the name it gives itself.
struct HelperConstants {
  std::uint64_t every_signal;
  std::uint64_t granted;
  char name[16];  // TASK_COMM_LEN, its NUL included
};
constexpr HelperConstants waiting_helper{~std::uint64_t{0}, 1, "pidlock-wait"};
constexpr HelperConstants deferring_helper{~std::uint64_t{0}, 1, "pidlock-defer"};
static_assert(offsetof(HelperConstants, granted) == 8, "the helper's assembly reads it at +8");
static_assert(offsetof(HelperConstants, name) == 16, "the helper's assembly reads it at +16");
static_assert(std::string_view(waiting_helper.name) == helper_name);
static_assert(std::string_view(deferring_helper.name) == deferring_helper_name);

// Starts the helper: the clone, and in the child the helper's whole life, in registers and
// system calls, so that it runs no compiled code (no stack frames, no TLS, no errno, no sanitizer
// hooks) on memory it shares with the caller. The helper:
//   1. blocks every signal, the two glibc withholds included;
//   2. asks for SIGKILL when its parent thread dies, names itself (`constants->name`: its own
//      comm, not the caller's), then checks the parent did not die first;
//   3. blocks in flock(fd, operation) (LOCK_EX or LOCK_SH), again after EINTR;
//   4. once granted, adds 1 to the eventfd `granted`: the caller learns of the lock from that,
//      at once, rather than from the helper's exit, which takes longer to reach it;
//   5. exits with 0, or flock's errno.
// Returns the helper's PID with its pidfd in *pidfd, or -errno; touches no errno. Not
// instrumented: a sanitizer's call between loading the registers and the clone would clobber them.
#if defined(__clang__)
[[gnu::noinline, clang::no_sanitize("address", "thread", "undefined")]]
#else
[[gnu::noinline, gnu::no_sanitize("address", "thread", "undefined")]]
#endif
long clone_helper(int* pidfd, void* stack_top, int fd, int operation, pid_t parent, int granted,
                  const HelperConstants* helper) noexcept {
#if defined(__x86_64__)
  register long result asm("rax") = SYS_clone;
  register unsigned long flags asm("rdi") = helper_clone_flags;
  register void* stack asm("rsi") = stack_top;
  register int* parent_tid asm("rdx") = pidfd;
  register long child_tid asm("r10") = 0;
  register long tls asm("r8") = 0;
  register long locked_fd asm("r12") = fd;
  register long parent_pid asm("r13") = parent;
  register const HelperConstants* constants asm("r14") = helper;
  register long lock_operation asm("r15") = operation;
  register long granted_fd asm("r9") = granted;  // neither clone nor prctl reads r9
  asm volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 3f\n\t"
      "mov %[sigprocmask], %%eax\n\t"
      "mov %[sig_block], %%edi\n\t"
      "mov %%r14, %%rsi\n\t"
      "xor %%edx, %%edx\n\t"
      "mov %[sigset_size], %%r10d\n\t"
      "syscall\n\t"
      "mov %[prctl], %%eax\n\t"
      "mov %[pdeathsig], %%edi\n\t"
      "mov %[sigkill], %%esi\n\t"
      "xor %%edx, %%edx\n\t"
      "xor %%r10d, %%r10d\n\t"
      "xor %%r8d, %%r8d\n\t"
      "syscall\n\t"
      "mov %[prctl], %%eax\n\t"
      "mov %[set_name], %%edi\n\t"
      "lea 16(%%r14), %%rsi\n\t"
      "syscall\n\t"
      "mov %[getppid], %%eax\n\t"
      "syscall\n\t"
      "mov %[orphaned], %%edi\n\t"
      "cmp %%r13, %%rax\n\t"
      "jne 2f\n"
      "1:\n\t"
      "mov %[flock], %%eax\n\t"
      "mov %%r12, %%rdi\n\t"
      "mov %%r15, %%rsi\n\t"
      "syscall\n\t"
      "cmp %[minus_eintr], %%rax\n\t"
      "je 1b\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 4f\n\t"
      "mov %[write], %%eax\n\t"
      "mov %%r9, %%rdi\n\t"
      "lea 8(%%r14), %%rsi\n\t"
      "mov $8, %%edx\n\t"
      "syscall\n\t"
      "xor %%eax, %%eax\n"  // a failed write leaves the exit to tell: status 0
      "4:\n\t"
      "mov %%rax, %%rdi\n\t"
      "neg %%rdi\n"
      "2:\n\t"
      "mov %[exit_group], %%eax\n\t"
      "syscall\n\t"
      "ud2\n"
      "3:"
      : "+r"(result)
      : "r"(flags), "r"(stack), "r"(parent_tid), "r"(child_tid), "r"(tls), "r"(locked_fd),
        "r"(parent_pid), "r"(constants), "r"(lock_operation),
        "r"(granted_fd), [sigprocmask] "i"(SYS_rt_sigprocmask), [sig_block] "i"(SIG_BLOCK),
        [sigset_size] "i"(sizeof HelperConstants::every_signal), [prctl] "i"(SYS_prctl),
        [pdeathsig] "i"(PR_SET_PDEATHSIG), [sigkill] "i"(SIGKILL), [set_name] "i"(PR_SET_NAME),
        [getppid] "i"(SYS_getppid), [orphaned] "i"(helper_orphaned), [flock] "i"(SYS_flock),
        [minus_eintr] "i"(-EINTR), [write] "i"(SYS_write), [exit_group] "i"(SYS_exit_group)
      : "rcx", "r11", "memory", "cc");
  return result;
#elif defined(__aarch64__)
  register long number asm("x8") = SYS_clone;
  register long result asm("x0") = static_cast<long>(helper_clone_flags);
  register void* stack asm("x1") = stack_top;
  register int* parent_tid asm("x2") = pidfd;
  register long tls asm("x3") = 0;
  register long child_tid asm("x4") = 0;
  register long locked_fd asm("x19") = fd;
  register long parent_pid asm("x20") = parent;
  register const HelperConstants* constants asm("x21") = helper;
  register long lock_operation asm("x22") = operation;
  register long granted_fd asm("x23") = granted;
  asm volatile(
      "svc #0\n\t"
      "cbnz x0, 3f\n\t"
      "mov x8, %[sigprocmask]\n\t"
      "mov x0, %[sig_block]\n\t"
      "mov x1, x21\n\t"
      "mov x2, xzr\n\t"
      "mov x3, %[sigset_size]\n\t"
      "svc #0\n\t"
      "mov x8, %[prctl]\n\t"
      "mov x0, %[pdeathsig]\n\t"
      "mov x1, %[sigkill]\n\t"
      "mov x2, xzr\n\t"
      "mov x3, xzr\n\t"
      "mov x4, xzr\n\t"
      "svc #0\n\t"
      "mov x8, %[prctl]\n\t"
      "mov x0, %[set_name]\n\t"
      "add x1, x21, #16\n\t"
      "svc #0\n\t"
      "mov x8, %[getppid]\n\t"
      "svc #0\n\t"
      "cmp x0, x20\n\t"
      "mov x0, %[orphaned]\n\t"
      "b.ne 2f\n"
      "1:\n\t"
      "mov x8, %[flock]\n\t"
      "mov x0, x19\n\t"
      "mov x1, x22\n\t"
      "svc #0\n\t"
      "cmn x0, %[eintr]\n\t"
      "b.eq 1b\n\t"
      "cbnz x0, 4f\n\t"
      "mov x8, %[write]\n\t"
      "mov x0, x23\n\t"
      "add x1, x21, #8\n\t"
      "mov x2, #8\n\t"
      "svc #0\n\t"
      "mov x0, xzr\n"  // a failed write leaves the exit to tell: status 0
      "4:\n\t"
      "neg x0, x0\n"
      "2:\n\t"
      "mov x8, %[exit_group]\n\t"
      "svc #0\n\t"
      "brk #0\n"
      "3:"
      : "+r"(result)
      : "r"(number), "r"(stack), "r"(parent_tid), "r"(tls), "r"(child_tid), "r"(locked_fd),
        "r"(parent_pid), "r"(constants), "r"(lock_operation),
        "r"(granted_fd), [sigprocmask] "i"(SYS_rt_sigprocmask), [sig_block] "i"(SIG_BLOCK),
        [sigset_size] "i"(sizeof HelperConstants::every_signal), [prctl] "i"(SYS_prctl),
        [pdeathsig] "i"(PR_SET_PDEATHSIG), [sigkill] "i"(SIGKILL), [set_name] "i"(PR_SET_NAME),
        [getppid] "i"(SYS_getppid), [orphaned] "i"(helper_orphaned), [flock] "i"(SYS_flock),
        [eintr] "i"(EINTR), [write] "i"(SYS_write), [exit_group] "i"(SYS_exit_group)
      : "memory", "cc");
  return result;
#endif
}

Failure failure_of(std::string_view operation, int error, std::string_view why = {}) {
  return {operation, std::error_code(error, std::system_category()), why};
}

// A mapping for a helper's stack, unmapped when the thread ends. Each wait of a thread borrows
// it rather than mapping and unmapping its own: unmapping memory that a helper on another CPU
// has used costs a TLB shootdown there, and it came on the hand-off's path, between the grant
// and acquire's return. A wait started while the thread's mapping is lent out (an on_wait that
// waits for another lock) maps one of its own.
struct SpareStack {
  SpareStack() = default;
  SpareStack(const SpareStack&) = delete;
  SpareStack& operator=(const SpareStack&) = delete;
  ~SpareStack() {
    if (base != MAP_FAILED && !lent) ::munmap(base, size);
  }
  void* base = MAP_FAILED;
  std::size_t size = 0;
  bool lent = false;
};
thread_local SpareStack spare_stack;

// The helper's stack. Its code pushes nothing; the stack is there so that whatever does (a
// debugger calling into the helper) lands in memory of its own, never on a stack of the caller's,
// with a guard page below it.
class Stack {
 public:
  Stack() = default;
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack() {
    if (base_ == MAP_FAILED) return;
    if (borrowed_) {
      spare_stack.lent = false;
    } else {
      ::munmap(base_, size_);
    }
  }

  std::expected<void, Failure> map() {
    SpareStack& spare = spare_stack;
    if (spare.base != MAP_FAILED && !spare.lent) {
      base_ = spare.base;
      size_ = spare.size;
      borrowed_ = spare.lent = true;
      return {};
    }
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t usable = (usable_bytes + page - 1) / page * page;
    void* base = ::mmap(nullptr, page + usable, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return std::unexpected(failure_of("mmap", errno, stack_why));
    base_ = base;
    size_ = page + usable;
    if (::mprotect(base_, page, PROT_NONE) != 0) {
      return std::unexpected(failure_of("mprotect", errno, stack_why));
    }
    if (spare.base == MAP_FAILED) {  // the thread's first: kept for its next waits
      spare.base = base_;
      spare.size = size_;
      borrowed_ = spare.lent = true;
    }
    return {};
  }

  // Page-aligned, so aligned as both architectures' ABIs want a stack pointer.
  void* top() const noexcept { return static_cast<char*>(base_) + size_; }

  // Leaves the mapping in place for good, and lends it to no later wait: for a helper that might
  // still run on it.
  void keep_mapped() noexcept {
    if (borrowed_) {  // forgotten, not unmapped
      spare_stack.base = MAP_FAILED;
      spare_stack.lent = false;
    }
    base_ = MAP_FAILED;
  }

 private:
  static constexpr std::size_t usable_bytes = std::size_t{16} * 1024;
  static constexpr std::string_view stack_why = "mapping a stack for the wait's helper process";
  void* base_ = MAP_FAILED;
  std::size_t size_ = 0;
  bool borrowed_ = false;
};

// Every signal this thread may block, blocked for as long as it lives, then the mask restored.
class SignalsBlocked {
 public:
  SignalsBlocked() noexcept {
    sigset_t all{};
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous_);
  }
  ~SignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t previous_{};
};

// Cancellation held off: a pthread_cancel() acted on half-way through killing and reaping the
// helper would leave it running. (While the thread unwinds from a cancellation, glibc acts on
// none anyway.)
class CancellationHeldOff {
 public:
  CancellationHeldOff() noexcept { ::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &previous_); }
  ~CancellationHeldOff() { ::pthread_setcancelstate(previous_, nullptr); }
  CancellationHeldOff(const CancellationHeldOff&) = delete;
  CancellationHeldOff& operator=(const CancellationHeldOff&) = delete;

 private:
  int previous_ = PTHREAD_CANCEL_ENABLE;
};

// One helper process. Whatever way the wait ends, by a return, an exception or a thread
// cancellation (glibc unwinds the thread, so this destructor runs), the helper is killed and
// reaped before its stack is unmapped, and a lock it was granted that nobody will hand out is
// unlocked.
class Helper {
 public:
  // How stop() found the helper: exited with this status, or killed before it could.
  static constexpr int killed = -1;

  Helper() = default;
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  ~Helper() {
    if (!running_) return;
    stop();
    // Unlocking matters when another thread forked meanwhile: closing alone would leave the
    // lock held by the fork's copy of the descriptor.
    ::flock(fd_, LOCK_UN);
  }

  // `granted`: the eventfd the helper adds 1 to once it holds the lock.
  std::expected<void, Failure> start(int fd, int operation, int granted,
                                     const HelperConstants& kind) {
    if (auto mapped = stack_.map(); !mapped) return std::unexpected(mapped.error());
    int pidfd = -1;
    long pid = 0;
    {
      const SignalsBlocked blocked;  // inherited by the helper until it blocks the rest itself
      pid = clone_helper(&pidfd, stack_.top(), fd, operation, ::getpid(), granted, &kind);
    }
    if (pid < 0) {
      return std::unexpected(failure_of("clone", static_cast<int>(-pid),
                                        "could not start the helper process that times the wait"));
    }
    pidfd_.reset(pidfd);
    fd_ = fd;
    running_ = true;
    return {};
  }

  int pidfd() const noexcept { return pidfd_.get(); }

  // Kills the helper if it still waits, and reaps it: its exit status, or `killed`. Killed even
  // when it has reported the grant and is about to exit: a SIGSTOP (which no mask holds) or a
  // tracer could hold it there, and acquire must not wait on that.
  int stop() noexcept {
    const CancellationHeldOff uninterrupted;
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    return reap();
  }

  // Reaps a helper whose pidfd said it has exited: nothing left to kill.
  int reap_exited() noexcept {
    const CancellationHeldOff uninterrupted;
    return reap();
  }

 private:
  int reap() noexcept {
    siginfo_t info{};
    long reaped = 0;
    do {  // the raw call: glibc's waitid() is a cancellation point
      reaped = ::syscall(SYS_waitid, P_PIDFD, pidfd_.get(), &info, WEXITED | __WALL, nullptr);
    } while (reaped != 0 && errno == EINTR);
    running_ = false;
    if (reaped != 0) {
      stack_.keep_mapped();
      return killed;
    }
    pidfd_.reset();
    return info.si_code == CLD_EXITED ? info.si_status : killed;
  }

  Stack stack_;
  sys::UniqueFd pidfd_;
  int fd_ = -1;
  bool running_ = false;
};

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

// Blocks until the helper reports the lock granted, or exits, or `deadline` passes, or nobody
// waits ahead any more, reporting progress on time. The grant comes first: the helper's exit
// reaches its pidfd only once the kernel has torn the process down, and on a busy machine that
// is tens of microseconds later.
std::expected<Ended, Failure> watch(const Helper& helper, int granted, Progress& progress,
                                    Ahead& ahead, Clock::time_point deadline) {
  for (;;) {
    // A descriptor of -1 (nobody ahead to watch) is left alone by ppoll.
    pollfd watched[3] = {
        {granted, POLLIN, 0}, {helper.pidfd(), POLLIN, 0}, {ahead.pidfd(), POLLIN, 0}};
    const auto now = Clock::now();
    if (now >= deadline) return Ended::deadline;
    const auto wake = std::min({deadline, progress.next(), ahead.next()});
    const bool forever = wake == Clock::time_point::max();
    const timespec timeout = sys::to_timespec(wake - now);
    const int ready = ppoll_unwinding_cleanly(watched, forever ? nullptr : &timeout);
    if (ready < 0 && errno != EINTR) return std::unexpected(failure_of("ppoll", errno));
    const bool granted_now = ready > 0 && (watched[0].revents & POLLIN) != 0;
    const bool helper_exited = ready > 0 && (watched[1].revents & POLLIN) != 0;
    if (granted_now) return helper_exited ? Ended::granted_and_exited : Ended::granted;
    if (helper_exited) return Ended::exited;
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

}  // namespace

std::expected<Outcome, Failure> until_locked(int fd, int operation, Clock::time_point deadline,
                                             const Tick& tick, nanoseconds tick_interval,
                                             const Behind* behind) {
  if (deadline == Clock::time_point::max() && !tick && behind == nullptr) {
    return block_in_place(fd, operation);
  }

  Progress progress(tick, tick_interval);
  progress.report_start();
  // One per wait: written once, by the helper that is granted the lock, after which the wait ends.
  const sys::UniqueFd granted(::eventfd(0, EFD_CLOEXEC));
  if (!granted) {
    return std::unexpected(
        failure_of("eventfd", errno, "the wait's helper reports the grant through it"));
  }
  Ahead ahead(behind);
  const HelperConstants& kind = behind != nullptr ? deferring_helper : waiting_helper;
  for (;;) {
    Helper helper;
    if (auto started = helper.start(fd, operation, granted.get(), kind); !started) {
      return std::unexpected(started.error());
    }
    auto ended = watch(helper, granted.get(), progress, ahead, deadline);
    if (!ended) return std::unexpected(ended.error());
    // Granted to the helper is granted to this description: nothing to ask the kernel again.
    if (*ended == Ended::granted_and_exited) {  // usual: it exits right after saying so
      helper.reap_exited();
      return Outcome::acquired;
    }
    if (*ended == Ended::granted) {
      helper.stop();
      return Outcome::acquired;
    }
    // Out of time, withdrawn, or the helper died: it may have been granted the lock just before.
    const int ending = helper.stop();
    if (::flock(fd, operation | LOCK_NB) == 0) return Outcome::acquired;
    if (errno != EWOULDBLOCK && errno != EINTR) return std::unexpected(failure_of("flock", errno));
    if (*ended == Ended::withdrawn) return Outcome::withdrawn;
    if (Clock::now() >= deadline) return Outcome::timed_out;
    // A blocking flock that fails where a non-blocking one says "busy" would make this a spin.
    if (ending > 0) return std::unexpected(failure_of("flock", ending));
    // The helper died without the lock (somebody killed it): wait on with a new one.
  }
}

}  // namespace pidlock::wait
