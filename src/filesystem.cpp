#include "filesystem.hpp"

#include <sys/vfs.h>

#include <array>
#include <cstdio>

#include "pidlock/pidlock.hpp"

namespace pidlock::filesystem {
namespace {

struct Known {
  unsigned long magic;
  const char* name;
  bool network;
};

// Magic numbers from <linux/magic.h> and the filesystems' own sources.
constexpr std::array<Known, 20> known{{
    {0xEF53, "ext4", false},       {0x01021994, "tmpfs", false},  {0x58465342, "xfs", false},
    {0x9123683E, "btrfs", false},  {0x2FC12FC1, "zfs", false},    {0xF2F52010, "f2fs", false},
    {0x794C7630, "overlayfs", false}, {0x858458F6, "ramfs", false}, {0x4d44, "vfat", false},
    {0x5346544E, "ntfs", false},   {0x01161970, "gfs2", false},   {0x7461636f, "ocfs2", false},
    {0x6969, "nfs", true},         {0x65735546, "fuse", true},    {0xFF534D42, "cifs", true},
    {0xFE534D42, "smb2", true},    {0x517B, "smb", true},         {0x00C36400, "ceph", true},
    {0x01021997, "9p", true},      {0x5346414F, "afs", true},
}};

}  // namespace

Kind classify(long magic) {
  const auto key = static_cast<unsigned long>(magic) & 0xFFFFFFFFUL;
  for (const auto& entry : known) {
    if (entry.magic == key) return {entry.name, entry.network};
  }
  std::array<char, 24> hex{};
  (void)std::snprintf(hex.data(), hex.size(), "0x%lx", key);
  return {hex.data(), false};
}

std::optional<std::string> warning(const Kind& kind) {
  if (!kind.network) return std::nullopt;
  return "the lock file is on " + kind.name +
         ", where flock is not reliable across hosts: processes on other machines may not see "
         "the lock";
}

}  // namespace pidlock::filesystem

namespace pidlock {

std::optional<std::string> unreliable_filesystem(const std::filesystem::path& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) return std::nullopt;
  return filesystem::warning(filesystem::classify(static_cast<long>(info.f_type)));
}

}  // namespace pidlock
