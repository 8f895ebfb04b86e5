// One process model (pidlock(1), "The command and its job"): the command lives and dies with its
// job. By default pidlock becomes the command; with -o it stays as the command's parent, in the
// same process group, tied to it. Each case runs as operators, supervisors and terminals run it,
// and flock(1) runs the same way beside it where flock(1) defines the expected outcome.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>

#include "support.hpp"

namespace pidlock {
namespace {

using test::c_argv;
using test::Child;
using test::eventually;
using test::pidlock_binary;
using test::read_text;
using test::run;
using test::TempDir;

// --- The signal counter -----------------------------------------------------------------------
//
// The command of most tests here is this test binary again: with PIDLOCK_TEST_SIGNAL_LOG in its
// environment it runs no tests but logs each signal it receives as "SIGNO SENDER SI_CODE". It
// prints "ready PID PPID PGID" once its signals are blocked, and ends on SIGUSR2 sent straight to
// it, after logging whatever else was pending by then.

constexpr const char* signal_log_variable = "PIDLOCK_TEST_SIGNAL_LOG";
constexpr std::array counted_signals{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGALRM, SIGCONT};
constexpr int finish_signal = SIGUSR2;

void log_delivery(int fd, const siginfo_t& info) {
  char line[64];
  const int length = std::snprintf(line, sizeof line, "%d %d %d\n", info.si_signo,
                                   static_cast<int>(info.si_pid), info.si_code);
  if (length > 0 && ::write(fd, line, static_cast<std::size_t>(length)) != length) std::abort();
}

[[noreturn]] void count_signals(const char* log) {
  sigset_t set{};
  ::sigemptyset(&set);
  for (const int sig : counted_signals) ::sigaddset(&set, sig);
  ::sigaddset(&set, finish_signal);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  const int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) std::abort();
  std::printf("ready %d %d %d\n", ::getpid(), ::getppid(), ::getpgrp());
  std::fflush(stdout);
  siginfo_t info{};
  for (;;) {
    const int sig = ::sigwaitinfo(&set, &info);
    if (sig == finish_signal) break;
    if (sig > 0) log_delivery(fd, info);
  }
  const timespec now{};
  while (::sigtimedwait(&set, &info, &now) > 0) {
    if (info.si_signo != finish_signal) log_delivery(fd, info);
  }
  ::_exit(0);
}

// With PIDLOCK_TEST_LIST_FDS instead, it prints the numbers of its open descriptors and exits.
constexpr const char* list_fds_variable = "PIDLOCK_TEST_LIST_FDS";

[[noreturn]] void list_descriptors() {
  std::vector<int> open;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.' && std::atoi(entry->d_name) != ::dirfd(dir)) {
        open.push_back(std::atoi(entry->d_name));
      }
    }
    ::closedir(dir);
  }
  std::sort(open.begin(), open.end());
  for (const int fd : open) std::printf("%d ", fd);
  std::fflush(stdout);
  ::_exit(0);
}

// With PIDLOCK_TEST_BIG, it fills a gibibyte of memory, prints its PID and waits to be killed: a
// process whose death takes the kernel a while (freeing its pages).
constexpr const char* big_variable = "PIDLOCK_TEST_BIG";

[[noreturn]] void be_big() {
  constexpr std::size_t size = std::size_t{1} << 30;
  auto* memory = static_cast<char*>(std::malloc(size));
  if (memory == nullptr) std::abort();
  for (std::size_t i = 0; i < size; i += 4096) memory[i] = 1;
  std::printf("%d\n", ::getpid());
  std::fflush(stdout);
  for (;;) ::pause();
}

// Runs before main(): the counter never reaches the tests.
[[maybe_unused]] const bool counter_mode = [] {
  if (const char* log = std::getenv(signal_log_variable)) count_signals(log);
  if (std::getenv(list_fds_variable) != nullptr) list_descriptors();
  if (std::getenv(big_variable) != nullptr) be_big();
  return false;
}();

std::string self() {
  std::array<char, 4096> path{};
  const ssize_t length = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  return length > 0 ? std::string(path.data(), static_cast<std::size_t>(length)) : std::string();
}

struct Delivery {
  int signal = 0;
  pid_t sender = 0;
  int code = 0;
  bool operator==(const Delivery&) const = default;
};

void PrintTo(const Delivery& d, std::ostream* out) {
  *out << "{signal " << d.signal << " from " << d.sender << ", si_code " << d.code << "}";
}

std::vector<Delivery> deliveries(const std::filesystem::path& log) {
  std::vector<Delivery> found;
  std::istringstream lines(read_text(log));
  Delivery d;
  while (lines >> d.signal >> d.sender >> d.code) found.push_back(d);
  return found;
}

std::size_t count_of(const std::vector<Delivery>& all, int sig) {
  return static_cast<std::size_t>(
      std::count_if(all.begin(), all.end(), [sig](const Delivery& d) { return d.signal == sig; }));
}

struct Counter {
  pid_t pid = -1;
  pid_t parent = -1;
  pid_t group = -1;
};

Counter parse_ready(const std::string& text) {
  Counter c;
  const auto at = text.find("ready ");
  if (at == std::string::npos ||
      std::sscanf(text.c_str() + at, "ready %d %d %d", &c.pid, &c.parent, &c.group) != 3) {
    ADD_FAILURE() << "no ready line in: " << text;
  }
  return c;
}

// --- Watching processes -----------------------------------------------------------------------

std::uint64_t pending_signals(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::uint64_t pending = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("SigPnd:") || line.starts_with("ShdPnd:")) {
      pending |= std::stoull(line.substr(7), nullptr, 16);
    }
  }
  return pending;
}

bool blocked_in(pid_t pid, long syscall_number) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/syscall");
  std::string first;
  in >> first;
  return first == std::to_string(syscall_number);
}

// True once `pid` has none of the counted signals pending and sleeps in sigwaitinfo (that is
// rt_sigtimedwait) again: it has taken every one sent to it so far and done all it does about
// them. Both the counter and a supervising pidlock wait for signals that way.
bool settled(pid_t pid) {
  const std::uint64_t pending = pending_signals(pid);
  for (const int sig : counted_signals) {
    if ((pending & (std::uint64_t{1} << (sig - 1))) != 0) return false;
  }
  return blocked_in(pid, SYS_rt_sigtimedwait);
}

char process_state(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto after_name = stat.rfind(')');  // the name may hold anything, ')' included
  return after_name == std::string::npos || after_name + 2 >= stat.size() ? '?'
                                                                          : stat[after_name + 2];
}

pid_t parent_of(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto after_name = stat.rfind(')');
  if (after_name == std::string::npos) return -1;
  pid_t parent = -1;
  char state = 0;
  return std::sscanf(stat.c_str() + after_name + 1, " %c %d", &state, &parent) == 2 ? parent : -1;
}

// Gone, or a zombie that nobody has reaped yet (the command of a killed pidlock is reparented to
// PID 1, which reaps when it gets to it).
bool ended(pid_t pid) {
  const char state = process_state(pid);
  return state == '?' || state == 'Z' || state == 'X';
}

bool flock_free(const std::filesystem::path& path) {
  return run({"flock", "-n", path.string(), "true"}).code == 0;
}

// --- The ways to run a command under a lock ----------------------------------------------------

enum class Mode { plain, close, flock };

std::string PrintToString(Mode mode) {
  switch (mode) {
    case Mode::plain:
      return "PidlockRun";
    case Mode::close:
      return "PidlockRunClose";
    case Mode::flock:
      return "Flock";
  }
  return "?";
}

std::vector<std::string> locked(Mode mode, const std::filesystem::path& lock,
                                const std::vector<std::string>& command) {
  std::vector<std::string> argv;
  switch (mode) {
    case Mode::plain:
      argv = {pidlock_binary(), "run", lock.string(), "--"};
      break;
    case Mode::close:
      argv = {pidlock_binary(), "run", "-o", lock.string(), "--"};
      break;
    case Mode::flock:
      argv = {test::flock_binary, lock.string()};
      break;
  }
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// `argv` in a session of its own, without a controlling terminal: the way cron, a service manager
// or `setsid` starts it, and the leader of its own process group.
Child detached(const std::vector<std::string>& argv, const std::filesystem::path& signal_log = {}) {
  return Child::fork([argv, signal_log] {
    ::setsid();
    if (!signal_log.empty()) ::setenv(signal_log_variable, signal_log.c_str(), 1);
    ::execvp(argv[0].c_str(), c_argv(argv).data());
    std::perror(argv[0].c_str());
    return 127;
  });
}

// A job with the counter as its command, started detached. `job` is pidlock (or flock, or the
// counter itself when pidlock became it); it leads the job's process group.
struct Job {
  TempDir dir;
  Mode mode;
  Child job;
  Counter counter;

  explicit Job(Mode how, const std::vector<std::string>& prefix = {})
      : mode(how),
        job(detached(with_prefix(prefix, locked(how, dir / "l", {self()})), dir / "log")),
        counter(parse_ready(job.read_line())) {}
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  ~Job() {
    // A test that failed half way may leave the command of a killed job running. (In the default
    // mode the command is the job, which Child ends.)
    if (counter.pid > 0 && counter.pid != job.pid() && parent_of(counter.pid) == counter.parent) {
      ::kill(counter.pid, SIGKILL);
    }
  }

  static std::vector<std::string> with_prefix(std::vector<std::string> prefix,
                                              const std::vector<std::string>& argv) {
    prefix.insert(prefix.end(), argv.begin(), argv.end());
    return prefix;
  }

  std::filesystem::path lock() const { return dir / "l"; }
  std::vector<Delivery> log() const { return deliveries(dir / "log"); }

  // Waits until the counter has logged `count` signals, and a supervising pidlock (-o: the
  // counter's parent) has done everything about what it was sent.
  bool logged(std::size_t count) const {
    return eventually([&] {
      return log().size() >= count && settled(counter.pid) &&
             (mode != Mode::close || settled(counter.parent));
    });
  }

  // Ends the counter once everything sent so far has been dealt with; returns the job's status.
  int finish() {
    EXPECT_TRUE(logged(0));
    ::kill(counter.pid, finish_signal);
    return job.wait();
  }
};

class CommandAndJob : public testing::TestWithParam<Mode> {};
class PidlockCommandAndJob : public testing::TestWithParam<Mode> {};

// --- Who the command is -----------------------------------------------------------------------

TEST(CliProcess, InTheDefaultModeTheCommandIsPidlockItselfAndTheRecordNamesIt) {
  Job job(Mode::plain);
  EXPECT_EQ(job.counter.pid, job.job.pid());
  EXPECT_EQ(job.counter.group, job.job.pid());
  EXPECT_EQ(read_text(job.lock()), std::to_string(job.counter.pid) + "\n");
  EXPECT_FALSE(flock_free(job.lock()));
  EXPECT_EQ(job.finish(), 0);
  EXPECT_TRUE(flock_free(job.lock()));
}

TEST(CliProcess, WithCloseTheCommandRunsInPidlocksGroupWithoutTheLock) {
  Job job(Mode::close);
  EXPECT_EQ(job.counter.parent, job.job.pid());
  EXPECT_EQ(job.counter.group, job.job.pid());  // the job's group, which pidlock leads
  EXPECT_EQ(read_text(job.lock()), std::to_string(job.job.pid()) + "\n");
  EXPECT_FALSE(flock_free(job.lock()));
  // No descriptor of the command's names the lock file.
  const std::string fds = "/proc/" + std::to_string(job.counter.pid) + "/fd";
  for (const auto& entry : std::filesystem::directory_iterator(fds)) {
    std::error_code ignored;
    EXPECT_NE(std::filesystem::read_symlink(entry.path(), ignored), job.lock());
  }
  EXPECT_EQ(job.finish(), 0);
}

// Only what the job was started with reaches the command, and the lock's descriptor where the
// command is to hold the lock: nothing pidlock opened for itself.
std::string descriptors_of(const std::vector<std::string>& argv) {
  Child child = Child::fork([&] {
    const int given = ::open("/dev/null", O_RDONLY);  // not close-on-exec: given to the job
    if (given < 0 || ::dup2(given, 9) != 9) return 2;
    ::setenv(list_fds_variable, "1", 1);
    ::execvp(argv[0].c_str(), c_argv(argv).data());
    return 127;
  });
  child.close_stdin();
  std::string listed = child.drain_stdout();
  EXPECT_EQ(child.wait(), 0) << child.drain_stderr();
  return listed;
}

std::vector<int> numbers(const std::string& listed) {
  std::vector<int> found;
  std::istringstream in(listed);
  for (int fd = 0; in >> fd;) found.push_back(fd);
  return found;
}

TEST_P(CommandAndJob, TheCommandInheritsTheDescriptorsTheJobWasGivenAndOnlyThoseAndTheLocks) {
  TempDir dir;
  const auto alone = numbers(descriptors_of({self()}));
  ASSERT_NE(std::find(alone.begin(), alone.end(), 9), alone.end());
  const auto under_lock = numbers(descriptors_of(locked(GetParam(), dir / "l", {self()})));
  std::vector<int> extra;
  std::set_difference(under_lock.begin(), under_lock.end(), alone.begin(), alone.end(),
                      std::back_inserter(extra));
  EXPECT_TRUE(std::includes(under_lock.begin(), under_lock.end(), alone.begin(), alone.end()));
  // flock(1) and pidlock's default mode pass the lock's descriptor on; -o passes nothing.
  EXPECT_EQ(extra.size(), GetParam() == Mode::close ? 0U : 1U) << testing::PrintToString(extra);
}

// --- The job's group ----------------------------------------------------------------------------

TEST_P(CommandAndJob, AKillOfTheJobsWholeGroupEndsTheCommandAndFreesTheLock) {
  Job job(GetParam());
  ASSERT_EQ(::kill(-job.job.pid(), SIGKILL), 0);
  EXPECT_EQ(job.job.wait(), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return ended(job.counter.pid); }));
  EXPECT_TRUE(eventually([&] { return flock_free(job.lock()); }));
}

// timeout(1) kills its child and then its own process group, which the job is in.
TEST_P(CommandAndJob, TimeoutsKillEndsTheCommandAndFreesTheLock) {
  Job job(GetParam(), {"timeout", "-s", "KILL", "1h"});
  const pid_t timeout = job.job.pid();
  ASSERT_EQ(::kill(timeout, SIGALRM), 0);    // its timer running out, now rather than in an hour
  EXPECT_EQ(job.job.wait(), 128 + SIGKILL);  // timeout's status is its child's
  EXPECT_TRUE(eventually([&] { return ended(job.counter.pid); }));
  EXPECT_TRUE(eventually([&] { return flock_free(job.lock()); }));
}

TEST_P(CommandAndJob, AStopSentToTheJobsWholeGroupStopsTheCommandAndAContinueContinuesIt) {
  Job job(GetParam());
  ASSERT_EQ(::kill(-job.job.pid(), SIGSTOP), 0);
  EXPECT_TRUE(eventually([&] { return process_state(job.counter.pid) == 'T'; }));
  ASSERT_EQ(::kill(-job.job.pid(), SIGCONT), 0);
  EXPECT_TRUE(eventually([&] { return process_state(job.counter.pid) != 'T'; }));
  ASSERT_TRUE(job.logged(1));
  EXPECT_EQ(job.finish(), 0);
  EXPECT_EQ(job.log(), (std::vector<Delivery>{{SIGCONT, ::getpid(), SI_USER}}));
}

TEST_P(CommandAndJob, ASignalSentToTheJobsWholeGroupReachesTheCommandOnceEveryTime) {
  Job job(GetParam());
  constexpr std::size_t sends = 10;
  for (std::size_t i = 1; i <= sends; ++i) {
    ASSERT_EQ(::kill(-job.job.pid(), SIGTERM), 0);
    ASSERT_TRUE(job.logged(i)) << "send " << i;
  }
  EXPECT_EQ(job.finish(), GetParam() == Mode::flock ? 128 + SIGTERM : 0);  // flock(1) dies of it
  EXPECT_EQ(job.log(), std::vector<Delivery>(sends, Delivery{SIGTERM, ::getpid(), SI_USER}));
}

INSTANTIATE_TEST_SUITE_P(Modes, CommandAndJob,
                         testing::Values(Mode::plain, Mode::close, Mode::flock),
                         [](const auto& param) { return PrintToString(param.param); });

// --- pidlock itself -----------------------------------------------------------------------------

TEST_P(PidlockCommandAndJob, EverySignalSentToPidlockAloneReachesTheCommandHoweverOften) {
  Job job(GetParam());
  std::size_t sent = 0;
  for (const int sig : {SIGUSR1, SIGUSR1, SIGUSR1, SIGUSR1, SIGUSR1, SIGHUP, SIGHUP}) {
    ASSERT_EQ(::kill(job.job.pid(), sig), 0);
    ASSERT_TRUE(job.logged(++sent)) << "send " << sent;
  }
  EXPECT_EQ(job.finish(), 0);
  const auto log = job.log();
  EXPECT_EQ(log.size(), 7u);
  EXPECT_EQ(count_of(log, SIGUSR1), 5u);
  EXPECT_EQ(count_of(log, SIGHUP), 2u);
}

// With --foreground, timeout(1) signals its child alone: pidlock, or the command pidlock became.
TEST_P(PidlockCommandAndJob, UnderTimeoutForegroundTheCommandGetsTheSignalOnce) {
  Job job(GetParam(), {"timeout", "--foreground", "-s", "INT", "1h"});
  ASSERT_EQ(::kill(job.job.pid(), SIGALRM), 0);  // timeout's timer runs out now
  ASSERT_TRUE(job.logged(1));
  ::kill(job.counter.pid, finish_signal);
  EXPECT_EQ(job.job.wait(), 124);  // timeout's own code for "timed out"
  const auto log = job.log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log.front().signal, SIGINT);
}

// pidlock ends as its command ended, so that a shell treats an interrupted job as interrupted.
TEST_P(PidlockCommandAndJob, ACommandKilledBySignalEndsPidlockTheSameWay) {
  TempDir dir;
  const auto argv = locked(GetParam(), dir / "l", {"sh", "-c", "kill -INT $$"});
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::execvp(argv[0].c_str(), c_argv(argv).data());
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_FALSE(WCOREDUMP(status));
}

INSTANTIATE_TEST_SUITE_P(Modes, PidlockCommandAndJob, testing::Values(Mode::plain, Mode::close),
                         [](const auto& param) { return PrintToString(param.param); });

TEST(CliProcess, WithCloseACommandWhosePidlockIsKilledDiesWithIt) {
  Job job(Mode::close);
  job.job.signal(SIGKILL);
  EXPECT_EQ(job.job.wait(), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return ended(job.counter.pid); }));
  EXPECT_TRUE(flock_free(job.lock()));
}

// The lock frees only once the command is dead: here a command whose death takes a while.
TEST(CliProcess, WithCloseTheLockOfAKilledPidlockFreesOnlyOnceItsCommandIsDead) {
  TempDir dir;
  Child pidlock = Child::fork([&] {
    ::setenv(big_variable, "1", 1);
    const auto argv = locked(Mode::close, dir / "l", {self()});
    ::execvp(argv[0].c_str(), c_argv(argv).data());
    return 127;
  });
  const pid_t command = std::stoi(pidlock.read_line(std::chrono::seconds(60)));
  pidlock.signal(SIGKILL);
  EXPECT_EQ(pidlock.wait(), 128 + SIGKILL);
  ASSERT_TRUE(eventually([&] {
    if (!flock_free(dir / "l")) return false;
    EXPECT_TRUE(ended(command)) << "the lock was free while the command still ran";
    return true;
  }));
  EXPECT_TRUE(eventually([&] { return ended(command); }));
}

// The witness (cli/group_witness.hpp) relies on the kernel delivering a group signal to members
// that joined later before those that joined earlier. Random sends to pidlock alone and to the
// whole group, each dealt with before the next: every one reaches the command exactly once, a
// signal to the group straight from the sender, one to pidlock alone through pidlock.
TEST(CliProcess, WithCloseASignalToTheGroupIsToldApartFromOneToPidlockAloneEveryTime) {
  Job job(Mode::close);
  std::mt19937 random(std::random_device{}());
  std::vector<Delivery> expected;
  constexpr std::size_t sends = 300;
  for (std::size_t i = 1; i <= sends; ++i) {
    const bool to_group = (random() & 1U) != 0;
    ASSERT_EQ(::kill(to_group ? -job.job.pid() : job.job.pid(), SIGUSR1), 0);
    expected.push_back({SIGUSR1, to_group ? ::getpid() : job.job.pid(), SI_USER});
    ASSERT_TRUE(job.logged(i)) << "send " << i;
  }
  EXPECT_EQ(job.finish(), 0);
  EXPECT_EQ(job.log(), expected);
}

// --- A terminal, with an interactive shell's job control -------------------------------------

// An interactive bash on a pseudo-terminal, as a person at a prompt.
class Shell {
 public:
  explicit Shell(const std::filesystem::path& signal_log) {
    std::fflush(nullptr);
    pid_ = ::forkpty(&master_, nullptr, nullptr, nullptr);
    if (pid_ == 0) {
      ::setenv(signal_log_variable, signal_log.c_str(), 1);
      ::setenv("PS1", "$ ", 1);
      ::setenv("TERM", "dumb", 1);
      for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
      ::execlp("bash", "bash", "--norc", "--noprofile", "-i", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    EXPECT_GT(pid_, 0) << "forkpty";
    EXPECT_TRUE(shows("$ ")) << screen_;
  }
  Shell(const Shell&) = delete;
  Shell& operator=(const Shell&) = delete;
  ~Shell() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) ::close(master_);
  }

  void type(std::string_view keys) {
    ASSERT_EQ(::write(master_, keys.data(), keys.size()), static_cast<ssize_t>(keys.size()));
  }

  // Reads what the terminal shows until the text after the mark contains `needle`.
  bool shows(const std::string& needle,
             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (screen_.find(needle, mark_) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd pfd{master_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[512];
      const ssize_t n = ::read(master_, buf, sizeof buf);
      if (n <= 0) return false;
      screen_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  // What was shown since the last mark; later searches look only after this point.
  std::string mark() {
    std::string since = screen_.substr(mark_);
    mark_ = screen_.size();
    return since;
  }
  const std::string& screen() const { return screen_; }
  pid_t foreground() const { return ::tcgetpgrp(master_); }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string screen_;
  std::size_t mark_ = 0;
};

std::string typed(const std::vector<std::string>& argv) {
  std::string line;
  for (const auto& arg : argv) line += "'" + arg + "' ";
  return line;
}

class TerminalJob : public testing::TestWithParam<Mode> {};

// The process of the job (in its process group) whose command name is `name`.
std::optional<pid_t> member_named(pid_t group, const std::string& name) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid_text = entry.path().filename();
    if (pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(pid_text);
    if (::getpgid(pid) == group && read_text(entry.path() / "comm") == name + "\n") return pid;
  }
  return std::nullopt;
}

// A person's steps, each taken once the one before has shown its effect: start `cat` under the
// lock in the background (it stops as it reads the terminal: SIGTTIN), bring it to the foreground,
// type a line (cat writes it back: it read the terminal), and end it with ^C.
TEST_P(TerminalJob, AJobStartedInTheBackgroundReadsTheTerminalInTheForegroundAndCtrlCEndsIt) {
  TempDir dir;
  Shell shell(dir / "unused");
  shell.mark();
  shell.type(typed(locked(GetParam(), dir / "l", {"cat"})) + "&\n");
  ASSERT_TRUE(shell.shows("[1] ")) << shell.screen();
  ASSERT_TRUE(shell.shows("\n$ ")) << shell.screen();
  const pid_t job = std::stoi(shell.screen().substr(shell.screen().find("[1] ") + 4));
  std::optional<pid_t> cat;
  ASSERT_TRUE(eventually([&] { return (cat = member_named(job, "cat")).has_value(); }));
  ASSERT_TRUE(eventually([&] { return process_state(*cat) == 'T'; })) << shell.screen();
  EXPECT_TRUE(eventually([&] { return process_state(job) == 'T'; }));  // the whole job stopped
  const auto held = inspect(dir / "l");
  ASSERT_TRUE(held && held->held);
  shell.mark();
  shell.type("fg\n");
  ASSERT_TRUE(eventually([&] {
    return shell.foreground() == job && process_state(*cat) == 'S' && blocked_in(*cat, SYS_read);
  })) << shell.screen();
  shell.mark();
  shell.type("hello from the keyboard\n");
  // The terminal echoes the line, then cat writes it back: twice means cat read it.
  ASSERT_TRUE(shell.shows("hello from the keyboard")) << shell.screen();
  ASSERT_TRUE(shell.shows("hello from the keyboard\r\nhello from the keyboard")) << shell.screen();
  shell.mark();
  shell.type("\x03");  // ^C
  ASSERT_TRUE(shell.shows("$ ")) << shell.screen();
  EXPECT_TRUE(eventually([&] { return ended(*cat) && flock_free(dir / "l"); }));
  shell.type("jobs; echo jobs-listed\n");
  ASSERT_TRUE(shell.shows("jobs-listed\r\n")) << shell.screen();
  EXPECT_EQ(shell.screen().find("cat", shell.screen().rfind("jobs;")), std::string::npos)
      << shell.screen();
}

TEST_P(TerminalJob, CtrlZThenFgStopsTheCommandAndContinuesItOnce) {
  TempDir dir;
  Shell shell(dir / "log");
  shell.type(typed(locked(GetParam(), dir / "l", {self()})) + "\n");
  ASSERT_TRUE(shell.shows("ready")) << shell.screen();
  ASSERT_TRUE(shell.shows("\n")) << shell.screen();
  const Counter counter = parse_ready(shell.screen().substr(shell.screen().find("ready")));
  shell.mark();
  shell.type("\x1a");  // ^Z
  ASSERT_TRUE(shell.shows("Stopped")) << shell.screen();
  EXPECT_TRUE(eventually([&] { return process_state(counter.pid) == 'T'; }));
  ASSERT_TRUE(shell.shows("$ ")) << shell.screen();
  shell.mark();
  shell.type("fg\n");
  ASSERT_TRUE(eventually([&] { return count_of(deliveries(dir / "log"), SIGCONT) >= 1; }));
  ASSERT_TRUE(eventually([&] { return settled(counter.pid); }));
  shell.type("\x03");  // ^C, to the foreground job
  ASSERT_TRUE(eventually([&] { return count_of(deliveries(dir / "log"), SIGINT) >= 1; }));
  ASSERT_TRUE(eventually([&] { return settled(counter.pid); }));
  ::kill(counter.pid, finish_signal);
  ASSERT_TRUE(shell.shows("$ ")) << shell.screen();
  const auto log = deliveries(dir / "log");
  EXPECT_EQ(count_of(log, SIGCONT), 1u);
  EXPECT_EQ(count_of(log, SIGINT), 1u);
  EXPECT_EQ(log.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Modes, TerminalJob, testing::Values(Mode::plain, Mode::close, Mode::flock),
                         [](const auto& param) { return PrintToString(param.param); });

}  // namespace
}  // namespace pidlock
