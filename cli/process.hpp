// Running the command under the lock: in place of pidlock (the local lock's default), or as
// pidlock's child, tied to it, where pidlock must stay to hold the lock alone (-o) or to renew a
// fleet lease. The model is written down in pidlock(1), "The command and its job".
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "descriptors.hpp"
#include "output.hpp"

namespace pidlock::cli {

// Something to do every so often while the command runs (renew the fleet lease). When `tick`
// returns false the lock is lost: the command is sent SIGTERM and pidlock exits with
// `failure_code` once it ends; if it has not ended `kill_after()` later (asked at that moment), it
// and its descendants are sent SIGKILL. `still_valid` says whether the lock is known to be held at
// this moment, without asking anyone: the command starts only if it is, and is stopped as above if
// it was not by the time it started.
struct Watchdog {
  std::chrono::milliseconds every;
  std::function<bool()> tick;
  std::function<bool()> still_valid;
  int failure_code;
  std::function<std::chrono::nanoseconds()> kill_after;  // empty: SIGTERM only
};

// How the command ended: its exit status, or the signal that killed it (then `code` is 128+N), or
// the code pidlock chose (126/127: it could not be run; the watchdog's failure code; 71).
struct Ending {
  int code = 0;
  int signal = 0;
};

// Replaces this process with `command`, which thereby keeps pidlock's PID, process group, terminal
// and every inheritable descriptor (the lock's among them). Returns only on failure, having said
// why, with 127 (not found) or 126 (cannot be executed).
int become(const std::vector<std::string>& command);

// Runs `command` as pidlock's child in pidlock's process group, tied to pidlock: it gets SIGKILL if
// pidlock dies, inherits only `inherited`, and gets each signal sent to pidlock alone, once.
// `lock_fd`, the lock held for it (or -1), stays held until the command is dead, even if pidlock
// dies first. Returns how it ended once it has.
Ending supervise(const std::vector<std::string>& command, const InheritedDescriptors& inherited,
                 const Watchdog* watchdog = nullptr, int lock_fd = -1);

// Ends pidlock the way the command ended: killed by the same signal (so that a shell sees a job
// interrupted by ^C as interrupted), or returns the code for main() to exit with.
int end_as(const Ending& ending);

// Puts NAME=VALUE in the environment the command will get (PIDLOCK_FILE, PIDLOCK_FENCE…). Says
// why and returns false if it cannot (out of memory).
bool export_to_command(const char* name, const std::string& value);

// -w SECONDS as a wait; `seconds` is finite and within max_wait_seconds (the parser's promise).
std::chrono::nanoseconds to_wait(double seconds);

}  // namespace pidlock::cli
