// The crash matrix: a process killed with SIGKILL at every system call of acquire, hold and
// release, and a waiter killed while it waits. After each kill the next acquire succeeds at
// once, the record never names a live process that does not hold the lock, and no file but the
// lock file was touched.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include "pidlock/pidlock.hpp"
#include "record.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::TempDir;

// Forks a child that stops itself, then acquires, holds and releases the lock on `path`, with
// every system call from the stop on observed through ptrace. With `kill_at` = k the child is
// killed at the entry of its k-th system call; with 0 it runs to the end. Returns the names of
// the system calls seen.
std::vector<long> run_traced(const std::filesystem::path& path, int kill_at) {
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    ::raise(SIGSTOP);
    {
      auto lock = Lock::acquire(path);
      if (!lock) ::_exit(3);
    }
    ::_exit(0);
  }
  std::vector<long> calls;
  int status = 0;
  ::waitpid(child, &status, 0);  // the SIGSTOP
  ::ptrace(PTRACE_SETOPTIONS, child, nullptr, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
  bool entering = true;
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, child, nullptr, nullptr) != 0) break;
    if (::waitpid(child, &status, 0) != child || WIFEXITED(status) || WIFSIGNALED(status)) break;
    if (!WIFSTOPPED(status) || WSTOPSIG(status) != (SIGTRAP | 0x80)) continue;
    if (entering) {
      user_regs_struct regs{};
      ::ptrace(PTRACE_GETREGS, child, nullptr, &regs);
      calls.push_back(static_cast<long>(regs.orig_rax));
      if (static_cast<int>(calls.size()) == kill_at) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        break;
      }
    }
    entering = !entering;
  }
  if (!WIFEXITED(status) && !WIFSIGNALED(status)) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  return calls;
}

const char* name_of(long call) {
  static const std::map<long, const char*> names{
      {SYS_openat, "openat"},         {SYS_open, "open"},
      {SYS_flock, "flock"},           {SYS_fstat, "fstat"},
      {SYS_newfstatat, "newfstatat"}, {SYS_pwrite64, "pwrite64"},
      {SYS_ftruncate, "ftruncate"},   {SYS_close, "close"},
      {SYS_pread64, "pread64"},       {SYS_statx, "statx"},
      {SYS_getpid, "getpid"},         {SYS_exit_group, "exit_group"},
      {SYS_mkdir, "mkdir"},           {SYS_fdatasync, "fdatasync"}};
  const auto it = names.find(call);
  return it == names.end() ? "other" : it->second;
}

void expect_recovered(const TempDir& dir, const std::string& where) {
  // The record may name a dead process (the one just killed, or the last holder), never a live
  // one that does not hold the lock.
  if (std::filesystem::exists(dir / "l")) {
    if (auto pid = record::parse(test::read_text(dir / "l"))) {
      EXPECT_TRUE(::kill(*pid, 0) != 0 || *pid == ::getpid())
          << where << ": record names live pid " << *pid;
    }
  }
  auto next = Lock::acquire(dir / "l");  // no wait: it must be free at once
  EXPECT_TRUE(next) << where << ": " << (next ? "" : next.error().message());
  std::vector<std::string> entries;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    entries.push_back(entry.path().filename());
  }
  EXPECT_EQ(entries, std::vector<std::string>{"l"}) << where;
}

// Each system call of acquire, hold and release is a kill point: before the lock (openat,
// flock), after the lock but before the record (statx, newfstatat, and the pread64 that reads a
// non-empty old record), mid-record (between pwrite64 and ftruncate, which runs when the old
// record was longer), while held and during release (flock LOCK_UN, close). Run from an empty
// file and from a longer record left by a dead holder.
class CrashMatrix : public testing::TestWithParam<std::string> {};

TEST_P(CrashMatrix, KilledAtEverySystemCallTheNextAcquireSucceedsAtOnce) {
  const std::string initial = GetParam();
  std::vector<long> calls;
  {
    TempDir dir;
    if (!initial.empty()) test::write_text(dir / "l", initial);
    calls = run_traced(dir / "l", 0);
  }
  ASSERT_GE(std::count(calls.begin(), calls.end(), SYS_flock), 2);  // lock and unlock were seen
  ASSERT_GE(std::count(calls.begin(), calls.end(), SYS_pwrite64), 1);
  if (!initial.empty()) {
    ASSERT_GE(std::count(calls.begin(), calls.end(), SYS_ftruncate), 1);  // mid-record is a point
  }
  std::string names;
  for (int k = 1; k <= static_cast<int>(calls.size()); ++k) {
    TempDir dir;
    if (!initial.empty()) test::write_text(dir / "l", initial);
    run_traced(dir / "l", k);
    const char* name = name_of(calls[static_cast<std::size_t>(k - 1)]);
    names += std::string(names.empty() ? "" : " ") + name;
    expect_recovered(dir, "killed at system call " + std::to_string(k) + " (" + name + ")");
  }
  RecordProperty("kill_points", static_cast<int>(calls.size()));
  std::printf("kill points survived: %zu: %s\n", calls.size(), names.c_str());
}

std::string matrix_name(const testing::TestParamInfo<std::string>& param) {
  return param.param.empty() ? "FromAnEmptyFile" : "OverALongerRecord";
}

INSTANTIATE_TEST_SUITE_P(Records, CrashMatrix,
                         testing::Values(std::string(),
                                         // A record longer than any PID's, blanks around it.
                                         std::string("   4194304   \n")),
                         matrix_name);

TEST(Crash, WaiterKilledWhileWaitingLeavesNothingBehind) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Child waiter = Child::fork([path = dir / "l"] {
    Options options;
    options.wait = std::chrono::seconds(60);
    return Lock::acquire(path, options) ? 0 : 1;
  });
  pid_t helper = 0;
  ASSERT_TRUE(test::eventually([&] {
    auto status = inspect(dir / "l");
    if (!status || status->waiters.empty()) return false;
    helper = status->waiters.front().pid;
    return status->waiters.front().parent == waiter.pid();
  }));
  waiter.signal(SIGKILL);
  EXPECT_EQ(waiter.wait(), 128 + SIGKILL);
  // The helper dies with its parent (PR_SET_PDEATHSIG): no orphan keeps waiting, or wins the
  // lock for nobody.
  EXPECT_TRUE(test::eventually([&] { return ::kill(helper, 0) != 0; }));
  lock->release();
  expect_recovered(dir, "waiter killed");
}

TEST(Crash, HolderKilledWhileHoldingHandsTheLockToAWaiter) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = Child::fork([path = dir / "l"] {
    Options options;
    options.wait = std::chrono::seconds(60);
    return Lock::acquire(path, options) ? 0 : 1;
  });
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  holder.signal(SIGKILL);
  EXPECT_EQ(waiter.wait(), 0);
}

}  // namespace
}  // namespace pidlock
