#include "process.hpp"

#include <fmt/core.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>  // environ (_GNU_SOURCE)

#include <array>
#include <cerrno>
#include <cmath>
#include <system_error>

#include "commands.hpp"
#include "pidlock/pidlock.hpp"


namespace pidlock::cli {
namespace {

constexpr std::array forwarded_signals{SIGINT, SIGTERM, SIGHUP, SIGQUIT};

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

// Waits for the child, passing on the signals an operator or a service manager sends us. A
// signal the terminal sent (si_code SI_KERNEL) already reached the child, which is in our
// process group: sending it again would turn one Ctrl-C into two.
int supervise(pid_t child, const sigset_t& watched, const Watchdog* watchdog) {
  using Clock = std::chrono::steady_clock;
  auto next_tick = watchdog != nullptr ? Clock::now() + watchdog->every : Clock::time_point::max();
  bool failed = false;
  for (;;) {
    siginfo_t info{};
    int sig = 0;
    if (watchdog != nullptr && !failed) {
      const auto left = std::max(Clock::duration::zero(), next_tick - Clock::now());
      const auto secs = std::chrono::duration_cast<std::chrono::seconds>(left);
      const timespec timeout{static_cast<time_t>(secs.count()),
                             static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(left - secs).count())};
      sig = ::sigtimedwait(&watched, &info, &timeout);
      if (sig < 0 && errno == EAGAIN) {
        if (!watchdog->tick()) {
          failed = true;
          ::kill(child, SIGTERM);
        }
        next_tick = Clock::now() + watchdog->every;
        continue;
      }
    } else {
      sig = ::sigwaitinfo(&watched, &info);
    }
    if (sig < 0) {
      if (errno == EINTR) continue;
      fmt::print(stderr, "pidlock: sigwaitinfo: {}\n", errno_text(errno));
      return exit_code::os_error;
    }
    if (sig == SIGCHLD) {
      int status = 0;
      const pid_t done = ::waitpid(child, &status, WNOHANG);
      if (done == child) return failed ? watchdog->failure_code : status_to_exit_code(status);
      if (done < 0 && errno != EINTR) {
        fmt::print(stderr, "pidlock: waitpid: {}\n", errno_text(errno));
        return exit_code::os_error;
      }
      continue;
    }
    if (info.si_code != SI_KERNEL) ::kill(child, sig);
  }
}

}  // namespace

int fork_and_supervise(const std::vector<std::string>& command, const Watchdog* watchdog) {
  sigset_t watched{};
  sigset_t original{};
  ::sigemptyset(&watched);
  for (const int sig : forwarded_signals) ::sigaddset(&watched, sig);
  ::sigaddset(&watched, SIGCHLD);
  // pidlock has one thread: the process mask is the thread's.
  ::sigprocmask(SIG_BLOCK, &watched, &original);  // NOLINT(concurrency-mt-unsafe)
  // posix_spawn (vfork-like in glibc) rather than fork: no page tables to copy, and an exec
  // failure comes back as an error number instead of from a child.
  posix_spawnattr_t attributes;
  ::posix_spawnattr_init(&attributes);
  ::posix_spawnattr_setsigmask(&attributes, &original);
  ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  const auto argv = to_argv(command);
  pid_t child = -1;
  const int error = ::posix_spawnp(&child, argv[0], nullptr, &attributes, argv.data(), environ);
  ::posix_spawnattr_destroy(&attributes);
  if (error != 0) {
    fmt::print(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
    return exec_failure_code(error);
  }
  return supervise(child, watched, watchdog);
}

int exec_in_place(const std::vector<std::string>& command) {
  const auto argv = to_argv(command);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  fmt::print(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
  return exec_failure_code(error);
}

// The errno text, without strerror()'s shared buffer.
std::string errno_text(int error) { return std::generic_category().message(error); }

std::chrono::nanoseconds to_wait(double seconds) {
  if (!std::isfinite(seconds)) return wait_forever;
  // Far beyond any deadline a steady clock can represent: treat as forever.
  if (seconds > 1e9) return wait_forever;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

}  // namespace pidlock::cli
