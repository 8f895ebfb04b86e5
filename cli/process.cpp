// Running the command: exec'd in pidlock's place, or forked as its tied child, signals relayed.
#include "process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <optional>
#include <system_error>

#include "commands.hpp"
#include "descriptors.hpp"
#include "group_witness.hpp"
#include "sys.hpp"

namespace pidlock::cli {
namespace {

using Clock = std::chrono::steady_clock;

// What an operator, a service manager or timeout(1) sends to stop or to poke a job. A supervising
// pidlock takes them (it would end by most of them and leave the command without its lock) and
// passes on those that were sent to it alone. Stop signals are left alone: they stop pidlock as
// they stop any member of the job, and a stop sent to pidlock alone stops it alone, as with
// flock(1). SIGCONT too: the command, in the job's group, is continued with the job.
constexpr std::array relayed_signals{SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,
                                     SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH};

std::vector<char*> to_argv(const std::vector<std::string>& command) {
  std::vector<char*> argv;
  argv.reserve(command.size() + 1);
  for (const auto& arg : command) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  return argv;
}

int exec_failure_code(int error) {
  return error == ENOENT || error == ENOTDIR ? exit_code::not_found : exit_code::cannot_execute;
}

Ending ending_from(int status) {
  if (WIFEXITED(status)) return {WEXITSTATUS(status), 0};
  if (WIFSIGNALED(status)) return {128 + WTERMSIG(status), WTERMSIG(status)};
  return {exit_code::software, 0};
}

timespec until(Clock::time_point deadline) { return sys::to_timespec(deadline - Clock::now()); }

// --- The command's side of the fork: async-signal-safe calls only ----------------------------

// Everything the child needs, prepared before the fork.
struct Launch {
  std::vector<char*> argv;
  std::vector<int> keep;  // ascending: 0, 1, 2, the inherited descriptors and the two below
  int go = -1;            // read end: pidlock says "go" once it has settled the signals
  int exec_error = -1;    // write end, close-on-exec: the errno of a failed exec, else EOF
  pid_t parent = -1;
  sigset_t mask{};  // pidlock's signal mask before it blocked the relayed signals
};

[[noreturn]] void start_command(const Launch& launch) {
  // Tied to pidlock: if pidlock dies, the command must not run on without the lock (or the
  // lease) it was started under. A pidlock that died before this line is no longer the parent.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != launch.parent) ::_exit(127);
  close_all_but(launch.keep);
  char go = 0;
  ssize_t got = 0;
  do {
    got = ::read(launch.go, &go, 1);
  } while (got < 0 && errno == EINTR);
  if (got != 1) ::_exit(127);  // pidlock gave up on starting it
  ::close(launch.go);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): the forked child has one thread
  ::sigprocmask(SIG_SETMASK, &launch.mask, nullptr);
  ::execvp(launch.argv[0], launch.argv.data());
  const int error = errno;
  (void)::write(launch.exec_error, &error, sizeof error);
  ::_exit(127);
}

// --- pidlock's side -----------------------------------------------------------------------------

// The command and the processes it started, as /proc shows them now (children files, Linux 3.5+
// with CONFIG_PROC_CHILDREN, as Debian's kernels have): those a lost lease must stop.
std::vector<pid_t> process_tree(pid_t root) {
  std::vector<pid_t> tree{root};
  for (std::size_t i = 0; i < tree.size(); ++i) {
    const std::string tasks = "/proc/" + std::to_string(tree[i]) + "/task";
    DIR* dir = ::opendir(tasks.c_str());
    if (dir == nullptr) continue;
    while (const dirent* task = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): private stream
      if (task->d_name[0] == '.') continue;
      const std::string children = tasks + "/" + task->d_name + "/children";
      auto text = sys::read_file_at(AT_FDCWD, children.c_str(), std::size_t{1} << 20);
      if (!text) continue;
      const char* at = text->data();
      const char* end = at + text->size();
      while (at < end) {
        pid_t pid = 0;
        const auto parsed = std::from_chars(at, end, pid);
        if (parsed.ec != std::errc()) break;
        if (std::find(tree.begin(), tree.end(), pid) == tree.end()) tree.push_back(pid);
        at = parsed.ptr;
        while (at < end && *at == ' ') ++at;
      }
    }
    ::closedir(dir);
  }
  return tree;
}

// Passes on the signals sent to pidlock alone, each once; see group_witness.hpp for how the
// signals sent to the whole group, which reach the command directly, are told apart.
class Relay {
 public:
  Relay(pid_t command, int lock_fd)
      : command_(command), lock_fd_(lock_fd), witness_(GroupWitness::start(command, lock_fd)) {}

  void pass_on(const siginfo_t& info) {
    // Asked first in every case: the witness's copy of a group signal must not outlive this one.
    const bool through_group = reached_command_through_group(info.si_signo);
    // The command signalling its own group (kill(0, SIG)) or pidlock: not to be sent back.
    const bool from_command = info.si_code <= 0 && info.si_pid == command_;
    if (!through_group && !from_command) send(info.si_signo);
  }

  // Signals taken before the command could run: it has them blocked until it starts, so one it
  // also got through the group merges with the one passed on here; each reaches it once.
  void pass_on_pending(const sigset_t& relayed) {
    const timespec now{};
    for (;;) {
      const int sig = ::sigtimedwait(&relayed, nullptr, &now);
      if (sig < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (witness_) (void)witness_->also_sent_to_group(sig);
      send(sig);
    }
  }

  void send(int sig) const {
    if (::kill(command_, sig) != 0 && errno != ESRCH) {
      say(stderr, "pidlock: kill -{} {}: {}\n", sig, command_, errno_text(errno));
    }
  }

 private:
  bool reached_command_through_group(int sig) {
    if (!witness_) witness_ = GroupWitness::start(command_, lock_fd_);  // it was killed: anew
    const auto to_group = witness_ ? witness_->also_sent_to_group(sig) : std::nullopt;
    if (!to_group) {
      witness_.reset();
      return false;  // cannot tell: losing a signal is worse than repeating one
    }
    // A command that moved to a group of its own is not reached by a signal to ours.
    return *to_group && ::getpgid(command_) == ::getpgrp();
  }

  pid_t command_;
  int lock_fd_;
  std::optional<GroupWitness> witness_;
};

// The command's ending, if it has ended (reaped then); nullopt while it runs.
std::optional<Ending> reap_if_ended(pid_t child) {
  int status = 0;
  pid_t done = 0;
  do {
    done = ::waitpid(child, &status, WNOHANG);
  } while (done < 0 && errno == EINTR);
  if (done == child) return ending_from(status);
  if (done < 0) {
    say(stderr, "pidlock: waitpid {}: {}\n", child, errno_text(errno));
    return Ending{exit_code::os_error, 0};
  }
  return std::nullopt;
}

Ending wait_for(pid_t child) {
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(child, &status, 0);
    if (done == child) return ending_from(status);
    if (done < 0 && errno != EINTR) return {exit_code::os_error, 0};
  }
}

// Waits for the command, relaying signals and keeping the watchdog's schedule, if any.
class Supervision {
 public:
  Supervision(pid_t child, const sigset_t& watched, Relay& relay, const Watchdog* watchdog)
      : child_(child), watched_(watched), relay_(relay), watchdog_(watchdog) {
    if (watchdog_ != nullptr) next_tick_ = Clock::now() + watchdog_->every;
  }

  // The lock was lost (or not known valid when the command started): SIGTERM to the command, and
  // SIGKILL to it and its processes if they are still there when the grace period ends.
  void stop_command() {
    stopping_ = true;
    relay_.send(SIGTERM);
    if (watchdog_->kill_after) {
      kill_at_ =
          Clock::now() + std::chrono::duration_cast<Clock::duration>(watchdog_->kill_after());
    }
  }

  Ending until_the_command_ends() {
    for (;;) {
      siginfo_t info{};
      const auto deadline = next_deadline();
      int sig = 0;
      if (deadline == Clock::time_point::max()) {
        sig = ::sigwaitinfo(&watched_, &info);
      } else {
        const timespec timeout = until(deadline);
        sig = ::sigtimedwait(&watched_, &info, &timeout);
      }
      if (sig < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) {
          say(stderr, "pidlock: sigwaitinfo: {}\n", errno_text(errno));
          return {exit_code::os_error, 0};
        }
        if (auto ended = on_time()) return *ended;
        continue;
      }
      if (sig == SIGCHLD) {
        if (auto ended = reap_if_ended(child_)) return verdict(*ended);
        continue;
      }
      relay_.pass_on(info);
    }
  }

 private:
  Clock::time_point next_deadline() const {
    if (stopping_) return kill_at_;
    return watchdog_ != nullptr ? next_tick_ : Clock::time_point::max();
  }

  // The command's own status, unless pidlock had to stop it.
  Ending verdict(const Ending& ended) const {
    return stopping_ ? Ending{watchdog_->failure_code, 0} : ended;
  }

  std::optional<Ending> on_time() {
    if (stopping_) {
      say(stderr, "pidlock: the command outlived its grace period; sending SIGKILL\n");
      for (const pid_t pid : process_tree(child_)) ::kill(pid, SIGKILL);
      kill_at_ = Clock::time_point::max();
      return std::nullopt;
    }
    // A command that has ended did so on its own, whatever the renewal would say next.
    if (auto ended = reap_if_ended(child_)) return *ended;
    if (!watchdog_->tick()) {
      if (auto ended = reap_if_ended(child_)) return *ended;
      stop_command();
    }
    next_tick_ = Clock::now() + watchdog_->every;
    return std::nullopt;
  }

  pid_t child_;
  sigset_t watched_;
  Relay& relay_;
  const Watchdog* watchdog_;
  Clock::time_point next_tick_ = Clock::time_point::max();
  bool stopping_ = false;
  Clock::time_point kill_at_ = Clock::time_point::max();
};

// Waits for the command's exec: the errno if it failed, 0 once it succeeded (the close-on-exec
// pipe closed without a word), or if the child ended before it.
int exec_result(int exec_error) {
  int error = 0;
  ssize_t got = 0;
  do {
    got = ::read(exec_error, &error, sizeof error);
  } while (got < 0 && errno == EINTR);
  return got == static_cast<ssize_t>(sizeof error) ? error : 0;
}

struct Pipe {
  sys::UniqueFd read;
  sys::UniqueFd write;
};

// A pipe, or a socket pair where the writer must not get SIGPIPE (send with MSG_NOSIGNAL): the
// child may have died before reading.
std::optional<Pipe> make_channel(const char* what) {
  int ends[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
    say(stderr, "pidlock: socketpair for {}: {}\n", what, errno_text(errno));
    return std::nullopt;
  }
  return Pipe{sys::UniqueFd(ends[0]), sys::UniqueFd(ends[1])};
}

std::optional<Pipe> make_pipe(const char* what) {
  int ends[2] = {-1, -1};
  if (::pipe2(ends, O_CLOEXEC) != 0) {
    say(stderr, "pidlock: pipe for {}: {}\n", what, errno_text(errno));
    return std::nullopt;
  }
  return Pipe{sys::UniqueFd(ends[0]), sys::UniqueFd(ends[1])};
}

class SignalMask {
 public:
  SignalMask() {
    ::sigemptyset(&relayed_);
    for (const int sig : relayed_signals) ::sigaddset(&relayed_, sig);
    watched_ = relayed_;
    ::sigaddset(&watched_, SIGCHLD);
    error_ = ::pthread_sigmask(SIG_BLOCK, &watched_, &original_);
  }
  SignalMask(const SignalMask&) = delete;
  SignalMask& operator=(const SignalMask&) = delete;
  ~SignalMask() {
    if (error_ == 0) (void)::pthread_sigmask(SIG_SETMASK, &original_, nullptr);
  }
  int error() const { return error_; }
  const sigset_t& relayed() const { return relayed_; }
  const sigset_t& watched() const { return watched_; }
  const sigset_t& original() const { return original_; }

 private:
  sigset_t relayed_{};
  sigset_t watched_{};
  sigset_t original_{};
  int error_ = 0;
};

}  // namespace

int become(const std::vector<std::string>& command) {
  const auto argv = to_argv(command);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  say(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
  return exec_failure_code(error);
}

Ending supervise(const std::vector<std::string>& command, const InheritedDescriptors& inherited,
                 const Watchdog* watchdog, int lock_fd) {
  const SignalMask mask;
  if (mask.error() != 0) {
    say(stderr, "pidlock: pthread_sigmask: {}\n", errno_text(mask.error()));
    return {exit_code::os_error, 0};
  }
  auto go = make_channel("starting the command");
  auto exec_error = make_pipe("the command's exec");
  if (!go || !exec_error) return {exit_code::os_error, 0};
  Launch launch;
  launch.argv = to_argv(command);
  launch.keep = {0, 1, 2};
  launch.keep.insert(launch.keep.end(), inherited.list().begin(), inherited.list().end());
  launch.keep.push_back(go->read.get());
  launch.keep.push_back(exec_error->write.get());
  std::sort(launch.keep.begin(), launch.keep.end());
  launch.go = go->read.get();
  launch.exec_error = exec_error->write.get();
  launch.parent = ::getpid();
  launch.mask = mask.original();

  const pid_t child = ::fork();
  if (child < 0) {
    say(stderr, "pidlock: fork: {}\n", errno_text(errno));
    return {exit_code::os_error, 0};
  }
  if (child == 0) start_command(launch);
  go->read.reset();
  exec_error->write.reset();

  // The witness joins the group after the command: a signal to the group that comes before the
  // witness exists reaches the command (still blocked, waiting for "go") and pidlock only, and is
  // passed on here, where it merges with the command's own copy.
  Relay relay(child, lock_fd);
  relay.pass_on_pending(mask.relayed());
  if (watchdog != nullptr && !watchdog->still_valid()) {
    say(stderr, "pidlock: the command was not started\n");
    ::kill(child, SIGKILL);  // it has not run anything of its own yet
    (void)wait_for(child);
    return {watchdog->failure_code, 0};
  }
  const char start = 'g';
  if (::send(go->write.get(), &start, 1, MSG_NOSIGNAL) != 1) {
    say(stderr, "pidlock: starting the command: {}\n", errno_text(errno));
    ::kill(child, SIGKILL);
    (void)wait_for(child);
    return {exit_code::os_error, 0};
  }
  go->write.reset();
  if (const int error = exec_result(exec_error->read.get()); error != 0) {
    say(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
    (void)wait_for(child);
    return {exec_failure_code(error), 0};
  }
  Supervision supervision(child, mask.watched(), relay, watchdog);
  // Started while the lock was known valid; if it was lost while the command was being started
  // (a stall between the check and the exec), the command is stopped as for any loss.
  if (watchdog != nullptr && !watchdog->still_valid()) {
    say(stderr, "pidlock: sending SIGTERM to the command\n");
    supervision.stop_command();
  }
  return supervision.until_the_command_ends();
}

int end_as(const Ending& ending) {
  if (ending.signal == 0) return ending.code;
  // Ended like the command, without leaving a core dump of pidlock's own behind.
  (void)::prctl(PR_SET_DUMPABLE, 0);
  const rlimit no_core{0, 0};
  (void)::setrlimit(RLIMIT_CORE, &no_core);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ::sigemptyset(&default_action.sa_mask);
  (void)::sigaction(ending.signal, &default_action, nullptr);
  sigset_t only{};
  ::sigemptyset(&only);
  ::sigaddset(&only, ending.signal);
  (void)::pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
  (void)::raise(ending.signal);
  return ending.code;  // a signal that does not end a process by default (it ended the command)
}

bool export_to_command(const char* name, const std::string& value) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): pidlock has one thread when it prepares the command
  if (::setenv(name, value.c_str(), 1) == 0) return true;
  say(stderr, "pidlock: setenv {}: {}\n", name, errno_text(errno));
  return false;
}

std::chrono::nanoseconds to_wait(double seconds) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(seconds));
}

}  // namespace pidlock::cli
