// The timed wait's process: which kind this process may start, starting it, killing and reaping it.
#include "wait_process.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace pidlock::wait::process {
namespace {

Failure failure_of(std::string_view operation, int error, std::string_view why = {}) {
  return {operation, std::error_code(error, std::system_category()), why};
}

constexpr std::string_view clone_why = "could not start the helper process that times the wait";

// What this process has learned that it cannot do, a bit each. Only ever set: a kernel does not
// gain calls under a process, and a seccomp filter is never lifted (one may be added at any time,
// so what works is asked again).
enum Learned : unsigned {
  no_pidfds = 1,       // a pidfd call is missing or refused
  helper_refused = 2,  // cloning the helper failed with EPERM, ENOSYS or EINVAL
  fork_refused = 4,    // and so did a plain fork
};
std::atomic<unsigned> learned{0};

bool has_learned(Learned what) noexcept {
  return (learned.load(std::memory_order_relaxed) & what) != 0;
}

// A clone refused by the rules of where this runs, not for want of resources: a seccomp filter
// (EPERM, or ENOSYS as container runtimes answer clone3), a kernel or an emulator that does not
// know the call or its flags (qemu-user answers EINVAL to CLONE_VM without CLONE_THREAD, and to
// any exit signal but SIGCHLD).
bool refused(long error) noexcept {
  return error == -EPERM || error == -ENOSYS || error == -EINVAL;
}

// Whether the kernel has, and lets this process use, every pidfd call a waiting process's life
// needs: pidfd_open (5.3), pidfd_send_signal (5.1) and waitid(P_PIDFD) (5.4). Asked with
// arguments each refuses at once where it exists, so nothing is opened or signalled: three system
// calls, off the hand-off's path. CLONE_PIDFD (5.2) comes with them; a kernel older than 5.2
// would ignore the flag and not fill in the pidfd.
bool have_pidfds() noexcept {
  if (has_learned(no_pidfds)) return false;
  const int saved = errno;
  const bool opens = ::syscall(SYS_pidfd_open, 0, 0) != 0 && errno == EINVAL;
  const bool signals = ::syscall(SYS_pidfd_send_signal, -1, 0, nullptr, 0) != 0 && errno == EBADF;
  const bool waits =
      ::syscall(SYS_waitid, P_PIDFD, INT_MAX, nullptr, WEXITED, nullptr) != 0 && errno == EBADF;
  errno = saved;
  if (opens && signals && waits) return true;
  learned.fetch_or(no_pidfds);
  return false;
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

constexpr std::size_t stack_usable_bytes = std::size_t{16} * 1024;
constexpr std::string_view stack_why = "mapping a stack for the wait's helper process";

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
// process would leave it running. (While the thread unwinds from a cancellation, glibc acts on
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

}  // namespace

// --- The helper's stack ---------------------------------------------------------------------

Stack::~Stack() {
  if (base_ == MAP_FAILED) return;
  if (borrowed_) {
    spare_stack.lent = false;
  } else {
    ::munmap(base_, size_);
  }
}

std::expected<void, Failure> Stack::map() {
  SpareStack& spare = spare_stack;
  if (spare.base != MAP_FAILED && !spare.lent) {
    base_ = spare.base;
    size_ = spare.size;
    borrowed_ = spare.lent = true;
    return {};
  }
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t usable = (stack_usable_bytes + page - 1) / page * page;
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

void Stack::keep_mapped() noexcept {
  if (borrowed_) {  // forgotten, not unmapped
    spare_stack.base = MAP_FAILED;
    spare_stack.lent = false;
  }
  base_ = MAP_FAILED;
}

// --- The waiting process --------------------------------------------------------------------

bool none_can_start() noexcept { return has_learned(fork_refused); }

Waiter::~Waiter() {
  if (!running_) return;
  stop();
  // Unlocking matters when another thread forked meanwhile: closing alone would leave the lock
  // held by the fork's copy of the descriptor.
  ::flock(fd_, LOCK_UN);
}

std::expected<bool, Failure> Waiter::start(int fd, int operation, int granted,
                                           const start::Constants& kind) {
  const start::Request request{fd, operation, ::getpid(), granted, &kind};
  if (start::helper_built && !has_learned(helper_refused) && have_pidfds()) {
    auto started = start_helper(request);
    if (!started || *started) return started;
  }
  if (has_learned(fork_refused)) return false;
  return start_forked(request);
}

std::expected<bool, Failure> Waiter::start_helper(const start::Request& request) {
  if (auto mapped = stack_.map(); !mapped) return std::unexpected(mapped.error());
  int pidfd = -1;
  long pid = 0;
  {
    const SignalsBlocked blocked;  // inherited by the helper until it blocks the rest itself
    pid = start::clone_helper(request, stack_.top(), &pidfd);
  }
  if (refused(pid)) {
    learned.fetch_or(helper_refused);
    return false;
  }
  if (pid < 0) return std::unexpected(failure_of("clone", static_cast<int>(-pid), clone_why));
  pidfd_.reset(pidfd);
  pid_ = static_cast<pid_t>(pid);
  fd_ = request.fd;
  running_ = true;
  helper_ = true;
  return true;
}

std::expected<bool, Failure> Waiter::start_forked(const start::Request& request) {
  // Without pidfds, the waiter's exit is told by a pipe: the waiter holds the only write end
  // (close-on-exec, so that a command another thread starts meanwhile does not keep it).
  const bool with_pidfd = have_pidfds();
  sys::UniqueFd exit_pipe[2];
  if (!with_pidfd) {
    int ends[2] = {-1, -1};
    if (::pipe2(ends, O_CLOEXEC) != 0) {
      return std::unexpected(failure_of("pipe2", errno, "the wait's process tells its exit by it"));
    }
    exit_pipe[0].reset(ends[0]);
    exit_pipe[1].reset(ends[1]);
  }
  long pid = 0;
  {
    const SignalsBlocked blocked;  // no handler of the caller's may run in the copy
    pid = start::fork_waiter(request, exit_pipe[1].get());
  }
  if (refused(pid)) {
    learned.fetch_or(fork_refused);
    return false;
  }
  if (pid < 0) return std::unexpected(failure_of("clone", static_cast<int>(-pid), clone_why));
  pid_ = static_cast<pid_t>(pid);
  fd_ = request.fd;
  running_ = true;
  if (with_pidfd) {
    // The waiter cannot be reaped but by us until we reap it, so its PID names it still.
    const long pidfd = ::syscall(SYS_pidfd_open, pid_, 0);
    if (pidfd < 0) {
      const int error = errno;
      stop();
      ::flock(fd_, LOCK_UN);
      return std::unexpected(failure_of("pidfd_open", error, clone_why));
    }
    pidfd_.reset(static_cast<int>(pidfd));
  } else {
    exit_pipe_ = std::move(exit_pipe[0]);
  }
  return true;
}

int Waiter::exit_fd() const noexcept { return pidfd_ ? pidfd_.get() : exit_pipe_.get(); }

int Waiter::stop() noexcept {
  const CancellationHeldOff uninterrupted;
  if (pidfd_) {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  } else {
    ::kill(pid_, SIGKILL);  // ours and not reaped: the PID cannot have been reused
  }
  return reap();
}

int Waiter::reap_exited() noexcept {
  const CancellationHeldOff uninterrupted;
  return reap();
}

int Waiter::reap() noexcept {
  siginfo_t info{};
  long reaped = 0;
  do {  // the raw call: glibc's waitid() is a cancellation point
    reaped = pidfd_ ? ::syscall(SYS_waitid, P_PIDFD, pidfd_.get(), &info, WEXITED | __WALL, nullptr)
                    : ::syscall(SYS_waitid, P_PID, pid_, &info, WEXITED | __WALL, nullptr);
  } while (reaped != 0 && errno == EINTR);
  running_ = false;
  if (reaped != 0) {
    stack_.keep_mapped();
    return killed;
  }
  pidfd_.reset();
  exit_pipe_.reset();
  if (info.si_code == CLD_EXITED) return info.si_status;
  // Every signal but SIGKILL is blocked in it: any other that ended it was its own doing (a fault,
  // a seccomp filter's SIGSYS). It cannot run here: started again, it would only die again.
  if (info.si_status != SIGKILL) learned.fetch_or(helper_ ? helper_refused : fork_refused);
  return killed;
}

}  // namespace pidlock::wait::process
