// The timed wait's helper process for x86-64: its clone and its whole life in inline assembly.
#if defined(__x86_64__)

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cerrno>

#include "wait_helper.hpp"

namespace pidlock::wait::start {

PIDLOCK_HELPER_CODE
long clone_helper(const Request& request, void* stack_top, int* pidfd) noexcept {
  register long result asm("rax") = SYS_clone;
  register unsigned long flags asm("rdi") = helper_clone_flags;
  register void* stack asm("rsi") = stack_top;
  register int* parent_tid asm("rdx") = pidfd;
  register long child_tid asm("r10") = 0;
  register long tls asm("r8") = 0;
  register long locked_fd asm("r12") = request.fd;
  register long parent_pid asm("r13") = request.parent;
  register const Constants* constants asm("r14") = request.constants;
  register long lock_operation asm("r15") = request.operation;
  register long granted_fd asm("r9") = request.granted;  // neither clone nor prctl reads r9
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
        [sigset_size] "i"(sizeof Constants::every_signal), [prctl] "i"(SYS_prctl),
        [pdeathsig] "i"(PR_SET_PDEATHSIG), [sigkill] "i"(SIGKILL), [set_name] "i"(PR_SET_NAME),
        [getppid] "i"(SYS_getppid), [orphaned] "i"(orphaned), [flock] "i"(SYS_flock),
        [minus_eintr] "i"(-EINTR), [write] "i"(SYS_write), [exit_group] "i"(SYS_exit_group)
      : "rcx", "r11", "memory", "cc");
  return result;
}

}  // namespace pidlock::wait::start

#endif
