// What may be a lock file: the one rule that acquire() and inspect() both apply.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>

#include "fstype.hpp"
#include "pidlock/pidlock.hpp"

namespace pidlock::lock_file {

// Why the file at `path`, as fstat and fstatfs describe it, may not be a lock file: a symbolic
// link, anything but a regular file, or a file of a kernel interface (procfs, sysfs, cgroupfs…)
// where writing a PID would change the kernel's settings. Nothing when it may be one. `kind` is
// empty when the filesystem was not asked (see may_be_kernel_interface).
std::optional<Error> refuse(const std::filesystem::path& path, const struct stat& st,
                            const std::optional<fstype::Kind>& kind);

// Whether the file's filesystem needs asking: every kernel interface filesystem has an
// anonymous device (major 0), and block-device filesystems are never one.
bool may_be_kernel_interface(const struct stat& st) noexcept;

// An open file as the kernel describes it: its stat, and the mount it was opened through,
// by the mount's never-reused ID (statx STATX_MNT_ID_UNIQUE, Linux 6.8), or 0 where the kernel
// gives none.
struct Description {
  struct stat st {};
  std::uint64_t mount_id = 0;
};

// statx of the descriptor (fstat where statx is missing or forbidden). 0, or -1 with errno.
int describe(int fd, Description& out) noexcept;

// Whether the filesystem must be asked before the file may be written: on an anonymous device
// (may_be_kernel_interface), unless its mount was already found to be storage in this process.
// A mount keeps its superblock for life and its unique ID is never given to another mount, so
// the answer cannot go stale; a bare st_dev could (anonymous device numbers are reused).
bool needs_filesystem_check(const Description& file) noexcept;

// Notes the file's mount as storage, not a kernel interface (after fstatfs said so).
void remember_storage(const Description& file) noexcept;

}  // namespace pidlock::lock_file
