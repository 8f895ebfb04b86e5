// Running the command: descriptors, spawn and exec, signal forwarding, exit statuses, and output
// that cannot fail. Shared by the local and the fleet modes of `pidlock run`.
#pragma once

#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace pidlock::cli {

// Something to do every so often while the command runs (renew the fleet lease). When `tick`
// returns false the command is sent SIGTERM and pidlock exits with `failure_code` once it ends;
// if it has not ended `kill_after()` later (asked at that moment), it is sent SIGKILL.
struct Watchdog {
  std::chrono::milliseconds every;
  std::function<bool()> tick;
  int failure_code;
  std::function<std::chrono::nanoseconds()> kill_after;  // empty: SIGTERM only
};

// Puts /dev/null on whichever of descriptors 0, 1 and 2 is closed, so that no file pidlock opens
// later (the lock file above all) can become the command's stdin, stdout or stderr. Returns
// false, having said why, if it cannot.
bool fill_closed_standard_descriptors();

// Spawns `command` and waits for it, passing on the signals pidlock receives so that each reaches
// the command once (see pidlock(1), NOTES); returns its exit status (128+N for signal N, 127/126
// when it cannot be run).
int fork_and_supervise(const std::vector<std::string>& command, const Watchdog* watchdog = nullptr);

// Replaces this process with `command`; returns only on failure, with 127 or 126.
int exec_in_place(const std::vector<std::string>& command);

// Puts NAME=VALUE in the environment the command will get (PIDLOCK_FILE, PIDLOCK_FENCE…). Says
// why and returns false if it cannot (out of memory).
bool export_to_command(const char* name, const std::string& value);

// -w SECONDS as a wait; `seconds` is finite and within max_wait_seconds (the parser's promise).
std::chrono::nanoseconds to_wait(double seconds);

std::string errno_text(int error);

// Writes `text` to `stream` and flushes it, ignoring failure: a closed, full or broken stdout or
// stderr must not change pidlock's exit status, nor kill it with SIGPIPE.
void write_quietly(std::FILE* stream, std::string_view text) noexcept;

// fmt::print that never throws and never fails the caller (see write_quietly).
template <typename... Args>
void say(std::FILE* stream, fmt::format_string<Args...> format, Args&&... args) noexcept {
  try {
    write_quietly(stream, fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; nothing useful can be said
  }
}

}  // namespace pidlock::cli
