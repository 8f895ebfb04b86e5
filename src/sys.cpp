// The syscall wrappers: reads to EOF (/proc's included), /proc/<pid> paths, passwd names, fstat.
#include "sys.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace pidlock::sys {
namespace {

constexpr std::size_t small_chunk = 4096;  // most files: a record, a /proc/<pid> entry
constexpr std::size_t big_chunk = 65536;   // /proc/locks on a busy machine runs to tens of KiB

void ignore_read_size(std::size_t /*bytes*/) {}

// Reads until EOF or `limit`; /proc files are generated on read and may come in short pieces.
// `on_read` sees the size of each read that returned data.
template <typename ReadAt, typename OnRead>
std::expected<std::string, std::error_code> read_until_eof(std::size_t limit,
                                                           std::size_t first_chunk, ReadAt read_at,
                                                           OnRead on_read) {
  std::string out;
  std::size_t chunk = std::min(limit, first_chunk);
  while (out.size() < limit) {
    const std::size_t want = std::min(chunk, limit - out.size());
    const std::size_t old = out.size();
    out.resize(old + want);
    const ssize_t n = read_at(out.data() + old, want, old);
    if (n < 0) {
      out.resize(old);
      if (errno == EINTR) continue;
      return std::unexpected(last_error());
    }
    out.resize(old + static_cast<std::size_t>(n));
    if (n == 0) break;
    on_read(static_cast<std::size_t>(n));
    chunk = big_chunk;
  }
  return out;
}

}  // namespace

std::array<char, 32> decimal(pid_t pid) {
  std::array<char, 32> text{};
  std::to_chars(text.data(), text.data() + text.size() - 1, pid);
  return text;
}

UniqueFd open_pid_dir(pid_t pid) {
  std::array<char, 32> path{"/proc/"};
  std::to_chars(path.data() + 6, path.data() + path.size() - 1, pid);
  return UniqueFd(::openat(AT_FDCWD, path.data(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

std::string user_name(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  std::array<char, 4096> buffer{};
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return {};
  }
  return found->pw_name;
}

std::expected<std::string, std::error_code> read_fd(int fd, std::size_t limit) {
  return read_until_eof(
      limit, small_chunk,
      [fd](char* buf, std::size_t len, std::size_t offset) {
        return ::pread(fd, buf, len, static_cast<off_t>(offset));
      },
      ignore_read_size);
}

std::expected<std::string, std::error_code> read_file_at(int dirfd, const char* name,
                                                         std::size_t limit) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW));
  if (!fd) return std::unexpected(last_error());
  return read_until_eof(
      limit, small_chunk,
      [&fd](char* buf, std::size_t len, std::size_t) { return ::read(fd.get(), buf, len); },
      ignore_read_size);
}

std::expected<ProcText, std::error_code> read_proc_file(int dirfd, const char* name,
                                                        std::size_t limit) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW));
  if (!fd) return std::unexpected(last_error());
  ProcText out;
  auto text = read_until_eof(
      limit, big_chunk,
      [&fd](char* buf, std::size_t len, std::size_t) { return ::read(fd.get(), buf, len); },
      [&out](std::size_t bytes) {
        if (out.reads++ == 0) out.first_read = bytes;
      });
  if (!text) return std::unexpected(text.error());
  out.text = std::move(*text);
  return out;
}

int fstat_descriptor(int fd, struct stat* st) noexcept {
#if defined(__x86_64__) && defined(SYS_fstat)
  return static_cast<int>(::syscall(SYS_fstat, fd, st));
#else
  return ::fstat(fd, st);
#endif
}

}  // namespace pidlock::sys
