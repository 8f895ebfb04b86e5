// Timed waits: handed over the moment the lock frees, bounded by the deadline, invisible to the
// caller's signal handling, and safe with threads.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::TempDir;

Child holder_child(const std::filesystem::path& path) { return test::lock_holder(path); }

Options waiting(std::chrono::nanoseconds wait) {
  Options options;
  options.wait = wait;
  return options;
}

TEST(Wait, TimesOutAsBusyNamingTheHolder) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  const auto start = std::chrono::steady_clock::now();
  auto lock = Lock::acquire(dir / "l", waiting(200ms));
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held());
  ASSERT_TRUE(lock.error().holder());
  EXPECT_EQ(lock.error().holder()->pid, holder.pid());
  EXPECT_GE(waited, 200ms);  // it did wait: the deadline is a floor, not a hint
}

TEST(Wait, IsHandedTheLockWhenTheHolderReleases) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  std::atomic<bool> acquired{false};
  std::thread waiter([&] {
    auto lock = Lock::acquire(dir / "l", waiting(60s));
    acquired = static_cast<bool>(lock);
  });
  // The waiter shows up in /proc/locks as blocked (through its helper) before we release.
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  holder.close_stdin();
  waiter.join();
  EXPECT_TRUE(acquired);
  EXPECT_EQ(test::read_text(dir / "l"), std::to_string(::getpid()) + "\n");
}

TEST(Wait, ForeverIsHandedTheLockToo) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  std::atomic<bool> acquired{false};
  std::thread waiter([&] { acquired = static_cast<bool>(Lock::acquire(dir / "l", waiting(wait_forever))); });
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  holder.close_stdin();
  waiter.join();
  EXPECT_TRUE(acquired);
}

TEST(Wait, ReportsProgressWithTheHolder) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(150ms);
  options.progress_interval = 50ms;
  int calls = 0;
  pid_t seen = 0;
  options.on_wait = [&](std::chrono::nanoseconds, const std::optional<Holder>& h) {
    ++calls;
    if (h) seen = h->pid;
  };
  EXPECT_FALSE(Lock::acquire(dir / "l", options));
  EXPECT_GE(calls, 2);  // at the start, and at least once more before the deadline
  EXPECT_EQ(seen, holder.pid());
}

std::atomic<int> sigchld_count{0};
std::atomic<int> sigusr1_count{0};

TEST(Wait, InstallsNoHandlerAndSendsTheCallerNoSigchld) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  struct sigaction counting {};
  counting.sa_handler = [](int) { ++sigchld_count; };
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGCHLD, &counting, &previous), 0);
  sigchld_count = 0;

  std::vector<struct sigaction> before(NSIG);
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, nullptr, &before[static_cast<std::size_t>(sig)]);
  EXPECT_FALSE(Lock::acquire(dir / "l", waiting(100ms)));
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction now {};
    ::sigaction(sig, nullptr, &now);
    EXPECT_EQ(now.sa_handler, before[static_cast<std::size_t>(sig)].sa_handler) << "signal " << sig;
  }
  EXPECT_EQ(sigchld_count, 0);
  // The helper was reaped by its pidfd: nothing is left for the caller's waitpid(-1).
  int status = 0;
  EXPECT_EQ(::waitpid(-1, &status, WNOHANG | __WALL), 0);  // only `holder` remains, running
  ::sigaction(SIGCHLD, &previous, nullptr);
}

TEST(Wait, SignalsDuringTheWaitNeitherFailItNorEndItEarly) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  struct sigaction counting {};
  counting.sa_handler = [](int) { ++sigusr1_count; };  // no SA_RESTART: syscalls see EINTR
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGUSR1, &counting, &previous), 0);
  sigusr1_count = 0;
  const pthread_t waiting_thread = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread interrupter([&] {
    while (!done) {
      ::pthread_kill(waiting_thread, SIGUSR1);
      std::this_thread::sleep_for(5ms);  // a signal storm, not synchronisation
    }
  });
  const auto start = std::chrono::steady_clock::now();
  auto lock = Lock::acquire(dir / "l", waiting(300ms));
  const auto waited = std::chrono::steady_clock::now() - start;
  done = true;
  interrupter.join();
  ::sigaction(SIGUSR1, &previous, nullptr);
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held()) << lock.error().message();
  EXPECT_GE(waited, 300ms);
  EXPECT_GT(sigusr1_count, 0);
}

TEST(Wait, ThreadsOfOneProcessExcludeEachOther) {
  TempDir dir;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  int counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto lock = Lock::acquire(dir / "l", waiting(60s));
        if (!lock) {
          ++overlaps;
          continue;
        }
        if (inside.fetch_add(1) != 0) ++overlaps;
        ++counter;  // guarded by the lock alone: TSan checks that it really is
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(overlaps, 0);
  EXPECT_EQ(counter, 100);
}

}  // namespace
}  // namespace pidlock
