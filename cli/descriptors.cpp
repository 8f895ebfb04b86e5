// The command's descriptors: closed standard ones filled, inherited ones listed, the rest closed.
#include "descriptors.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "process.hpp"

namespace pidlock::cli {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

// close_range(2) where the kernel has it (5.9+), close(2) in a loop up to the limit where not.
void close_from_to(unsigned first, unsigned last) noexcept {
  if (first > last) return;
  if (::syscall(SYS_close_range, first, last, 0U) == 0) return;
  rlimit limit{};
  const rlim_t end = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                         ? limit.rlim_cur
                         : 65536;
  for (rlim_t fd = first; fd <= last && fd < end; ++fd) ::close(static_cast<int>(fd));
}

}  // namespace

bool fill_closed_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (is_open(fd)) continue;
    // Not close-on-exec: the command is to find /dev/null there too.
    const int null = ::open("/dev/null", O_RDWR | O_NOCTTY);
    if (null < 0) {
      say(stderr, "pidlock: open /dev/null: {}\n", errno_text(errno));
      return false;
    }
    // open() returns the lowest free descriptor, which is `fd`, the lower ones being open.
    if (null != fd) {
      const bool moved = ::dup2(null, fd) == fd;
      const int error = errno;
      ::close(null);
      if (!moved) {
        say(stderr, "pidlock: dup2 /dev/null: {}\n", errno_text(error));
        return false;
      }
    }
  }
  return true;
}

InheritedDescriptors InheritedDescriptors::now() {
  InheritedDescriptors inherited;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    const int own = ::dirfd(dir);
    while (const dirent* entry = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): private stream
      int fd = -1;
      const char* end = entry->d_name + std::strlen(entry->d_name);
      if (std::from_chars(entry->d_name, end, fd).ptr == end && fd > 2 && fd != own) {
        inherited.fds_.push_back(fd);
      }
    }
    ::closedir(dir);
  } else {
    // No /proc: ask each descriptor number up to the limit (capped: a limit of millions is rare
    // and only descriptors a parent left open count).
    rlimit limit{};
    const rlim_t end = ::getrlimit(RLIMIT_NOFILE, &limit) == 0
                           ? std::min<rlim_t>(limit.rlim_cur, rlim_t{1} << 16)
                           : rlim_t{1024};
    for (int fd = 3; static_cast<rlim_t>(fd) < end; ++fd) {
      if (::fcntl(fd, F_GETFD) != -1) inherited.fds_.push_back(fd);
    }
  }
  std::sort(inherited.fds_.begin(), inherited.fds_.end());
  return inherited;
}

void close_all_but(std::span<const int> keep) noexcept {
  unsigned next = 0;
  for (const int fd : keep) {
    if (fd < 0 || static_cast<unsigned>(fd) < next) continue;
    if (static_cast<unsigned>(fd) > next) close_from_to(next, static_cast<unsigned>(fd) - 1);
    next = static_cast<unsigned>(fd) + 1;
  }
  close_from_to(next, ~0U);
}

}  // namespace pidlock::cli
