// pidlock run: hold the lock on a file while a command runs.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "commands.hpp"
#include "escape.hpp"
#include "process.hpp"

namespace pidlock::cli {
namespace {

// One updating line on a terminal while we wait; nothing when stderr is a pipe or a file.
class Progress {
 public:
  explicit Progress(std::string path)
      : path_(std::move(path)), enabled_(::isatty(STDERR_FILENO) == 1) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { clear(); }

  void show(std::chrono::nanoseconds waited, const std::optional<Holder>& holder) {
    if (!enabled_) return;
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(waited).count();
    // The holder's name and the path are other people's bytes: escaped, as everywhere.
    std::string who =
        holder
            ? "pid " + std::to_string(holder->pid) +
                  (holder->command.empty() ? "" : " (" + text::for_terminal(holder->command) + ")")
            : std::string("the holder");
    say(stderr, "\rwaiting for {} to release {} — {} s\033[K", who, text::for_terminal(path_),
        secs);
    shown_ = true;
  }

  void clear() {
    if (!shown_) return;
    say(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  std::string path_;
  bool enabled_;
  bool shown_ = false;
};

}  // namespace

int run(const RunRequest& request) {
  Progress progress(request.file);
  Options options;
  options.role = request.role;
  options.create_parents = request.create_parents;
  options.shared = request.shared;
  options.defer_to_writers = request.defer_to_writers;
  options.wait = to_wait(request.wait_seconds);
  options.inheritable = request.inheritance != Inheritance::close;
  options.on_wait = [&progress](std::chrono::nanoseconds waited,
                                const std::optional<Holder>& holder) {
    progress.show(waited, holder);
  };

  auto lock = Lock::acquire(request.file, options);
  progress.clear();
  if (!lock) {
    say(stderr, "{}\n", lock.error().message());
    return exit_code_for(lock.error(), FileUse::lock, request.busy_exit_code);
  }
  if (auto warning = unreliable_filesystem(request.file)) {
    say(stderr, "pidlock: warning: {}\n", *warning);
  }
  // The command gets what describes this lock, and nothing of an outer fleet lock's or of
  // pidlock-fleet's password (set for a fleet's hosts alike, in a shared EnvironmentFile=).
  for (const char* stale :
       {"PIDLOCK_ETCD_PASSWORD", "PIDLOCK_FENCE", "PIDLOCK_NAME", "PIDLOCK_SLOT"}) {
    ::unsetenv(stale);  // NOLINT(concurrency-mt-unsafe): one thread here
  }
  // Absolute, so that it still names the lock after the command changes directory.
  std::error_code ignored;
  const auto absolute = std::filesystem::absolute(request.file, ignored);
  if (!export_to_command("PIDLOCK_FILE", ignored ? request.file : absolute.string())) {
    return exit_code::os_error;
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

}  // namespace pidlock::cli
