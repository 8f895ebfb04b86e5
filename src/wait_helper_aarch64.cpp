// The timed wait's helper process for aarch64: its clone and its whole life in inline assembly.
#if defined(__aarch64__)

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cerrno>

#include "wait_helper.hpp"

namespace pidlock::wait::start {

PIDLOCK_HELPER_CODE
long clone_helper(const Request& request, void* stack_top, int* pidfd) noexcept {
  register long number asm("x8") = SYS_clone;
  register long result asm("x0") = static_cast<long>(helper_clone_flags);
  register void* stack asm("x1") = stack_top;
  register int* parent_tid asm("x2") = pidfd;
  register long tls asm("x3") = 0;
  register long child_tid asm("x4") = 0;
  register long locked_fd asm("x19") = request.fd;
  register long parent_pid asm("x20") = request.parent;
  register const Constants* constants asm("x21") = request.constants;
  register long lock_operation asm("x22") = request.operation;
  register long granted_fd asm("x23") = request.granted;
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
        [sigset_size] "i"(sizeof Constants::every_signal), [prctl] "i"(SYS_prctl),
        [pdeathsig] "i"(PR_SET_PDEATHSIG), [sigkill] "i"(SIGKILL), [set_name] "i"(PR_SET_NAME),
        [getppid] "i"(SYS_getppid), [orphaned] "i"(orphaned), [flock] "i"(SYS_flock),
        [eintr] "i"(EINTR), [write] "i"(SYS_write), [exit_group] "i"(SYS_exit_group)
      : "memory", "cc");
  return result;
}

}  // namespace pidlock::wait::start

#endif
