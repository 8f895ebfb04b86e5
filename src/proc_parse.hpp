// Parsers for the /proc files holder discovery reads. Pure functions over text, so that they can
// be tested on captured samples and fuzzed: the kernel's formats are stable, but a parser that
// trusts its input is one bad line away from a crash in the busy path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pidlock::proc {

// A file as /proc/locks names it: "fe:00:10952837" is major 0xfe, minor 0x00, inode 10952837.
struct FileId {
  unsigned major = 0;
  unsigned minor = 0;
  std::uint64_t inode = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};

enum class LockKind { flock, posix, ofd, lease, other };

// One entry of /proc/locks, or the value of a "lock:" line in /proc/<pid>/fdinfo/<fd>:
//   "1: FLOCK  ADVISORY  WRITE 2326 fe:00:10952837 0 EOF"
//   "1: -> FLOCK  ADVISORY  WRITE 2349 fe:00:10952837 0 EOF"   (blocked, waiting for the above)
struct LockLine {
  bool blocked = false;
  LockKind kind = LockKind::other;
  bool write = false;
  pid_t pid = 0;  // as the reader's PID namespace sees it; 0 or -1 when it cannot
  FileId file;
};

std::optional<LockLine> parse_lock_line(std::string_view line);

// Calls `visit` with each parsed line of a /proc/locks text; unparsable lines are skipped.
template <typename Visit>
void for_each_lock_line(std::string_view text, Visit&& visit) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (auto parsed = parse_lock_line(line)) visit(*parsed);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

// The parts of /proc/<pid>/fdinfo/<fd> we use.
struct FdInfo {
  std::optional<int> mount_id;         // "mnt_id:": the mount the file was opened through
  std::optional<std::uint64_t> inode;  // "ino:" (Linux 5.14 and later): the VFS inode number
  std::vector<LockLine> locks;         // "lock:" lines: locks held by this open file description
};

FdInfo parse_fdinfo(std::string_view text);

// The device number of the superblock behind mount `mount_id`, from /proc/<pid>/mountinfo
// ("36 35 0:39 / /mnt rw - btrfs /dev/loop0 rw"). This is the device /proc/locks names a file
// by; stat(2) may report another one (btrfs subvolumes, overlayfs).
struct Device {
  unsigned major = 0;
  unsigned minor = 0;
  friend bool operator==(const Device&, const Device&) = default;
};
std::optional<Device> mount_device(std::string_view mountinfo, int mount_id);

// The parts of /proc/<pid>/stat we use. The command name sits in parentheses and may itself
// contain spaces and parentheses, so fields are counted from the last ')'.
struct StatFields {
  std::string command;
  pid_t parent = 0;
  std::uint64_t start_ticks = 0;  // field 22: clock ticks since boot
};

std::optional<StatFields> parse_stat(std::string_view text);

// The parts of /proc/<pid>/status we use.
struct StatusFields {
  std::optional<uid_t> euid;  // "Uid:\treal\teffective\tsaved\tfs"
  // "NSpid:": the PID in the reader's namespace first, then in each nested one down to the
  // process's own; a process in a container recorded the last of these.
  std::vector<pid_t> namespace_pids;
};
StatusFields parse_status(std::string_view text);

// /proc/<pid>/task/<tid>/children: the PIDs the thread forked, separated by spaces ("4 7 ");
// anything that is not a positive PID is skipped.
std::vector<pid_t> parse_children(std::string_view text);

// /proc/<pid>/cmdline: NUL-separated arguments, usually NUL-terminated.
std::vector<std::string> parse_cmdline(std::string_view text);

}  // namespace pidlock::proc
