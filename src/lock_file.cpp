#include "lock_file.hpp"

#include <sys/sysmacros.h>

#include <cerrno>
#include <string>

#include "sys.hpp"

namespace pidlock::lock_file {
namespace {

const char* file_type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
  }
}

}  // namespace

std::optional<Error> refuse(const std::filesystem::path& path, const struct stat& st,
                            const std::optional<filesystem::Kind>& kind) {
  if (S_ISLNK(st.st_mode)) {
    return Error::failure(ErrorKind::symlink, "open", path, sys::errno_code(ELOOP),
                          "is a symbolic link; refusing to follow it");
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::failure(ErrorKind::not_regular_file, "open", path, sys::errno_code(EINVAL),
                          std::string("refusing a lock file that is ") + file_type_name(st.st_mode));
  }
  if (kind) {
    if (auto why = filesystem::refusal(*kind)) return Error::failure(ErrorKind::kernel_interface, "open", path, sys::errno_code(EINVAL), *why);
  }
  return std::nullopt;
}

bool may_be_kernel_interface(const struct stat& st) noexcept { return ::major(st.st_dev) == 0; }

}  // namespace pidlock::lock_file
