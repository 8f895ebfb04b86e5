// What may be a lock file: statx (or fstat) of the open file, mounts known as storage, refusals.
#include "lock_file.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <string>

#include "sys.hpp"
#ifndef STATX_MNT_ID_UNIQUE
#define STATX_MNT_ID_UNIQUE 0x4000U
#endif

namespace pidlock::lock_file {
namespace {

const char* file_type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFSOCK:
      return "a socket";
    case S_IFLNK:
      return "a symbolic link";
    default:
      return "not a regular file";
  }
}

// statx where it works: 0 untried or working with a null path (Linux 6.11), 1 an empty path
// needed (older kernels refuse null with EFAULT), 2 unavailable (ENOSYS, or a seccomp filter's
// EPERM): fstat from then on.
std::atomic<int> statx_kind{0};

void from_statx(const struct statx& x, struct stat& st) noexcept {
  st = {};
  st.st_dev = ::makedev(x.stx_dev_major, x.stx_dev_minor);
  st.st_ino = x.stx_ino;
  st.st_mode = x.stx_mode;
  st.st_nlink = x.stx_nlink;
  st.st_uid = x.stx_uid;
  st.st_gid = x.stx_gid;
  st.st_rdev = ::makedev(x.stx_rdev_major, x.stx_rdev_minor);
  st.st_size = static_cast<off_t>(x.stx_size);
  st.st_blksize = static_cast<blksize_t>(x.stx_blksize);
  st.st_blocks = static_cast<blkcnt_t>(x.stx_blocks);
  st.st_atim = {x.stx_atime.tv_sec, x.stx_atime.tv_nsec};
  st.st_mtim = {x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
  st.st_ctim = {x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec};
}

// Mounts found to be storage, by unique ID. A handful is plenty: a process locks on one or two
// filesystems. Lock-free (no mutex a fork() in another thread could leave held); a slot
// overwritten by another thread costs one fstatfs later, never a wrong answer, since only IDs
// of storage are ever written.
constexpr std::size_t storage_slots = 8;
std::array<std::atomic<std::uint64_t>, storage_slots> storage_mounts{};
std::atomic<unsigned> next_storage_slot{0};

}  // namespace

int describe(int fd, Description& out) noexcept {
  constexpr unsigned wanted = STATX_BASIC_STATS | STATX_MNT_ID_UNIQUE;
  const int kind = statx_kind.load(std::memory_order_relaxed);
  if (kind < 2) {
    struct statx x {};
    const char* empty = kind == 0 ? nullptr : "";
    long done = ::syscall(SYS_statx, fd, empty, AT_EMPTY_PATH, wanted, &x);
    if (done != 0 && errno == EFAULT && kind == 0) {
      done = ::syscall(SYS_statx, fd, "", AT_EMPTY_PATH, wanted, &x);
      if (done == 0) statx_kind.store(1, std::memory_order_relaxed);
    }
    if (done == 0) {
      from_statx(x, out.st);
      out.mount_id = (x.stx_mask & STATX_MNT_ID_UNIQUE) != 0 ? x.stx_mnt_id : 0;
      return 0;
    }
    if (errno != ENOSYS && errno != EPERM) return -1;
    statx_kind.store(2, std::memory_order_relaxed);
  }
  out.mount_id = 0;
  return sys::fstat_descriptor(fd, &out.st);
}

bool needs_filesystem_check(const Description& file) noexcept {
  if (!may_be_kernel_interface(file.st)) return false;
  if (file.mount_id == 0) return true;
  for (const auto& slot : storage_mounts) {
    if (slot.load(std::memory_order_relaxed) == file.mount_id) return false;
  }
  return true;
}

void remember_storage(const Description& file) noexcept {
  if (file.mount_id == 0) return;
  const unsigned slot = next_storage_slot.fetch_add(1, std::memory_order_relaxed) % storage_slots;
  storage_mounts[slot].store(file.mount_id, std::memory_order_relaxed);
}

std::optional<Error> refuse(const std::filesystem::path& path, const struct stat& st,
                            const std::optional<fstype::Kind>& kind) {
  if (S_ISLNK(st.st_mode)) {
    return Error::failure(ErrorKind::symlink, "open", path, sys::errno_code(ELOOP),
                          "is a symbolic link; refusing to follow it");
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::failure(
        ErrorKind::not_regular_file, "open", path, sys::errno_code(EINVAL),
        std::string("refusing a lock file that is ") + file_type_name(st.st_mode));
  }
  if (kind) {
    if (auto why = fstype::refusal(*kind))
      return Error::failure(ErrorKind::kernel_interface, "open", path, sys::errno_code(EINVAL),
                            *why);
  }
  return std::nullopt;
}

bool may_be_kernel_interface(const struct stat& st) noexcept { return ::major(st.st_dev) == 0; }

}  // namespace pidlock::lock_file
