// Timed waits where the helper cannot be cloned, forced by a seccomp filter in a forked test
// child: a profile that refuses the helper's clone, a kernel without pidfds, a process that may
// start no other. The wait's key behaviours hold through each fallback.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::TempDir;

// Where the wait runs, and the way it must then wait.
enum class Where {
  // A seccomp profile refuses a clone with CLONE_PIDFD (EPERM) and clone3 (ENOSYS, as container
  // runtimes answer it): the forked waiter, reached through a pidfd.
  clone_with_pidfd_refused,
  // A kernel before 5.3: no pidfd_open, pidfd_send_signal, waitid(P_PIDFD), clone3 or
  // close_range (ENOSYS, EINVAL). A clone with CLONE_PIDFD kills the process: it must never be
  // tried there. The forked waiter, its exit told by a pipe, closing descriptors one by one.
  kernel_without_pidfds,
  // A profile that lets threads be made but no process (a clone without CLONE_THREAD, fork and
  // vfork refused): no process waits; the caller polls.
  no_process_may_be_created,
  // A profile that kills whoever asks for PR_SET_PDEATHSIG (SIGSYS): the helper and then the
  // forked waiter start and die at once. (Not one of the three above: a test of its own.)
  a_waiting_process_dies_at_start,
};

std::string where_name(const testing::TestParamInfo<Where>& info) {
  switch (info.param) {
    case Where::clone_with_pidfd_refused:
      return "CloneWithPidfdRefused";
    case Where::kernel_without_pidfds:
      return "KernelWithoutPidfds";
    case Where::no_process_may_be_created:
      return "NoProcessMayBeCreated";
    case Where::a_waiting_process_dies_at_start:
      return "AWaitingProcessDiesAtStart";
  }
  return "unknown";
}

bool a_process_waits(Where where) { return where != Where::no_process_may_be_created; }

// One rule of a filter: the system call `nr`, optionally only when its first argument has any of
// `mask`'s bits (`when_set`) or none of them, or equals `equals`; then `action`.
struct Rule {
  long nr;
  std::uint32_t action;
  enum class Arg { any, any_bit_set, no_bit_set, equals } arg = Arg::any;
  std::uint32_t value = 0;
};

std::uint32_t fails_with(int error) {
  return SECCOMP_RET_ERRNO | static_cast<std::uint32_t>(error);
}

std::vector<Rule> rules_for(Where where) {
  using Arg = Rule::Arg;
  switch (where) {
    case Where::clone_with_pidfd_refused:
      return {{SYS_clone, fails_with(EPERM), Arg::any_bit_set, CLONE_PIDFD},
              {SYS_clone3, fails_with(ENOSYS)}};
    case Where::kernel_without_pidfds:
      return {{SYS_clone, SECCOMP_RET_KILL_PROCESS, Arg::any_bit_set, CLONE_PIDFD},
              {SYS_clone3, fails_with(ENOSYS)},
              {SYS_pidfd_open, fails_with(ENOSYS)},
              {SYS_pidfd_send_signal, fails_with(ENOSYS)},
              {SYS_close_range, fails_with(ENOSYS)},
              {SYS_waitid, fails_with(EINVAL), Arg::equals, 3 /* P_PIDFD */}};
    case Where::no_process_may_be_created:
      return {
        {SYS_clone, fails_with(EPERM), Arg::no_bit_set, CLONE_THREAD},
            {SYS_clone3, fails_with(ENOSYS)},
#if defined(SYS_fork)
            {SYS_fork, fails_with(EPERM)},
#endif
#if defined(SYS_vfork)
            {SYS_vfork, fails_with(EPERM)},
#endif
      };
    case Where::a_waiting_process_dies_at_start:
      return {{SYS_prctl, SECCOMP_RET_KILL_THREAD, Arg::equals, PR_SET_PDEATHSIG}};
  }
  return {};
}

// The rules as a classic BPF program: one block per rule, each loading the number again.
std::vector<sock_filter> program_for(const std::vector<Rule>& rules) {
  // The first argument's low 32 bits (every flag and value used here lives there).
  constexpr std::uint32_t arg0 =
      offsetof(seccomp_data, args) + (std::endian::native == std::endian::big ? 4 : 0);
  std::vector<sock_filter> program;
  for (const Rule& rule : rules) {
    const bool with_arg = rule.arg != Rule::Arg::any;
    program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
    const std::uint8_t past_the_rule = with_arg ? 3 : 1;
    program.push_back(
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(rule.nr), 0, past_the_rule));
    if (with_arg) {
      program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg0));
      switch (rule.arg) {
        case Rule::Arg::any_bit_set:
          program.push_back(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, rule.value, 0, 1));
          break;
        case Rule::Arg::no_bit_set:
          program.push_back(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, rule.value, 1, 0));
          break;
        default:
          program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, rule.value, 0, 1));
          break;
      }
    }
    program.push_back(BPF_STMT(BPF_RET | BPF_K, rule.action));
  }
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  return program;
}

// Whether the filter has the effect it stands for, asked without starting anything.
std::string filter_missing(Where where) {
  errno = 0;
  switch (where) {
    case Where::clone_with_pidfd_refused: {
      int pidfd = -1;
      if (::syscall(SYS_clone, CLONE_PIDFD, 0, &pidfd, 0, 0) == -1 && errno == EPERM) return {};
      return "a clone with CLONE_PIDFD was not refused";
    }
    case Where::kernel_without_pidfds:
      if (::syscall(SYS_pidfd_open, ::getpid(), 0) == -1 && errno == ENOSYS) return {};
      return "pidfd_open was not refused";
    case Where::no_process_may_be_created:
      if (::syscall(SYS_clone, 0, 0, 0, 0, 0) == -1 && errno == EPERM) return {};
      return "a clone without CLONE_THREAD was not refused";
    case Where::a_waiting_process_dies_at_start:
      return {};  // asking would kill the asker
  }
  return "unknown";
}

// Whether this kernel takes seccomp filters: qemu-user, for one, refuses them (it would filter
// itself). Asked once, of a forked child that installs a filter allowing everything.
bool filters_work() {
  static const bool work = [] {
    Child child = Child::fork([] {
      sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
      const sock_fprog program{1, &allow};
      return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
                     ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0
                 ? 0
                 : 1;
    });
    return child.wait() == 0;
  }();
  return work;
}

// Runs `body` in a forked child under the filter for `where`, with none of our descriptors but
// its standard three (the pipe to a holder's stdin, say, whose closing must end that holder). It
// prints "filtered" first, or why not and exits 125 where this kernel has no seccomp filters
// (qemu-user refuses them: it would filter itself), 126 where the filter is there without its
// effect.
Child under(Where where, const std::function<int()>& body) {
  return Child::fork([where, body] {
    ::close_range(3, ~0U, 0);
    const auto program = program_for(rules_for(where));
    const sock_fprog fprog{static_cast<unsigned short>(program.size()),
                           const_cast<sock_filter*>(program.data())};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
      std::printf("no seccomp filter here: %s\n", std::strerror(errno));
      return 125;
    }
    if (const auto missing = filter_missing(where); !missing.empty()) {
      std::printf("the filter is ineffective: %s\n", missing.c_str());
      return 126;
    }
    std::printf("filtered\n");
    std::fflush(stdout);
    return body();
  });
}

// Skips where this kernel (or emulator) takes no seccomp filter; fails where the filter is
// missing its effect.
#define ASSERT_FILTERED(child)                          \
  do {                                                  \
    const std::string first_line = (child).read_line(); \
    if (first_line.rfind("no seccomp", 0) == 0) {       \
      EXPECT_EQ((child).wait(), 125);                   \
      GTEST_SKIP() << first_line;                       \
    }                                                   \
    ASSERT_EQ(first_line, "filtered");                  \
  } while (false)

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// The children of this process, running or zombies.
std::vector<pid_t> our_children() {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = test::read_text(entry.path() / "stat");
    const auto after_name = stat.rfind(')');
    if (after_name == std::string::npos) continue;
    char state = 0;
    pid_t parent = 0;
    std::istringstream fields(stat.substr(after_name + 1));
    if (fields >> state >> parent && parent == ::getpid()) children.push_back(std::stoi(name));
  }
  return children;
}

std::string outcome(const std::expected<Lock, Error>& lock) {
  if (lock) return "acquired";
  return lock.error().operation() + " " + (lock.error().held() ? "held" : "not-held") + " " +
         lock.error().message();
}

// A wait of 60 s that says "waiting" once it is under way (its second report: the first comes
// before anything is started), reporting every 5 ms. Once, in all the copies of the options that
// a deferring reader's waits make.
Options waiting_and_saying_so(std::atomic<bool>* under_way = nullptr) {
  Options options;
  options.wait = 60s;
  options.progress_interval = 5ms;
  options.on_wait = [under_way, said = std::make_shared<bool>(false)](
                        std::chrono::nanoseconds waited, const std::optional<Holder>&) {
    if (waited == 0ns || *said) return;
    *said = true;
    say("waiting");
    if (under_way != nullptr)
      *under_way = true;  // after: a cancellation in say() would say it twice
  };
  return options;
}

// Who waits in the kernel's queue for `path`, as inspect() lists them.
std::vector<Waiter> kernel_waiters(const std::filesystem::path& path) {
  auto status = inspect(path);
  return status ? status->waiters : std::vector<Waiter>{};
}

class Fallback : public testing::TestWithParam<Where> {
 protected:
  void SetUp() override {
    if (!filters_work()) GTEST_SKIP() << "this kernel takes no seccomp filter";
  }
};

TEST_P(Fallback, IsHandedTheLockWhenTheHolderReleases) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l"] {
    auto lock = Lock::acquire(path, waiting_and_saying_so());
    say(outcome(lock));
    say(test::read_text(path));
    return 0;
  });
  ASSERT_FILTERED(waiter);
  ASSERT_EQ(waiter.read_line(), "waiting");
  if (a_process_waits(GetParam())) {
    // Queued in the kernel as a helper is: a process of the waiter's, named as one.
    ASSERT_TRUE(test::someone_waits(dir / "l"));
    const auto queued = kernel_waiters(dir / "l");
    ASSERT_EQ(queued.size(), 1u);
    EXPECT_EQ(queued.front().parent, waiter.pid());
    EXPECT_EQ(queued.front().command, "pidlock-wait");
  } else {
    EXPECT_TRUE(kernel_waiters(dir / "l").empty()) << "a process waits where none may be made";
  }
  holder.close_stdin();
  EXPECT_EQ(waiter.read_line(), "acquired");
  EXPECT_EQ(waiter.read_line(), std::to_string(waiter.pid()));
  EXPECT_EQ(waiter.wait(), 0);
  EXPECT_EQ(holder.wait(), 0);
}

TEST_P(Fallback, TimesOutAtTheDeadlineAsBusyNamingTheHolder) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l"] {
    Options options;
    options.wait = 200ms;
    const auto start = std::chrono::steady_clock::now();
    auto lock = Lock::acquire(path, options);
    const auto waited = std::chrono::steady_clock::now() - start;
    say(outcome(lock));
    say(!lock && lock.error().holder() ? std::to_string(lock.error().holder()->pid) : "nobody");
    say(waited >= 200ms ? "waited the whole 200 ms" : "ended early");
    say("children left: " + std::to_string(our_children().size()));
    return 0;
  });
  ASSERT_FILTERED(waiter);
  const auto busy = waiter.read_line();
  EXPECT_EQ(busy.rfind("flock held ", 0), 0u) << busy;
  EXPECT_EQ(waiter.read_line(), std::to_string(holder.pid()));
  EXPECT_EQ(waiter.read_line(), "waited the whole 200 ms");
  EXPECT_EQ(waiter.read_line(), "children left: 0");
  EXPECT_EQ(waiter.wait(), 0);
}

std::atomic<int> sigchld_count{0};

TEST_P(Fallback, InstallsNoHandlerSendsNoSigchldAndIsNeverSeenByWaitpid) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l"] {
    struct sigaction counting {};
    counting.sa_handler = [](int) { ++sigchld_count; };
    ::sigaction(SIGCHLD, &counting, nullptr);
    std::vector<struct sigaction> before(NSIG);
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, nullptr, &before[std::size_t(sig)]);
    Options options;
    options.wait = 300ms;
    options.progress_interval = 20ms;
    int seen_by_waitpid = 0;
    options.on_wait = [&](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
      if (waited == 0ns) return;
      int status = 0;  // while a waiting process lives: a plain waitpid(-1) must not see it
      if (::waitpid(-1, &status, WNOHANG) != -1 || errno != ECHILD) ++seen_by_waitpid;
    };
    say(outcome(Lock::acquire(path, options)).substr(0, 11));
    int changed = 0;
    for (int sig = 1; sig < NSIG; ++sig) {
      struct sigaction now {};
      ::sigaction(sig, nullptr, &now);
      if (now.sa_handler != before[std::size_t(sig)].sa_handler) ++changed;
    }
    say("handlers changed: " + std::to_string(changed));
    say("SIGCHLD: " + std::to_string(sigchld_count.load()));
    say("seen by waitpid(-1): " + std::to_string(seen_by_waitpid));
    int status = 0;
    say(::waitpid(-1, &status, WNOHANG | __WALL) == -1 && errno == ECHILD ? "no child left"
                                                                          : "a child left");
    return 0;
  });
  ASSERT_FILTERED(waiter);
  EXPECT_EQ(waiter.read_line(), "flock held ");
  EXPECT_EQ(waiter.read_line(), "handlers changed: 0");
  EXPECT_EQ(waiter.read_line(), "SIGCHLD: 0");
  EXPECT_EQ(waiter.read_line(), "seen by waitpid(-1): 0");
  EXPECT_EQ(waiter.read_line(), "no child left");
  EXPECT_EQ(waiter.wait(), 0);
}

TEST_P(Fallback, AThrowingOnWaitLeavesNoWaiterAndNoLock) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l"] {
    Options options;
    options.wait = 60s;
    options.progress_interval = 5ms;
    options.on_wait = [](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
      if (waited > 0ns) throw std::runtime_error("the progress bar broke");
    };
    say(outcome(Lock::acquire(path, options)).substr(0, 16));
    say("children left: " + std::to_string(our_children().size()));
    test::wait_for_eof_on_stdin();  // alive, so that a lock it kept would still be held
    return 0;
  });
  ASSERT_FILTERED(waiter);
  EXPECT_EQ(waiter.read_line(), "on_wait not-held");
  EXPECT_EQ(waiter.read_line(), "children left: 0");
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  const auto probe = test::run({test::flock_binary, "-n", (dir / "l").string(), "true"});
  EXPECT_EQ(probe.code, 0) << "the lock was taken for a wait that had given up";
  waiter.close_stdin();
  EXPECT_EQ(waiter.wait(), 0);
}

TEST_P(Fallback, ACancelledThreadLeavesNoWaiterAndTakesNoLock) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l"] {
    struct Wait {
      std::filesystem::path path;
      std::atomic<bool> under_way{false};
    } wait{path};
    pthread_t thread{};
    const auto run = [](void* argument) -> void* {
      auto* w = static_cast<Wait*>(argument);
      auto lock = Lock::acquire(w->path, waiting_and_saying_so(&w->under_way));
      say("returned");  // not reached: the thread is cancelled while it waits
      return nullptr;
    };
    if (::pthread_create(&thread, nullptr, run, &wait) != 0) return 3;
    while (!wait.under_way) std::this_thread::yield();
    ::pthread_cancel(thread);
    void* result = nullptr;
    ::pthread_join(thread, &result);
    say(result == PTHREAD_CANCELED ? "cancelled" : "not cancelled");
    say("children left: " + std::to_string(our_children().size()));
    test::wait_for_eof_on_stdin();
    return 0;
  });
  ASSERT_FILTERED(waiter);
  EXPECT_EQ(waiter.read_line(), "waiting");
  EXPECT_EQ(waiter.read_line(), "cancelled");
  EXPECT_EQ(waiter.read_line(), "children left: 0");
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  const auto probe = test::run({test::flock_binary, "-n", (dir / "l").string(), "true"});
  EXPECT_EQ(probe.code, 0) << "the lock was taken for a cancelled wait";
  waiter.close_stdin();
  EXPECT_EQ(waiter.wait(), 0);
}

// A forked waiter is a copy of the caller: it keeps only the descriptors it needs, so that a file
// the caller closes during the wait is closed (a pipe's reader sees its end, a lock frees).
TEST_P(Fallback, AWaitingProcessKeepsNoOtherDescriptorOfTheCallersOpen) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(GetParam(), [path = dir / "l", where = GetParam()] {
    int ends[2] = {-1, -1};
    if (::pipe(ends) != 0) return 3;
    Options options = waiting_and_saying_so();
    bool end_seen = false;
    options.on_wait = [&](std::chrono::nanoseconds waited, const std::optional<Holder>&) {
      if (waited == 0ns || ends[1] < 0) return;
      // Once a waiting process is blocked in flock: past whatever it does before.
      if (a_process_waits(where) && !test::someone_waits(path)) return;
      ::close(ends[1]);  // our only copy: the reader sees the end unless a waiter holds another
      ends[1] = -1;
      pollfd end{ends[0], POLLIN, 0};
      end_seen = ::poll(&end, 1, 0) == 1 && (end.revents & POLLHUP) != 0;
      say("waiting");
    };
    say(outcome(Lock::acquire(path, options)));
    say(end_seen ? "the pipe's end was seen" : "the pipe was held open");
    return 0;
  });
  ASSERT_FILTERED(waiter);
  EXPECT_EQ(waiter.read_line(), "waiting");
  holder.close_stdin();
  EXPECT_EQ(waiter.read_line(), "acquired");
  EXPECT_EQ(waiter.read_line(), "the pipe's end was seen");
  EXPECT_EQ(waiter.wait(), 0);
}

Options reader() {
  Options options;
  options.shared = true;
  return options;
}

// A deferring reader waiting through the fallback lets a writer that waits in the kernel's queue
// in first, and gets the lock once that writer is done.
TEST_P(Fallback, ADeferringReaderLetsAWaitingWriterInFirst) {
  TempDir dir;
  Child plain = test::lock_holder(dir / "l", reader());
  Child writer = Child::spawn({test::pidlock_binary(), "run", "-w", "60", (dir / "l").string(),
                               "sh", "-c", "echo in; read _ || :"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Child deferring = under(GetParam(), [path = dir / "l"] {
    Options options = waiting_and_saying_so();
    options.shared = true;
    options.defer_to_writers = true;
    say(outcome(Lock::acquire(path, options)));
    test::wait_for_eof_on_stdin();
    return 0;
  });
  ASSERT_FILTERED(deferring);
  EXPECT_EQ(deferring.read_line(), "waiting");
  plain.close_stdin();  // the readers' lock frees: the writer's turn, not the deferring reader's
  EXPECT_EQ(plain.wait(), 0);
  EXPECT_EQ(writer.read_line(), "in");
  EXPECT_FALSE(deferring.exited_within(0ms));
  writer.close_stdin();
  EXPECT_EQ(writer.wait(), 0);
  EXPECT_EQ(deferring.read_line(), "acquired");
  deferring.close_stdin();
  EXPECT_EQ(deferring.wait(), 0);
}

// A writer waiting through a forked waiter is in the kernel's queue as a helper is: a deferring
// reader defers to it and names the writer, not its waiter. (One that polls is in no queue.)
TEST_P(Fallback, AWriterWaitingThroughAProcessIsDeferredToAndNamed) {
  if (!a_process_waits(GetParam())) GTEST_SKIP() << "a writer that polls is in no queue";
  TempDir dir;
  Child plain = test::lock_holder(dir / "l", reader());
  Child writer = under(GetParam(), [path = dir / "l"] {
    say(outcome(Lock::acquire(path, waiting_and_saying_so())));
    return 0;
  });
  ASSERT_FILTERED(writer);
  EXPECT_EQ(writer.read_line(), "waiting");
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Options deferring = reader();
  deferring.defer_to_writers = true;
  auto refused = Lock::acquire(dir / "l", deferring);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message().rfind(
                "a writer waits for the lock (pid " + std::to_string(writer.pid()) + ")", 0),
            0u)
      << refused.error().message();
  plain.close_stdin();
  EXPECT_EQ(plain.wait(), 0);
  EXPECT_EQ(writer.read_line(), "acquired");
  EXPECT_EQ(writer.wait(), 0);
}

double cpu_ms() {
  double total = 0;
  for (const int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage usage{};
    ::getrusage(who, &usage);
    total += static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
             static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
  }
  return total;
}

// A waiting process that dies of a signal it did not block (a fault, a filter's SIGSYS) cannot
// run here: its kind is not started again, the wait goes on another way, and does not spin
// starting one after another until its deadline.
TEST(WaitFallbacks, AWaitingProcessThatCannotRunHereIsReplacedNotStartedAgainAndAgain) {
  if (!filters_work()) GTEST_SKIP() << "this kernel takes no seccomp filter";
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child waiter = under(Where::a_waiting_process_dies_at_start, [path = dir / "l"] {
    Options options;
    options.wait = 500ms;
    const double before = cpu_ms();
    auto lock = Lock::acquire(path, options);
    const double used = cpu_ms() - before;
    say(outcome(lock).substr(0, 11));
    say(used < 250 ? "no spin" : "spun: " + std::to_string(used) + " ms of CPU in a 500 ms wait");
    say("children left: " + std::to_string(our_children().size()));
    options.wait = 60s;  // and a wait that is handed the lock, the same way
    options.on_wait = [](std::chrono::nanoseconds, const std::optional<Holder>&) {
      say("waiting");
    };
    say(outcome(Lock::acquire(path, options)));
    return 0;
  });
  ASSERT_FILTERED(waiter);
  EXPECT_EQ(waiter.read_line(), "flock held ");
  EXPECT_EQ(waiter.read_line(), "no spin");
  EXPECT_EQ(waiter.read_line(), "children left: 0");
  EXPECT_EQ(waiter.read_line(), "waiting");
  EXPECT_TRUE(kernel_waiters(dir / "l").empty()) << "a waiting process lived";
  holder.close_stdin();
  EXPECT_EQ(waiter.read_line(), "acquired");
  EXPECT_EQ(waiter.wait(), 0);
}

INSTANTIATE_TEST_SUITE_P(WaitFallbacks, Fallback,
                         testing::Values(Where::clone_with_pidfd_refused,
                                         Where::kernel_without_pidfds,
                                         Where::no_process_may_be_created),
                         where_name);

}  // namespace
}  // namespace pidlock
