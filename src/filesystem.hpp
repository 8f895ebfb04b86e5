// What kind of filesystem a lock file lives on, and whether flock means anything there.
#pragma once

#include <optional>
#include <string>

namespace pidlock::filesystem {

struct Kind {
  std::string name;     // "ext4", "tmpfs", "nfs", … or "0x…" when unknown
  bool network = false;  // flock is emulated, local-only or absent across hosts
};

// From statfs(2)'s f_type.
Kind classify(long magic);

// The warning an operator should read for a lock on such a filesystem, if any.
std::optional<std::string> warning(const Kind& kind);

}  // namespace pidlock::filesystem
