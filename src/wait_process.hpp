// The process a timed wait blocks in flock(2) through: started the best way this process may (the
// helper, else a forked waiter), watched through a descriptor, and never left behind.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <cstddef>
#include <expected>

#include "sys.hpp"
#include "wait.hpp"
#include "wait_helper.hpp"

namespace pidlock::wait::process {

// The helper's stack: the thread's spare mapping, borrowed, or one of its own. Its code pushes
// nothing; the stack is there so that whatever does (a debugger calling into the helper) lands in
// memory of its own, never on a stack of the caller's, with a guard page below it.
class Stack {
 public:
  Stack() = default;
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack();

  std::expected<void, Failure> map();
  // Page-aligned, so aligned as every architecture's ABI wants a stack pointer.
  void* top() const noexcept { return static_cast<char*>(base_) + size_; }
  // Leaves the mapping in place for good, and lends it to no later wait: for a helper that might
  // still run on it.
  void keep_mapped() noexcept;

 private:
  void* base_ = MAP_FAILED;
  std::size_t size_ = 0;
  bool borrowed_ = false;
};

// Whether no waiting process can be started in this process at all: every clone is refused
// (EPERM, ENOSYS or EINVAL: a seccomp filter, an emulator). Learned at the first wait that tried;
// a seccomp filter is never lifted.
bool none_can_start() noexcept;

// One waiting process. Whatever way the wait ends, by a return, an exception or a thread
// cancellation (glibc unwinds the thread, so the destructor runs), it is killed and reaped before
// anything it uses is let go, and a lock it was granted that nobody will hand out is unlocked.
class Waiter {
 public:
  // How stop() found it: exited with this status, or killed before it could.
  static constexpr int killed = -1;

  Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  ~Waiter();

  // Starts the helper where this process may clone it (an architecture it is written for, a
  // kernel with pidfds, no filter refusing the clone), else the forked waiter. `granted`: the
  // eventfd it adds 1 to once it holds the lock. False when no process can be started here
  // (none_can_start()): the caller waits some other way. A clone that fails for want of
  // resources (EAGAIN, ENOMEM) fails: every other way would fail alike.
  std::expected<bool, Failure> start(int fd, int operation, int granted,
                                     const start::Constants& kind);

  // Readable once the process has exited: its pidfd (POLLIN), or where the kernel has no pidfds
  // the read end of a pipe whose only write end it holds (POLLHUP).
  int exit_fd() const noexcept;

  // Kills it if it still waits, and reaps it: its exit status, or `killed`. Killed even when it
  // has reported the grant and is about to exit: a SIGSTOP (which no mask holds) or a tracer
  // could hold it there, and acquire must not wait on that.
  int stop() noexcept;

  // Reaps one whose exit_fd() said it has exited: nothing left to kill.
  int reap_exited() noexcept;
  // (One that a signal it did not block ended, a fault or a seccomp filter's SIGSYS, cannot run
  // here: its kind is not started again in this process.)

 private:
  std::expected<bool, Failure> start_helper(const start::Request& request);
  std::expected<bool, Failure> start_forked(const start::Request& request);
  int reap() noexcept;

  Stack stack_;
  sys::UniqueFd pidfd_;
  sys::UniqueFd exit_pipe_;
  pid_t pid_ = 0;
  int fd_ = -1;
  bool running_ = false;
  bool helper_ = false;  // the helper, not the forked waiter
};

}  // namespace pidlock::wait::process
