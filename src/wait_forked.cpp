// The forked waiter: where the helper cannot be cloned, a copy of this process waits in flock(2).
#include <dirent.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>

#include "wait_helper.hpp"

namespace pidlock::wait::start {
namespace {

// The child runs only here, in its own copy of memory, and calls nothing but syscall(3): no libc
// wrapper or library template that a sanitizer intercepts or instruments (its runtime's locks may
// have been held by another thread of the caller at the clone, and are held for good in the
// copy), and no errno but its own copy.
#if defined(__clang__)
#define WAITER_CODE [[clang::no_sanitize("address", "thread", "undefined")]]
#else
#define WAITER_CODE [[gnu::no_sanitize("address", "thread", "undefined")]]
#endif

WAITER_CODE long call(long number, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  const long result = ::syscall(number, a, b, c, d);
  return result < 0 ? -errno : result;
}

[[noreturn]] WAITER_CODE void exit_with(int status) noexcept {
  for (;;) ::syscall(SYS_exit_group, status);
}

// The descriptors to keep, lowest first; -1 entries at the front.
struct Kept {
  int fds[3];
  bool has(long fd) const noexcept { return fd == fds[0] || fd == fds[1] || fd == fds[2]; }
};

// Closes fds [first, last] (last may be INT_MAX: all above `first`) one by one, for kernels
// without close_range(2) (before 5.9) and filters that refuse it: the numbers /proc lists, or,
// without /proc, every number up to the descriptor limit.
WAITER_CODE void close_one_by_one(const Kept& kept) noexcept {
  const long dir = call(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    alignas(8) char entries[4096];
    for (;;) {
      const long got = call(SYS_getdents64, dir, reinterpret_cast<long>(entries), sizeof entries);
      if (got <= 0) break;
      for (long at = 0; at < got;) {
        // d_reclen, two bytes in the machine's order, read without a memcpy() call.
        const auto* length = entries + at + offsetof(dirent64, d_reclen);
        const auto low =
            static_cast<unsigned char>(length[std::endian::native == std::endian::big]);
        const auto high =
            static_cast<unsigned char>(length[std::endian::native != std::endian::big]);
        const char* name = entries + at + offsetof(dirent64, d_name);
        at += low | high << 8;
        long fd = 0;
        for (; *name >= '0' && *name <= '9' && fd < INT_MAX / 10; ++name)
          fd = fd * 10 + *name - '0';
        if (*name == '\0' && fd != dir && !kept.has(fd)) call(SYS_close, fd);
      }
    }
    call(SYS_close, dir);
    return;
  }
  rlimit64 limit{};
  if (call(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, reinterpret_cast<long>(&limit)) != 0) return;
  const long last = limit.rlim_cur < INT_MAX ? static_cast<long>(limit.rlim_cur) : INT_MAX;
  for (long fd = 0; fd < last; ++fd) {
    if (!kept.has(fd)) call(SYS_close, fd);
  }
}

// Every descriptor but the kept ones: one close_range(2) for each gap.
WAITER_CODE void close_all_but(const Kept& kept) noexcept {
  unsigned long from = 0;
  for (const int fd : kept.fds) {
    if (fd < 0) continue;
    if (static_cast<unsigned long>(fd) > from &&
        call(SYS_close_range, static_cast<long>(from), fd - 1, 0) != 0) {
      close_one_by_one(kept);
      return;
    }
    from = static_cast<unsigned long>(fd) + 1;
  }
  if (call(SYS_close_range, static_cast<long>(from), long{UINT_MAX}, 0) != 0) {
    close_one_by_one(kept);
  }
}

// The forked waiter's life, the helper's steps in C++ (see clone_helper in wait_helper.hpp).
[[noreturn]] WAITER_CODE void wait_in_child(const Request& request, const Kept& kept) noexcept {
  // The kernel's set is (NSIG - 1) bits wide: 64 everywhere but MIPS.
  const std::uint64_t every_signal[2] = {~std::uint64_t{0}, ~std::uint64_t{0}};
  static_assert((NSIG - 1) / 8 <= sizeof every_signal);
  call(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(every_signal), 0, (NSIG - 1) / 8);
  call(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
  call(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(request.constants->name));
  if (call(SYS_getppid) != request.parent) exit_with(orphaned);
  close_all_but(kept);
  long locked = 0;
  do {
    locked = call(SYS_flock, request.fd, request.operation);
  } while (locked == -EINTR);
  if (locked != 0) exit_with(static_cast<int>(-locked));
  // A failed write leaves the exit to tell: status 0.
  call(SYS_write, request.granted, reinterpret_cast<long>(&request.constants->granted),
       sizeof request.constants->granted);
  exit_with(0);
}

}  // namespace

WAITER_CODE long fork_waiter(const Request& request, int keep) noexcept {
  Kept kept{{request.fd, request.granted, keep}};
  std::sort(kept.fds, kept.fds + 3);
  // A fork with no exit signal (flags 0): no SIGCHLD for the caller, and invisible to its
  // waitpid(-1) without __WALL. Flags and stack both 0, so that the architectures that take them
  // in the other order (s390) read the same call.
  const int saved = errno;
  const long pid = ::syscall(SYS_clone, 0L, 0L, 0L, 0L, 0L);
  const long result = pid < 0 ? -errno : pid;
  if (pid == 0) wait_in_child(request, kept);
  errno = saved;
  return result;
}

}  // namespace pidlock::wait::start
