// Holder identity: the kernel's answer to "who holds it", in each way a lock can be held.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::TempDir;

std::string own_command() {
  std::string comm = test::read_text("/proc/self/comm");
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

TEST(Holder, OurOwnProcess) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_TRUE(status->holder);
  const Holder& h = *status->holder;
  EXPECT_EQ(h.pid, ::getpid());
  EXPECT_TRUE(h.inspectable);
  EXPECT_EQ(h.command, own_command());
  EXPECT_FALSE(h.cmdline.empty());
  EXPECT_EQ(h.uid, ::geteuid());
  EXPECT_TRUE(h.record_agrees);
  EXPECT_GE(h.held_for.count(), 0);
  EXPECT_EQ(status->record, Record::agrees);
}

TEST(Holder, AnotherProcessOfOurs) {
  TempDir dir;
  Child child = test::lock_holder(dir / "l");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, child.pid());
  EXPECT_TRUE(status->holder->record_agrees);
}

TEST(Holder, AFlockCommandWithAnEmptyFile) {
  TempDir dir;
  Child flock = Child::spawn({"flock", (dir / "l").string(), "sh", "-c", "echo ready; read _"});
  ASSERT_EQ(flock.read_line(), "ready");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, flock.pid());  // flock(1) took it; its sh child shares it
  EXPECT_EQ(status->holder->command, "flock");
  EXPECT_FALSE(status->recorded_pid);
  EXPECT_EQ(status->record, Record::absent);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().message().rfind("another installer is running (pid " +
                                             std::to_string(flock.pid()) + ", flock, for ",
                                         0),
            0u)
      << busy.error().message();
}

TEST(Holder, ARecordNamingAnotherLiveProcessIsStaleAndTheKernelWins) {
  TempDir dir;
  Child child = test::lock_holder(dir / "l");
  test::write_text(dir / "l", std::to_string(::getpid()) + "\n");  // a forged claim
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, child.pid());
  EXPECT_FALSE(status->holder->record_agrees);
  EXPECT_EQ(status->recorded_pid, ::getpid());
  EXPECT_EQ(status->record, Record::stale);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  ASSERT_TRUE(busy.error().holder());
  EXPECT_EQ(busy.error().holder()->pid, child.pid());
}

TEST(Holder, AKilledLockerWhoseForkedChildStillHoldsIt) {
  TempDir dir;
  // The locker forks a child that inherits the locked descriptor, reports it, and is killed.
  Child locker = Child::fork([path = dir / "l"] {
    auto lock = Lock::acquire(path);
    if (!lock) return 1;
    const pid_t heir = ::fork();
    if (heir == 0) {
      test::wait_for_eof_on_stdin();
      ::_exit(0);
    }
    std::printf("%d\n", heir);
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return 0;
  });
  const pid_t heir = std::stoi(locker.read_line());
  locker.signal(SIGKILL);
  EXPECT_EQ(locker.wait(), 128 + SIGKILL);

  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, heir);
  EXPECT_EQ(status->recorded_pid, locker.pid());
  EXPECT_EQ(status->record, Record::stale);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().message().rfind("another installer is running (pid " + std::to_string(heir), 0),
            0u)
      << busy.error().message();
  ::kill(heir, SIGKILL);
  EXPECT_TRUE(test::eventually([&] { return static_cast<bool>(Lock::acquire(dir / "l")); }));
}

TEST(Holder, AChildThatHasExecdHoldsItAfterTheLockerExits) {
  TempDir dir;
  Child locker = Child::fork([path = dir / "l"] {
    Options options;
    options.inheritable = true;
    auto lock = Lock::acquire(path, options);
    if (!lock) return 1;
    const pid_t heir = ::fork();
    if (heir == 0) {
      ::execlp("sh", "sh", "-c", "echo $$; read _", nullptr);
      ::_exit(127);
    }
    return 0;  // the locker exits; ~Lock closes its descriptor, the exec'd child keeps the lock
  });
  const pid_t heir = std::stoi(locker.read_line());
  EXPECT_EQ(locker.wait(), 0);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, heir);
  EXPECT_EQ(status->holder->command, "sh");
  EXPECT_EQ(status->holder->cmdline, (std::vector<std::string>{"sh", "-c", "echo $$; read _"}));
  EXPECT_EQ(status->record, Record::stale);
  ::kill(heir, SIGKILL);
}

TEST(Holder, WaitersAreListed) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Child waiter = Child::spawn({"flock", (dir / "l").string(), "true"});
  ASSERT_TRUE(test::eventually([&] {
    auto status = inspect(dir / "l");
    return status && status->waiters.size() == 1;
  }));
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->waiters.size(), 1u);
  EXPECT_EQ(status->waiters[0].pid, waiter.pid());
  EXPECT_EQ(status->waiters[0].command, "flock");
  EXPECT_EQ(status->waiters[0].parent, ::getpid());
  lock->release();
  EXPECT_EQ(waiter.wait(), 0);
}

TEST(Holder, ProcessesWeMayNotInspectAreReportedAsSuch) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");  // held by root
  ASSERT_TRUE(lock);
  ::chmod(dir.path().c_str(), 0755);
  Child viewer = Child::fork([path = dir / "l"] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    auto status = inspect(path);
    if (!status || !status->holder) return 3;
    std::printf("%d %d\n", status->holder->pid, status->holder->inspectable ? 1 : 0);
    return 0;
  });
  EXPECT_EQ(viewer.read_line(), std::to_string(::getpid()) + " 0");
  EXPECT_EQ(viewer.wait(), 0);
}

TEST(Holder, HeldForComesFromTheRecordWhenItAgrees) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  // Back-date the record by an hour: older than this process, so it cannot date the lock.
  const timespec times[2] = {{0, UTIME_OMIT}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir / "l").c_str(), times, 0), 0);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status && status->holder);
  EXPECT_LT(status->holder->held_for.count(), 3600);  // falls back to the process's age
}

}  // namespace
}  // namespace pidlock
