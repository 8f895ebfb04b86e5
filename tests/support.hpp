// Test support: temporary directories and real child processes, synchronised through pipes and
// waitpid, never through sleeps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pidlock/pidlock.hpp"

namespace pidlock::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A child process with its stdin, stdout and stderr on pipes.
class Child {
 public:
  // Runs argv (PATH is searched).
  static Child spawn(const std::vector<std::string>& argv);
  // Runs `body` in a forked copy of this process; its return value is the exit code.
  static Child fork(const std::function<int()>& body);

  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();  // kills and reaps a child still running

  pid_t pid() const { return pid_; }
  // Reads stdout up to the next newline; fails the test if none comes within `timeout`.
  std::string read_line(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void close_stdin();
  void signal(int sig) const;
  // Waits for the exit (with a deadline); returns the exit code, or 128+N for signal N.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool exited_within(std::chrono::milliseconds timeout);  // true and reaped, or false
  std::string drain_stdout();
  std::string drain_stderr();
  // Reads stderr until it contains `needle`; false if it does not within `timeout`. What was
  // read stays available to drain_stderr().
  bool stderr_shows(const std::string& needle,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  Child() = default;
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::optional<int> status_;
  std::string out_buffer_;
  std::string err_buffer_;
};

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs argv to completion (with a deadline) and collects its output.
Result run(const std::vector<std::string>& argv,
           std::chrono::milliseconds timeout = std::chrono::seconds(20));

// A forked child that prints "ready" and then idles until its stdin closes: with a lock taken
// first when `path` is given (it prints the error instead of "ready" if the acquire fails), or
// just sharing whatever descriptors it inherited.
Child lock_holder(const std::filesystem::path& path, const Options& options = {});
Child idle_child();
void wait_for_eof_on_stdin();

// Polls inspect() until the lock on `path` has a blocked waiter.
bool someone_waits(const std::filesystem::path& path,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Polls `condition` until it holds or the deadline passes.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

std::string read_text(const std::filesystem::path& path);
void write_text(const std::filesystem::path& path, const std::string& text);

// argv for execv(): pointers into `argv`, which must outlive the call.
std::vector<char*> c_argv(const std::vector<std::string>& argv);

// The built pidlock binary, and util-linux flock(1).
std::string pidlock_binary();
inline const std::string flock_binary = "flock";

}  // namespace pidlock::test
