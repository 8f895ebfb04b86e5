#include "sys.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>

namespace pidlock::sys {
namespace {

// Reads until EOF or `limit`; /proc files are generated on read and may come in short pieces.
template <typename ReadAt>
std::expected<std::string, std::error_code> read_until_eof(std::size_t limit, ReadAt read_at,
                                                           std::size_t* reads = nullptr,
                                                           std::size_t first_chunk = 4096) {
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
    if (reads != nullptr) ++*reads;
    chunk = 65536;  // /proc/locks on a busy machine runs to tens of KiB
  }
  return out;
}

}  // namespace

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
  return read_until_eof(limit, [fd](char* buf, std::size_t len, std::size_t offset) {
    return ::pread(fd, buf, len, static_cast<off_t>(offset));
  });
}

std::expected<ProcText, std::error_code> read_proc_file(int dirfd, const char* name,
                                                        std::size_t limit, std::size_t first_read) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW));
  if (!fd) return std::unexpected(last_error());
  ProcText out;
  auto text = read_until_eof(
      limit, [&fd](char* buf, std::size_t len, std::size_t) { return ::read(fd.get(), buf, len); },
      &out.reads, std::max<std::size_t>(first_read, 1));
  if (!text) return std::unexpected(text.error());
  out.text = std::move(*text);
  return out;
}

std::expected<std::string, std::error_code> read_file_at(int dirfd, const char* name,
                                                         std::size_t limit) {
  auto read = read_proc_file(dirfd, name, limit);
  if (!read) return std::unexpected(read.error());
  return std::move(read->text);
}

int fstat_descriptor(int fd, struct stat* st) noexcept {
#if defined(__x86_64__) && defined(SYS_fstat)
  return static_cast<int>(::syscall(SYS_fstat, fd, st));
#else
  return ::fstat(fd, st);
#endif
}

}  // namespace pidlock::sys
