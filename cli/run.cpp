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

  bool enabled() const { return enabled_; }

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
  // With -o, the command inherits what pidlock was started with and nothing pidlock opens.
  const bool supervised = request.inheritance == Inheritance::close;
  const auto inherited = supervised ? InheritedDescriptors::now() : InheritedDescriptors();
  Progress progress(request.file);
  Options options;
  options.role = request.role;
  options.create_parents = request.create_parents;
  options.shared = request.shared;
  options.defer_to_writers = request.defer_to_writers;
  options.wait = to_wait(request.wait_seconds);
  options.inheritable = !supervised;
  if (progress.enabled()) {
    // Only for a terminal: naming the holder on every tick costs a look at /proc.
    options.on_wait = [&progress](std::chrono::nanoseconds waited,
                                  const std::optional<Holder>& holder) {
      progress.show(waited, holder);
    };
  }

  auto lock = Lock::acquire(request.file, options);
  progress.clear();
  if (!lock) {
    say(stderr, "{}\n", lock.error().message());
    return exit_code_for(lock.error(), FileUse::lock, request.busy_exit_code);
  }
  if (const auto note = lock->note(); !note.empty()) say(stderr, "pidlock: note: {}\n", note);
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
  if (!supervised) {
    // Nothing needs to stay between the kernel's lock and the command: it becomes pidlock, with
    // pidlock's PID (the one recorded), group, terminal and the lock's descriptor. Signals, job
    // control and supervisors then see the command exactly as if it had been started directly.
    return become(request.command);
  }
  const Ending ending = supervise(request.command, inherited, nullptr, lock->native_handle());
  lock->release();
  return end_as(ending);
}

}  // namespace pidlock::cli
