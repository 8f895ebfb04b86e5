#include "bench_support.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

namespace pidlock::bench {

std::filesystem::path scratch(const std::filesystem::path& dir, const std::string& name) {
  return dir / ("pidlock-bench-" + std::to_string(::getpid()) + "-" + name);
}

std::int64_t now_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t value) {
  timespec timeout{0, 50'000'000};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, value, &timeout,
            nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1 << 30, nullptr,
            nullptr, 0);
}

int blocked_on(ino_t ino) {
  std::ifstream locks("/proc/locks");
  std::string inode = std::to_string(ino);  // built in place: GCC 12 warns falsely on ":" + s
  inode.insert(inode.begin(), ':');
  inode.push_back(' ');
  int blocked = 0;
  for (std::string line; std::getline(locks, line);) {
    if (line.find("->") != std::string::npos && line.find(inode) != std::string::npos) ++blocked;
  }
  return blocked;
}

HeldElsewhere::HeldElsewhere(const std::filesystem::path& path, int unrelated) : path_(path) {
  unrelated_dir_ = scratch(path.parent_path(), "unrelated");
  int ready[2];
  int release[2];
  if (::pipe(ready) != 0 || ::pipe(release) != 0) std::abort();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::close(ready[0]);
    ::close(release[1]);
    rlimit limit{static_cast<rlim_t>(unrelated + 64), static_cast<rlim_t>(unrelated + 64)};
    ::setrlimit(RLIMIT_NOFILE, &limit);
    std::filesystem::create_directories(unrelated_dir_);
    for (int i = 0; i < unrelated; ++i) {
      const auto file = unrelated_dir_ / std::to_string(i);
      const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(2);
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(2);
    const std::string record = std::to_string(::getpid()) + "\n";
    [[maybe_unused]] auto w = ::pwrite(fd, record.data(), record.size(), 0);
    [[maybe_unused]] auto r = ::write(ready[1], "r", 1);
    char c;
    [[maybe_unused]] auto n = ::read(release[0], &c, 1);
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char c;
  if (::read(ready[0], &c, 1) != 1) std::abort();
  ::close(ready[0]);
  release_ = release[1];
}

HeldElsewhere::~HeldElsewhere() {
  ::close(release_);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  std::error_code ignored;
  std::filesystem::remove_all(unrelated_dir_, ignored);
  std::filesystem::remove(path_, ignored);  // the crowds' files were left behind
}

IdleProcesses::IdleProcesses(int count) {
  int release[2];
  if (::pipe2(release, O_CLOEXEC) != 0) std::abort();
  for (int i = 0; i < count; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) std::abort();
    if (pid == 0) {
      ::close(release[1]);
      char c;
      [[maybe_unused]] auto n = ::read(release[0], &c, 1);  // EOF when the set is destroyed
      ::_exit(0);
    }
    pids_.push_back(pid);
  }
  ::close(release[0]);
  release_ = release[1];
}

IdleProcesses::~IdleProcesses() {
  ::close(release_);
  for (const pid_t pid : pids_) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
}

}  // namespace pidlock::bench
