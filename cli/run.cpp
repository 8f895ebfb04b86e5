// pidlock run: hold the lock while a command runs.
#include <fmt/core.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>

#include "commands.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::cli {
namespace {

// The errno text, without strerror()'s shared buffer.
std::string errno_text(int error) { return std::generic_category().message(error); }

constexpr std::array forwarded_signals{SIGINT, SIGTERM, SIGHUP, SIGQUIT};

std::chrono::nanoseconds to_wait(double seconds) {
  if (!std::isfinite(seconds)) return wait_forever;
  // Far beyond any deadline a steady clock can represent: treat as forever.
  if (seconds > 1e9) return wait_forever;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
}

// One updating line on a terminal while we wait; nothing when stderr is a pipe or a file.
class Progress {
 public:
  explicit Progress(std::string path) : path_(std::move(path)), enabled_(::isatty(STDERR_FILENO) == 1) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { clear(); }

  void show(std::chrono::nanoseconds waited, const std::optional<Holder>& holder) {
    if (!enabled_) return;
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(waited).count();
    std::string who = holder ? fmt::format("pid {}{}", holder->pid,
                                           holder->command.empty() ? "" : fmt::format(" ({})", holder->command))
                             : std::string("the holder");
    fmt::print(stderr, "\rwaiting for {} to release {} — {} s\033[K", who, path_, secs);
    (void)std::fflush(stderr);
    shown_ = true;
  }

  void clear() {
    if (!shown_) return;
    fmt::print(stderr, "\r\033[K");
    (void)std::fflush(stderr);
    shown_ = false;
  }

 private:
  std::string path_;
  bool enabled_;
  bool shown_ = false;
};

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

// Runs between fork and exec. pidlock has a single thread, so the child may format its message.
[[noreturn]] void exec_child(const std::vector<char*>& argv, const sigset_t& original_mask) {
  ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread
  ::execvp(argv[0], argv.data());
  const int error = errno;
  const std::string message = fmt::format("pidlock: {}: {}\n", argv[0], errno_text(error));
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message.data(), message.size());
  ::_exit(exec_failure_code(error));
}

int status_to_exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return exit_code::software;
}

// Something to do every so often while the command runs (renew the fleet lease). When `tick`
// returns false the command is sent SIGTERM and pidlock exits with `failure_code` once it ends.
struct Watchdog {
  std::chrono::milliseconds every;
  std::function<bool()> tick;
  int failure_code;
};

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

int fork_and_supervise(const std::vector<std::string>& command, const Watchdog* watchdog = nullptr) {
  sigset_t watched{};
  sigset_t original{};
  ::sigemptyset(&watched);
  for (const int sig : forwarded_signals) ::sigaddset(&watched, sig);
  ::sigaddset(&watched, SIGCHLD);
  // pidlock has one thread: the process mask is the thread's.
  ::sigprocmask(SIG_BLOCK, &watched, &original);  // NOLINT(concurrency-mt-unsafe)
  const auto argv = to_argv(command);
  const pid_t child = ::fork();
  if (child < 0) {
    fmt::print(stderr, "pidlock: fork: {}\n", errno_text(errno));
    return exit_code::os_error;
  }
  if (child == 0) exec_child(argv, original);
  return supervise(child, watched, watchdog);
}

int exec_in_place(const std::vector<std::string>& command) {
  const auto argv = to_argv(command);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  fmt::print(stderr, "pidlock: {}: {}\n", command.front(), errno_text(error));
  return exec_failure_code(error);
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

}  // namespace

int exit_code_for(const Error& error, int busy_code, int open_failure) {
  if (error.held()) return busy_code;
  const int value = error.code().value();
  if (value == EACCES || value == EPERM) return exit_code::no_permission;
  const auto& op = error.operation();
  if (op == "write" || op == "truncate" || op == "fdatasync" || value == EIO ||
      value == ENOSPC || value == EDQUOT) {
    return exit_code::io_error;
  }
  if (op == "open" || op == "mkdir" || op == "stat" || op == "fstat") return open_failure;
  return exit_code::os_error;
}

int run(const RunRequest& request) {
  Progress progress(request.file);
  Options options;
  options.role = request.role;
  options.create_parents = request.create_parents;
  options.wait = to_wait(request.wait_seconds);
  options.inheritable = request.inheritance != Inheritance::close;
  options.on_wait = [&progress](std::chrono::nanoseconds waited, const std::optional<Holder>& holder) {
    progress.show(waited, holder);
  };

  auto lock = Lock::acquire(request.file, options);
  progress.clear();
  if (!lock) {
    fmt::print(stderr, "{}\n", lock.error().message());
    return exit_code_for(lock.error(), request.busy_exit_code, exit_code::cant_create);
  }
  if (auto warning = unreliable_filesystem(request.file)) {
    fmt::print(stderr, "pidlock: warning: {}\n", *warning);
  }
  switch (request.inheritance) {
    case Inheritance::exec:
      return exec_in_place(request.command);
    case Inheritance::inherit:
      // pidlock's own descriptor closes when it exits; the command's copy keeps the lock.
      return fork_and_supervise(request.command);
    case Inheritance::close: {
      const int code = fork_and_supervise(request.command);
      lock->release();
      return code;
    }
  }
  return exit_code::software;
}

int run_fleet(const RunRequest& request) {
  fleet::Options options;
  options.endpoints = request.etcd;
  options.slots = request.slots;
  options.ttl = std::chrono::seconds(request.ttl_seconds);
  options.wait = to_wait(request.wait_seconds);
  options.role = request.role;
  options.command = join(request.command);
  // A renewal must give up well within the TTL, or a hung member would eat the whole lease.
  const auto third_of_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(options.ttl) / 3;
  options.request_timeout = std::min<std::chrono::milliseconds>(std::chrono::seconds(2), third_of_ttl);
  auto slot = fleet::Slot::acquire(request.file, options);
  if (!slot) {
    fmt::print(stderr, "{}\n", slot.error().message());
    return slot.error().held() ? request.busy_exit_code : exit_code::unavailable;
  }
  bool warned = false;
  const Watchdog watchdog{
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(100), third_of_ttl),
      [&]() {
        auto renewed = slot->keep_alive();
        if (renewed) {
          if (warned) fmt::print(stderr, "pidlock: etcd answers again; renewing the fleet lock {}\n", request.file);
          warned = false;
          return true;
        }
        if (!slot->expired()) return true;  // not yet past the TTL: try again next tick
        if (request.warn_on_lease_loss) {
          if (!warned) {
            fmt::print(stderr, "pidlock: warning: the fleet lock {} may be lost ({}); the command goes on\n",
                       request.file, renewed.error().message());
          }
          warned = true;
          return true;
        }
        fmt::print(stderr, "pidlock: lost the fleet lock {} ({}); sending SIGTERM to the command\n",
                   request.file, renewed.error().message());
        return false;
      },
      exit_code::lease_lost};
  const int code = fork_and_supervise(request.command, &watchdog);
  slot->release();
  return code;
}

}  // namespace pidlock::cli
