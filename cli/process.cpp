#include "process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>  // environ (_GNU_SOURCE)

#include <algorithm>
#include <array>
#include <cerrno>
#include <optional>
#include <system_error>

#include "commands.hpp"
#include "pidlock/pidlock.hpp"
#include "sys.hpp"

namespace pidlock::cli {
namespace {

using Clock = std::chrono::steady_clock;

// What an operator, a service manager or timeout(1) sends to stop or to poke a job: all but
// SIGCONT would end pidlock by default and leave the command running with the lock. SIGCONT
// because a stopped command acts on no signal until continued: timeout(1) follows its signal with
// SIGCONT to its group, which a command in a group of its own would otherwise miss.
constexpr std::array forwarded_signals{SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,
                                       SIGUSR1, SIGUSR2, SIGALRM, SIGCONT};

// The same signal from the same process this soon after one pidlock passed on is taken for the
// same signal sent twice, as timeout(1) does (to its child, then to its process group), and is not
// passed on again. The two sends are back-to-back system calls; a second covers any scheduling
// delay between them, and a deliberate repeat this close is rare and changes nothing: the command
// has the signal already.
constexpr auto repeat_window = std::chrono::seconds(1);

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

int status_to_exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return exit_code::software;
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

// Where the command runs relative to pidlock's process group.
enum class Group {
  // pidlock is the foreground job of its terminal: the command joins it, so that it may read the
  // terminal, and the terminal's ^C, ^\ and hangup reach it directly.
  shared,
  // Anywhere else (no terminal, a background job: scripts, cron, service managers, timeout(1)):
  // the command leads a group of its own, so a signal sent to pidlock's group reaches pidlock
  // alone, and pidlock passes it on to the command's group.
  own,
};

Group group_for_command() {
  // Failing to open /dev/tty is the answer, not an error: there is no controlling terminal.
  const int tty = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (tty < 0) return Group::own;
  const pid_t foreground = ::tcgetpgrp(tty);
  ::close(tty);
  return foreground == ::getpgrp() ? Group::shared : Group::own;
}

// Passes on the signals pidlock receives while the command runs, each exactly once.
class Relay {
 public:
  Relay(pid_t command, Group group) : command_(command), group_(group) {}

  void pass_on(const siginfo_t& info) {
    if (reached_command_directly(info) || repeats_last(info)) return;
    send(info.si_signo);
  }

  void send(int sig) const {
    // The command's whole group, as a signal to pidlock's group would have reached it had it
    // stayed there; the group's ID cannot be reused while the command is unreaped. A command
    // that has moved to another group (setpgid) is signalled alone.
    if (group_ == Group::own && ::kill(-command_, sig) == 0) return;
    if (::kill(command_, sig) != 0) {
      say(stderr, "pidlock: kill -{} {}: {}\n", sig, command_, errno_text(errno));
    }
  }

 private:
  // The terminal signals its whole foreground group, which the command shares with us then.
  bool reached_command_directly(const siginfo_t& info) const {
    return group_ == Group::shared && info.si_code == SI_KERNEL;
  }

  bool repeats_last(const siginfo_t& info) {
    const bool from_a_process = info.si_code <= 0;  // SI_USER, SI_QUEUE, SI_TKILL...
    if (!from_a_process) return false;
    auto& last = last_passed_[static_cast<std::size_t>(info.si_signo)];
    const auto now = Clock::now();
    if (last && last->sender == info.si_pid && last->uid == info.si_uid &&
        now - last->at < repeat_window) {
      return true;
    }
    last = Passed{info.si_pid, info.si_uid, now};
    return false;
  }

  struct Passed {
    pid_t sender;
    uid_t uid;
    Clock::time_point at;
  };
  pid_t command_;
  Group group_;
  std::array<std::optional<Passed>, NSIG> last_passed_{};
};

timespec until(Clock::time_point deadline) { return sys::to_timespec(deadline - Clock::now()); }

// Waits for the command, relaying signals and running the watchdog, if any, on its schedule.
int supervise(pid_t child, const sigset_t& watched, Relay& relay, const Watchdog* watchdog) {
  auto next_tick = watchdog != nullptr ? Clock::now() + watchdog->every : Clock::time_point::max();
  bool failed = false;
  auto kill_at = Clock::time_point::max();  // after a failed tick: SIGKILL if still running then
  for (;;) {
    siginfo_t info{};
    int sig = 0;
    if (failed && kill_at != Clock::time_point::max()) {
      const timespec timeout = until(kill_at);
      sig = ::sigtimedwait(&watched, &info, &timeout);
      if (sig < 0 && errno == EAGAIN) {
        say(stderr, "pidlock: the command outlived its grace period; sending SIGKILL\n");
        relay.send(SIGKILL);
        kill_at = Clock::time_point::max();
        continue;
      }
    } else if (watchdog != nullptr && !failed) {
      const timespec timeout = until(next_tick);
      sig = ::sigtimedwait(&watched, &info, &timeout);
      if (sig < 0 && errno == EAGAIN) {
        if (!watchdog->tick()) {
          failed = true;
          relay.send(SIGTERM);
          if (watchdog->kill_after) {
            kill_at =
                Clock::now() + std::chrono::duration_cast<Clock::duration>(watchdog->kill_after());
          }
        }
        next_tick = Clock::now() + watchdog->every;
        continue;
      }
    } else {
      sig = ::sigwaitinfo(&watched, &info);
    }
    if (sig < 0) {
      if (errno == EINTR) continue;
      say(stderr, "pidlock: sigwaitinfo: {}\n", errno_text(errno));
      return exit_code::os_error;
    }
    if (sig == SIGCHLD) {
      int status = 0;
      const pid_t done = ::waitpid(child, &status, WNOHANG);
      if (done == child) return failed ? watchdog->failure_code : status_to_exit_code(status);
      if (done < 0 && errno != EINTR) {
        say(stderr, "pidlock: waitpid: {}\n", errno_text(errno));
        return exit_code::os_error;
      }
      continue;
    }
    relay.pass_on(info);
  }
}

// posix_spawn (vfork-like in glibc) rather than fork: no page tables to copy, and an exec failure
// comes back as an error number instead of from a child. Returns 0 or the error number.
int spawn(const std::vector<std::string>& command, const sigset_t& mask, Group group,
          pid_t& child) {
  posix_spawnattr_t attributes;
  if (const int error = ::posix_spawnattr_init(&attributes); error != 0) return error;
  short flags = POSIX_SPAWN_SETSIGMASK;
  if (group == Group::own) flags |= POSIX_SPAWN_SETPGROUP;  // pgroup 0: its own PID
  int error = ::posix_spawnattr_setsigmask(&attributes, &mask);
  if (error == 0) error = ::posix_spawnattr_setflags(&attributes, flags);
  if (error == 0) error = ::posix_spawnattr_setpgroup(&attributes, 0);
  const auto argv = to_argv(command);
  if (error == 0)
    error = ::posix_spawnp(&child, argv[0], nullptr, &attributes, argv.data(), environ);
  ::posix_spawnattr_destroy(&attributes);
  return error;
}

}  // namespace

bool fill_closed_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (is_open(fd)) continue;
    // Not close-on-exec: the command is to find /dev/null there too.
    const int null = ::open("/dev/null", O_RDWR | O_NOCTTY);
    if (null < 0) {
      say(stderr, "pidlock: open /dev/null: {}\n", errno_text(errno));
      return false;
    }
    // open() returns the lowest free descriptor, which is `fd`, the lower ones being open.
    if (null != fd) {
      const bool moved = ::dup2(null, fd) == fd;
      const int error = errno;
      ::close(null);
      if (!moved) {
        say(stderr, "pidlock: dup2 /dev/null: {}\n", errno_text(error));
        return false;
      }
    }
  }
  return true;
}

int fork_and_supervise(const std::vector<std::string>& command, const Watchdog* watchdog) {
  const Group group = group_for_command();
  sigset_t watched{};
  sigset_t original{};
  ::sigemptyset(&watched);
  for (const int sig : forwarded_signals) ::sigaddset(&watched, sig);
  ::sigaddset(&watched, SIGCHLD);
  if (const int error = ::pthread_sigmask(SIG_BLOCK, &watched, &original); error != 0) {
    say(stderr, "pidlock: pthread_sigmask: {}\n", errno_text(error));
    return exit_code::os_error;
  }
  pid_t child = -1;
  if (const int error = spawn(command, original, group, child); error != 0) {
    say(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
    (void)::pthread_sigmask(SIG_SETMASK, &original, nullptr);
    return exec_failure_code(error);
  }
  Relay relay(child, group);
  return supervise(child, watched, relay, watchdog);
}

int exec_in_place(const std::vector<std::string>& command) {
  const auto argv = to_argv(command);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  say(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
  return exec_failure_code(error);
}

// The errno text, without strerror()'s shared buffer.
std::string errno_text(int error) { return std::generic_category().message(error); }

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

void write_quietly(std::FILE* stream, std::string_view text) noexcept {
  // A write to a pipe nobody reads raises SIGPIPE, which would end pidlock with 141: block it for
  // the write, and take back the one the write raised unless one was already pending.
  sigset_t pipe_only{};
  sigset_t previous{};
  ::sigemptyset(&pipe_only);
  ::sigaddset(&pipe_only, SIGPIPE);
  const bool blocked = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous) == 0;
  sigset_t pending{};
  const bool was_pending = ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1;
  const bool written = std::fwrite(text.data(), 1, text.size(), stream) == text.size();
  const bool flushed = std::fflush(stream) == 0;
  const bool broken_pipe = (!written || !flushed) && errno == EPIPE;
  std::clearerr(stream);
  if (blocked) {
    if (broken_pipe && !was_pending) {
      const timespec now{};
      while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
      }
    }
    (void)::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
}

}  // namespace pidlock::cli
