// Filesystems told by their statfs magic number, and the refusal or warning each kind earns.
#include "fstype.hpp"

#include <sys/vfs.h>

#include <array>
#include <cstdio>

#include "pidlock/pidlock.hpp"

namespace pidlock::fstype {
namespace {

struct Known {
  unsigned long magic;
  const char* name;
  bool network;
  bool kernel_interface;
};

// Magic numbers from <linux/magic.h> and the filesystems' own sources.
constexpr std::array<Known, 43> known{{
    {0xEF53, "ext4", false, false},
    {0x01021994, "tmpfs", false, false},
    {0x58465342, "xfs", false, false},
    {0x9123683E, "btrfs", false, false},
    {0x2FC12FC1, "zfs", false, false},
    {0xF2F52010, "f2fs", false, false},
    {0x794C7630, "overlayfs", false, false},
    {0x858458F6, "ramfs", false, false},
    {0x4d44, "vfat", false, false},
    {0x5346544E, "ntfs", false, false},
    {0x01161970, "gfs2", false, false},
    {0x7461636f, "ocfs2", false, false},
    {0xCA451A4E, "bcachefs", false, false},
    {0x3153464a, "jfs", false, false},
    {0x52654973, "reiserfs", false, false},
    {0x958458f6, "hugetlbfs", false, false},
    {0x6969, "nfs", true, false},
    {0x65735546, "fuse", true, false},
    {0xFF534D42, "cifs", true, false},
    {0xFE534D42, "smb2", true, false},
    {0x517B, "smb", true, false},
    {0x00C36400, "ceph", true, false},
    {0x01021997, "9p", true, false},
    {0x5346414F, "afs", true, false},
    {0x9fa0, "proc", false, true},
    {0x62656572, "sysfs", false, true},
    {0x27e0eb, "cgroup", false, true},
    {0x63677270, "cgroup2", false, true},
    {0x64626720, "debugfs", false, true},
    {0x73636673, "securityfs", false, true},
    {0x74726163, "tracefs", false, true},
    {0x62656570, "configfs", false, true},
    {0xcafe4a11, "bpf", false, true},
    {0xde5e81e4, "efivarfs", false, true},
    {0x6165676C, "pstore", false, true},
    {0xf97cff8c, "selinuxfs", false, true},
    {0x43415d53, "smackfs", false, true},
    {0x42494e4d, "binfmt_misc", false, true},
    {0x65735543, "fusectl", false, true},
    {0x19800202, "mqueue", false, true},
    {0x1cd1, "devpts", false, true},
    {0x6e736673, "nsfs", false, true},
    {0x67596969, "rpc_pipefs", false, true},
}};

}  // namespace

Kind classify(long magic) {
  const auto key = static_cast<unsigned long>(magic) & 0xFFFFFFFFUL;
  for (const auto& entry : known) {
    if (entry.magic == key) return {entry.name, entry.network, entry.kernel_interface};
  }
  std::array<char, 24> hex{};
  (void)std::snprintf(hex.data(), hex.size(), "0x%lx", key);
  return {hex.data(), false, false};
}

std::optional<Kind> of_descriptor(int fd) {
  struct statfs info {};
  if (::fstatfs(fd, &info) != 0) return std::nullopt;
  return classify(static_cast<long>(info.f_type));
}

std::optional<std::string> refusal(const Kind& kind) {
  if (!kind.kernel_interface) return std::nullopt;
  return "refusing a lock file on " + kind.name +
         ", a kernel interface rather than storage: writing a PID there would change the "
         "kernel's settings";
}

std::optional<std::string> warning(const Kind& kind) {
  if (!kind.network) return std::nullopt;
  return "the lock file is on " + kind.name +
         ", where flock is not reliable across hosts: processes on other machines may not see "
         "the lock";
}

}  // namespace pidlock::fstype

namespace pidlock {

std::optional<std::string> unreliable_filesystem(const std::filesystem::path& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) return std::nullopt;
  return fstype::warning(fstype::classify(static_cast<long>(info.f_type)));
}

}  // namespace pidlock
