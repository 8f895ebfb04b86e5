// Timed waits: handed over the moment the lock frees, bounded by the deadline, invisible to the
// caller's signal handling, and safe with threads.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
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

// Every child process of ours, running or a zombie, whichever of our threads started it. (Read
// from each process's stat: /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN.)
std::set<pid_t> our_children() {
  std::set<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = test::read_text(entry.path() / "stat");
    const auto after_name = stat.rfind(')');
    if (after_name == std::string::npos) continue;  // gone meanwhile
    char state = 0;
    pid_t parent = 0;
    std::istringstream fields(stat.substr(after_name + 1));
    if (fields >> state >> parent && parent == ::getpid()) children.insert(std::stoi(name));
  }
  return children;
}

// The helper process of a wait of ours, once it blocks on `path`; 0 if none shows up.
pid_t our_helper_waiting_on(const std::filesystem::path& path) {
  pid_t helper = 0;
  test::eventually([&] {
    auto status = inspect(path);
    if (!status) return false;
    for (const auto& waiter : status->waiters) {
      if (waiter.parent == ::getpid()) helper = waiter.pid;
    }
    return helper != 0;
  });
  return helper;
}

// Asked of a real process, util-linux flock(1), as any other locker would ask.
bool someone_holds(const std::filesystem::path& path) {
  const auto probe = test::run({test::flock_binary, "-n", path.string(), "true"});
  EXPECT_TRUE(probe.code == 0 || probe.code == 1) << probe.err;
  return probe.code == 1;
}

std::string status_field(pid_t pid, const std::string& name) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(name + ":\t", 0) == 0) return line.substr(name.size() + 2);
  }
  return {};
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
  EXPECT_EQ(our_children(), std::set<pid_t>{holder.pid()});  // the helper is gone, not a zombie
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
  std::thread waiter(
      [&] { acquired = static_cast<bool>(Lock::acquire(dir / "l", waiting(wait_forever))); });
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  holder.close_stdin();
  waiter.join();
  EXPECT_TRUE(acquired);
}

// The first report comes at the start, the next ones during the wait; once one of those has named
// the holder, the holder goes, and the wait ends with the lock. (A wait of 150 ms, as this once
// was, could end before a late second report on a loaded machine.)
TEST(Wait, ReportsProgressWithTheHolder) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(10s);
  options.progress_interval = 50ms;
  int calls = 0;
  pid_t seen = 0;
  options.on_wait = [&](std::chrono::nanoseconds waited, const std::optional<Holder>& h) {
    ++calls;
    if (waited == 0ns || seen != 0) return;  // the start, or after the holder was let go
    seen = h ? h->pid : -1;
    holder.close_stdin();
  };
  auto lock = Lock::acquire(dir / "l", options);
  EXPECT_TRUE(lock) << lock.error().message();
  EXPECT_GE(calls, 2);  // at the start, and at least once more during the wait
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
  for (int sig = 1; sig < NSIG; ++sig)
    ::sigaction(sig, nullptr, &before[static_cast<std::size_t>(sig)]);
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

// --- The helper: shares our memory, blocks every signal, is never left behind. ---

TEST(Wait, TheHelperSharesTheCallersMemoryAndBlocksEverySignal) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  auto marker = std::make_unique<std::atomic<std::uint64_t>>(0);
  std::thread waiter([&] { EXPECT_TRUE(Lock::acquire(dir / "l", waiting(60s))); });
  const pid_t helper = our_helper_waiting_on(dir / "l");
  ASSERT_GT(helper, 0);
  // Written after the helper started: in a copy of our memory it would still read 0.
  constexpr std::uint64_t written = 0x5eed'cafe'f00d'0001;
  marker->store(written);
  const auto memory_file = "/proc/" + std::to_string(helper) + "/mem";
  const int memory = ::open(memory_file.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(memory, 0) << std::strerror(errno);
  std::uint64_t seen = 0;
  const auto address = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(marker.get()));
  EXPECT_EQ(::pread(memory, &seen, sizeof seen, address), static_cast<ssize_t>(sizeof seen));
  ::close(memory);
  EXPECT_EQ(seen, written);
  // All but SIGKILL and SIGSTOP, which no mask holds: the two glibc keeps for itself (32, 33) too.
  EXPECT_EQ(status_field(helper, "SigBlk"), "fffffffffffbfeff");
  holder.close_stdin();
  waiter.join();
}

TEST(Wait, AThrowingOnWaitEndsTheWaitWithAnErrorAndLeavesNoHelper) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(60s);
  options.progress_interval = 5ms;
  options.on_wait = [](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
    if (waited > 0ns) throw std::runtime_error("the progress bar broke");  // the helper waits now
  };
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().kind(), ErrorKind::cancelled);
  EXPECT_EQ(lock.error().operation(), "on_wait");
  EXPECT_EQ(lock.error().code(), std::errc::operation_canceled);
  EXPECT_NE(lock.error().message().find("the progress bar broke"), std::string::npos)
      << lock.error().message();
  EXPECT_EQ(our_children(), std::set<pid_t>{holder.pid()});
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_FALSE(someone_holds(dir / "l"));  // no helper lived on to take it
}

TEST(Wait, AnOnWaitThrowingSomethingElseIsAnErrorToo) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(60s);
  options.on_wait = [](std::chrono::nanoseconds, const std::optional<Holder>&) { throw 42; };
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().operation(), "on_wait");
  EXPECT_NE(lock.error().message().find("not a std::exception"), std::string::npos);
}

struct CancelledWait {
  std::filesystem::path path;
  std::atomic<bool> returned{false};
};

void* wait_until_cancelled(void* argument) {
  auto* wait = static_cast<CancelledWait*>(argument);
  auto lock = Lock::acquire(wait->path, waiting(60s));
  wait->returned = true;  // not reached: the thread is cancelled while it waits
  return nullptr;
}

TEST(Wait, ACancelledThreadLeavesNoHelperAndTakesNoLock) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  CancelledWait wait{dir / "l"};
  pthread_t thread{};
  ASSERT_EQ(::pthread_create(&thread, nullptr, wait_until_cancelled, &wait), 0);
  const pid_t helper = our_helper_waiting_on(dir / "l");
  ASSERT_GT(helper, 0);
  ASSERT_EQ(::pthread_cancel(thread), 0);
  void* result = nullptr;
  ASSERT_EQ(::pthread_join(thread, &result), 0);
  EXPECT_EQ(result, PTHREAD_CANCELED);
  EXPECT_FALSE(wait.returned);
  EXPECT_EQ(our_children(), std::set<pid_t>{holder.pid()});
  EXPECT_EQ(::kill(helper, 0), -1);  // reaped, not a zombie
  EXPECT_TRUE(someone_holds(dir / "l"));
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_FALSE(someone_holds(dir / "l"));
}

// --- The grant: the caller learns of it from the helper at once, not from the helper's exit. ---

// Holds `helper` at the end of its life: a tracer process stops it as it enters exit_group (after
// its flock was granted and it said so) and does not let it go on; only a SIGKILL ends it there
// (or ends it earlier). Prints "seized" once tracing, and how the helper ended: "killed" by
// SIGKILL, or "exited" by itself, which it cannot do once held. It waits for the helper until
// it is gone (a tracee's parent can reap it only then), and exits.
Child exit_holding_tracer(pid_t helper) {
  return Child::fork([helper] {
    // Inherited descriptors (another child's stdin pipe, say) would keep those pipes open.
    ::close_range(3, ~0U, 0);
    if (::ptrace(PTRACE_SEIZE, helper, nullptr, PTRACE_O_TRACESYSGOOD) != 0) return 2;
    // Into a stop, from which it runs on from system call to system call. Its flock is restarted.
    if (::ptrace(PTRACE_INTERRUPT, helper, nullptr, nullptr) != 0) return 3;
    std::printf("seized\n");
    std::fflush(stdout);
    int status = 0;
    while (::waitpid(helper, &status, __WALL) == helper) {
      if (WIFEXITED(status) || WIFSIGNALED(status)) {
        const bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        std::printf("%s\n", killed ? "killed" : "exited");
        return 0;
      }
      if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
        __ptrace_syscall_info call{};
        ::ptrace(PTRACE_GET_SYSCALL_INFO, helper, sizeof call, &call);
        if (call.op == PTRACE_SYSCALL_INFO_ENTRY && call.entry.nr == SYS_exit_group) {
          continue;  // not let go on
        }
      }
      ::ptrace(PTRACE_SYSCALL, helper, nullptr, nullptr);
    }
    return 4;
  });
}

// A caller that waited for its helper's exit would wait as long as the helper is held there.
// The caller must hold the lock, and have reaped the helper, all the same.
TEST(Wait, TheCallerHoldsTheLockBeforeItsHelperHasExited) {
  if (::geteuid() != 0) GTEST_SKIP() << "tracing another process's child needs root";
  TempDir dir;
  Child holder = holder_child(dir / "l");
  std::atomic<bool> acquired{false};
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    acquired = static_cast<bool>(Lock::acquire(dir / "l", waiting(60s)));
    returned = true;
  });
  const pid_t helper = our_helper_waiting_on(dir / "l");
  ASSERT_GT(helper, 0);
  Child tracer = exit_holding_tracer(helper);
  EXPECT_EQ(tracer.read_line(), "seized");
  holder.close_stdin();
  const bool in_time = test::eventually([&] { return returned.load(); }, 10s);
  // Ended by the caller's SIGKILL after the grant: the caller did not wait for it to exit.
  EXPECT_EQ(tracer.read_line(), in_time ? "killed" : "killed (by this test)");
  if (!in_time) ::kill(helper, SIGKILL);  // waiting for the exit: end it, so that the test ends
  waiter.join();
  EXPECT_TRUE(in_time) << "the wait ended only when its helper had exited";
  EXPECT_TRUE(acquired);
  EXPECT_EQ(tracer.wait(), 0);
  EXPECT_EQ(::kill(helper, 0), -1);  // reaped, not a zombie
  EXPECT_EQ(our_children(), std::set<pid_t>{holder.pid()});
}

// on_wait runs on the calling thread, and may throw after the helper has been granted the lock
// and said so: the lock, which nobody will be handed, is let go, and the helper is reaped.
TEST(Wait, AnOnWaitThrowingAfterTheGrantLeavesNoHelperAndNoLock) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(60s);
  options.progress_interval = 5ms;
  pid_t helper = 0;
  options.on_wait = [&](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
    if (waited == 0ns) return;  // the first call comes before the helper starts
    helper = our_helper_waiting_on(dir / "l");
    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0);
    // The holder is gone and nobody waits: the helper holds the lock now, for us, and this
    // thread has not looked yet.
    EXPECT_TRUE(test::eventually([&] {
      auto status = inspect(dir / "l");
      return status && status->held && status->waiters.empty();
    }));
    throw std::runtime_error("gave up just too late");
  };
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().operation(), "on_wait");
  EXPECT_GT(helper, 0);
  EXPECT_EQ(our_children(), std::set<pid_t>{});
  EXPECT_FALSE(someone_holds(dir / "l"));
}

// A thread's waits share one helper stack, lent to one wait at a time: a wait started from
// on_wait, while the outer helper still runs on that stack, maps one of its own.
TEST(Wait, AWaitInsideOnWaitHasAHelperStackOfItsOwn) {
  TempDir dir;
  Child outer_holder = holder_child(dir / "outer");
  auto inner_held = Lock::acquire(dir / "inner");  // two acquires in one process conflict
  ASSERT_TRUE(inner_held);
  Options options = waiting(60s);
  options.progress_interval = 5ms;
  int inner_waits = 0;
  options.on_wait = [&](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
    if (waited == 0ns || inner_waits > 0) return;
    ++inner_waits;
    auto inner = Lock::acquire(dir / "inner", waiting(20ms));  // its helper starts and times out
    EXPECT_FALSE(inner);
    if (!inner) {
      EXPECT_TRUE(inner.error().held()) << inner.error().message();
    }
    outer_holder.close_stdin();  // the outer helper, still waiting, gets the lock next
  };
  auto lock = Lock::acquire(dir / "outer", options);
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(inner_waits, 1);
  EXPECT_EQ(outer_holder.wait(), 0);
  EXPECT_EQ(our_children(), std::set<pid_t>{});
  // And the next wait of this thread borrows the stack again.
  auto again = Lock::acquire(dir / "inner", waiting(20ms));
  EXPECT_FALSE(again);
}

// --- Options that used to spin or overflow. ---

TEST(Options, ANonPositiveProgressIntervalIsRefusedNamingTheOption) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  for (const auto interval : {0ns, -1ns, std::chrono::nanoseconds::min()}) {
    Options options = waiting(wait_forever);
    options.progress_interval = interval;
    int calls = 0;
    options.on_wait = [&](std::chrono::nanoseconds, const std::optional<Holder>&) { ++calls; };
    auto lock = Lock::acquire(dir / "l", options);
    ASSERT_FALSE(lock);
    EXPECT_FALSE(lock.error().held());
    EXPECT_EQ(lock.error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(lock.error().operation(), "options");
    EXPECT_EQ(lock.error().code(), std::errc::invalid_argument);
    EXPECT_NE(lock.error().message().find("Options::progress_interval must be positive"),
              std::string::npos)
        << lock.error().message();
    EXPECT_EQ(calls, 0);
  }
}

TEST(Options, ANonPositiveProgressIntervalIsRefusedEvenWhenTheLockIsFree) {
  TempDir dir;
  Options options;
  options.progress_interval = 0ns;
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().operation(), "options");
  EXPECT_FALSE(someone_holds(dir / "l"));
}

TEST(Options, AMaximalProgressIntervalReportsOnceAndKeepsTheDeadline) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(100ms);
  options.progress_interval = std::chrono::nanoseconds::max();
  int calls = 0;
  options.on_wait = [&](std::chrono::nanoseconds, const std::optional<Holder>&) { ++calls; };
  const auto start = std::chrono::steady_clock::now();
  auto lock = Lock::acquire(dir / "l", options);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held()) << lock.error().message();
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 30s);  // a wrapped next tick once made this wait run on past its deadline
  EXPECT_EQ(calls, 1);
}

TEST(Options, AWaitJustShortOfForeverNeitherWrapsNorSpins) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options = waiting(std::chrono::nanoseconds::max() - 1ns);
  options.progress_interval = std::chrono::nanoseconds::max() - 1ns;
  std::atomic<int> calls{0};
  options.on_wait = [&](std::chrono::nanoseconds, const std::optional<Holder>&) { ++calls; };
  std::atomic<bool> acquired{false};
  std::thread waiter([&] { acquired = static_cast<bool>(Lock::acquire(dir / "l", options)); });
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  holder.close_stdin();
  waiter.join();
  EXPECT_TRUE(acquired);
  EXPECT_EQ(calls, 1);
}

TEST(Options, TheMostNegativeWaitFailsAtOnceAsBusy) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  auto lock = Lock::acquire(dir / "l", waiting(std::chrono::nanoseconds::min()));
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held());
}

// --- Without a helper: forever and silent blocks in this process; a failed helper is named. ---

std::atomic<int> interruptions{0};

TEST(Wait, ForeverWithoutOnWaitBlocksInThisProcessThroughSignals) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  struct sigaction counting {};
  counting.sa_handler = [](int) { ++interruptions; };  // no SA_RESTART: flock sees EINTR
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGUSR2, &counting, &previous), 0);
  interruptions = 0;
  std::atomic<bool> acquired{false};
  std::thread waiter(
      [&] { acquired = static_cast<bool>(Lock::acquire(dir / "l", waiting(wait_forever))); });
  const auto blocked_here = [&] {
    auto status = inspect(dir / "l");
    return status && status->waiters.size() == 1 && status->waiters.front().pid == ::getpid();
  };
  ASSERT_TRUE(test::eventually(blocked_here));  // this process itself, no helper
  for (int sent = 0; sent < 20; ++sent) {
    ::pthread_kill(waiter.native_handle(), SIGUSR2);
    std::this_thread::sleep_for(2ms);  // pacing the signals, not synchronisation
  }
  EXPECT_TRUE(test::eventually(blocked_here));  // interrupted, and back in flock: not failed
  holder.close_stdin();
  waiter.join();
  ::sigaction(SIGUSR2, &previous, nullptr);
  EXPECT_TRUE(acquired);
  EXPECT_GT(interruptions, 0);  // (TSan runs the handler only once flock has returned for good)
}

constexpr uid_t nobody = 65534;

// Lets user nobody open the lock file.
void open_to_nobody(const TempDir& dir, const std::filesystem::path& file) {
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(file.c_str(), 0666), 0);
}

// Runs `body` in a forked child as user nobody, with RLIMIT_NPROC at 1: nobody runs this process
// at least, so there is no room for another. Exits 90 if it cannot get there. It keeps none of
// our descriptors, such as the pipe to a holder's stdin, whose closing must end that holder.
Child as_nobody_with_no_room_for_a_process(const std::function<int()>& body) {
  return Child::fork([body] {
    ::close_range(3, ~0U, 0);
    if (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0) return 90;
    const rlimit none_more{1, 1};
    if (::setrlimit(RLIMIT_NPROC, &none_more) != 0) return 90;
    return body();
  });
}

void print_outcome(const std::expected<Lock, Error>& lock) {
  if (lock) {
    std::printf("acquired\n");
  } else {
    std::printf("%s %d %s\n%s\n", lock.error().operation().c_str(), lock.error().code().value(),
                lock.error().held() ? "held" : "not-held", lock.error().message().c_str());
  }
  std::fflush(stdout);
}

TEST(Wait, AHelperThatCannotStartIsReportedAsCloneNotAsBusy) {
  if (::geteuid() != 0) GTEST_SKIP() << "becoming user nobody needs root";
  TempDir dir;
  Child holder = holder_child(dir / "l");
  open_to_nobody(dir, dir / "l");
  Child waiter = as_nobody_with_no_room_for_a_process([path = dir / "l"] {
    print_outcome(Lock::acquire(path, waiting(10s)));
    return 0;
  });
  EXPECT_EQ(waiter.read_line(), "clone " + std::to_string(EAGAIN) + " not-held");
  const auto message = waiter.read_line();
  const auto expected = "pidlock: clone " + (dir / "l").string() + ": " + std::strerror(EAGAIN);
  EXPECT_EQ(message.rfind(expected, 0), 0u) << message;
  EXPECT_EQ(waiter.wait(), 0);
}

TEST(Wait, ForeverWithoutOnWaitNeedsNoRoomForAHelper) {
  if (::geteuid() != 0) GTEST_SKIP() << "becoming user nobody needs root";
  TempDir dir;
  Child holder = holder_child(dir / "l");
  open_to_nobody(dir, dir / "l");
  Child waiter = as_nobody_with_no_room_for_a_process([path = dir / "l"] {
    print_outcome(Lock::acquire(path, waiting(wait_forever)));
    return 0;
  });
  ASSERT_TRUE(test::eventually([&] {
    auto status = inspect(dir / "l");
    return status && !status->waiters.empty() && status->waiters.front().pid == waiter.pid();
  }));
  holder.close_stdin();
  EXPECT_EQ(waiter.read_line(), "acquired");
  EXPECT_EQ(waiter.wait(), 0);
}

}  // namespace
}  // namespace pidlock
