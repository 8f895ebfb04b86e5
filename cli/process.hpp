// Running the command: fork and exec, signal forwarding, exit statuses. Shared by the local and
// the fleet modes of `pidlock run`.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace pidlock::cli {

// Something to do every so often while the command runs (renew the fleet lease). When `tick`
// returns false the command is sent SIGTERM and pidlock exits with `failure_code` once it ends.
struct Watchdog {
  std::chrono::milliseconds every;
  std::function<bool()> tick;
  int failure_code;
};

// Forks, execs `command` in the child and waits for it, forwarding SIGINT, SIGTERM, SIGHUP and
// SIGQUIT; returns its exit status (128+N for signal N, 127/126 when it cannot be run).
int fork_and_supervise(const std::vector<std::string>& command, const Watchdog* watchdog = nullptr);

// Replaces this process with `command`; returns only on failure, with 127 or 126.
int exec_in_place(const std::vector<std::string>& command);

// -w SECONDS as a wait: fractions allowed, huge values mean forever.
std::chrono::nanoseconds to_wait(double seconds);

std::string errno_text(int error);
std::string join(const std::vector<std::string>& words);

}  // namespace pidlock::cli
