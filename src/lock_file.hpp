// What may be a lock file: the one rule that acquire() and inspect() both apply.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <optional>

#include "filesystem.hpp"
#include "pidlock/pidlock.hpp"

namespace pidlock::lock_file {

// Why the file at `path`, as fstat and fstatfs describe it, may not be a lock file: a symbolic
// link, anything but a regular file, or a file of a kernel interface (procfs, sysfs, cgroupfs…)
// where writing a PID would change the kernel's settings. Nothing when it may be one. `kind` is
// empty when the filesystem was not asked (see may_be_kernel_interface).
std::optional<Error> refuse(const std::filesystem::path& path, const struct stat& st,
                            const std::optional<filesystem::Kind>& kind);

// Whether the file's filesystem needs asking: every kernel interface filesystem has an
// anonymous device (major 0), and block-device filesystems are never one.
bool may_be_kernel_interface(const struct stat& st) noexcept;

}  // namespace pidlock::lock_file
