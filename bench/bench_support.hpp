// Shared setup for the benchmarks: where to put lock files, and processes that hold locks.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace pidlock::bench {

// The two filesystems every cycle is measured on. Override with PIDLOCK_BENCH_TMPFS and
// PIDLOCK_BENCH_DISK.
inline std::filesystem::path tmpfs_dir() {
  const char* dir = std::getenv("PIDLOCK_BENCH_TMPFS");
  return dir != nullptr ? dir : "/dev/shm";
}
inline std::filesystem::path disk_dir() {
  const char* dir = std::getenv("PIDLOCK_BENCH_DISK");
  return dir != nullptr ? dir : "/var/tmp";
}
inline std::filesystem::path dir_for(int filesystem) {
  return filesystem == 0 ? tmpfs_dir() : disk_dir();
}
inline const char* fs_name(int filesystem) { return filesystem == 0 ? "tmpfs" : "disk"; }

// A unique path in `dir` for this benchmark run.
std::filesystem::path scratch(const std::filesystem::path& dir, const std::string& name);

// Now on the monotonic clock (steady_clock's), in nanoseconds: a plain number for shared memory.
std::int64_t now_ns();

// Sleeps while `word` holds `value`, 50 ms at most (a missed wake-up costs a benchmark time, never
// a hang); and wakes every process that sleeps on `word`. For words in shared memory.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t value);
void futex_wake_all(std::atomic<std::uint32_t>& word);

// How many processes the kernel lists as blocked on a flock of the inode `ino` ("->" lines of
// /proc/locks). (The inode number alone: the scratch files live on two filesystems, and a
// stray match only makes a benchmark wait a little longer, never measure wrong.)
int blocked_on(ino_t ino);

// A child process holding an exclusive flock on `path` (and, when `unrelated` > 0, that many
// locks on other files), until destroyed; then the files it made are removed.
class HeldElsewhere {
 public:
  HeldElsewhere(const std::filesystem::path& path, int unrelated);
  ~HeldElsewhere();
  HeldElsewhere(const HeldElsewhere&) = delete;
  HeldElsewhere& operator=(const HeldElsewhere&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int release_ = -1;
  std::filesystem::path path_;
  std::filesystem::path unrelated_dir_;
};

// `count` child processes that do nothing until destroyed: a machine busy with processes that
// have nothing to do with the lock (each has the usual few descriptors open).
class IdleProcesses {
 public:
  explicit IdleProcesses(int count);
  ~IdleProcesses();
  IdleProcesses(const IdleProcesses&) = delete;
  IdleProcesses& operator=(const IdleProcesses&) = delete;

 private:
  std::vector<pid_t> pids_;
  int release_ = -1;
};

}  // namespace pidlock::bench
