// What kind of filesystem a lock file lives on, and whether flock means anything there.
#pragma once

#include <optional>
#include <string>

namespace pidlock::fstype {

struct Kind {
  std::string name;      // "ext4", "tmpfs", "nfs", … or "0x…" when unknown
  bool network = false;  // flock is emulated, local-only or absent across hosts
  // A kernel interface rather than storage (procfs, sysfs, cgroupfs…): its "files" are
  // settings, and writing a PID into one changes the kernel's behaviour.
  bool kernel_interface = false;
};

// From statfs(2)'s f_type.
Kind classify(long magic);

// fstatfs(2) of a descriptor, classified; nothing when the call fails.
std::optional<Kind> of_descriptor(int fd);

// The warning an operator should read for a lock on such a filesystem, if any.
std::optional<std::string> warning(const Kind& kind);

// Why a lock file may not live there, if it may not: "refusing a lock file on proc, a kernel
// interface: …".
std::optional<std::string> refusal(const Kind& kind);

}  // namespace pidlock::fstype
