// The pidlock command's subcommands, behind the argument parsing in main.cpp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pidlock/pidlock.hpp"

namespace pidlock::cli {

// sysexits(3): the codes shell scripts and service managers already understand.
namespace exit_code {
inline constexpr int ok = 0;
inline constexpr int usage = 64;
inline constexpr int unavailable = 69;  // etcd cannot be reached
inline constexpr int no_input = 66;
inline constexpr int software = 70;
inline constexpr int os_error = 71;
inline constexpr int cant_create = 73;
inline constexpr int io_error = 74;
inline constexpr int busy = 75;  // EX_TEMPFAIL: try again later
inline constexpr int lease_lost = 76;  // fleet: etcd lost past the lease TTL; the command got SIGTERM
inline constexpr int no_permission = 77;
inline constexpr int cannot_execute = 126;
inline constexpr int not_found = 127;
}  // namespace exit_code

enum class Inheritance {
  inherit,  // default: the command inherits the lock, as with flock(1)
  close,    // -o: only pidlock holds it
  exec,     // --exec: pidlock becomes the command
};

// The longest -w: a year. Longer is no wait a person means; the bound keeps every deadline
// representable, and NaN and infinity out.
inline constexpr double max_wait_seconds = 365.0 * 24 * 60 * 60;

struct RunRequest {
  std::string file;
  std::vector<std::string> command;
  double wait_seconds = 0;
  int busy_exit_code = exit_code::busy;
  Inheritance inheritance = Inheritance::inherit;
  std::string role = "installer";
  bool create_parents = true;
  bool shared = false;  // -s: a reader's lock
  bool defer_to_writers = false;
  // Fleet mode: FILE is the lock's NAME in etcd.
  std::vector<std::string> etcd;
  int slots = 1;
  int ttl_seconds = 5;
  bool warn_on_lease_loss = false;
  // After SIGTERM on lease loss, SIGKILL this many seconds later; negative: derived from the
  // lease, so that the command is gone before etcd could hand the slot to the next holder.
  double kill_after_seconds = -1;
};

struct StatusRequest {
  std::string file;
  bool json = false;
  std::vector<std::string> etcd;  // fleet mode: FILE is the NAME
  int slots = 1;
};

int run(const RunRequest& request);
int run_fleet(const RunRequest& request);
int status(const StatusRequest& request);
int status_fleet(const StatusRequest& request);

// The exit code for a failed acquire or inspect; `open_failure` is the code for failing to
// open the file (CANTCREAT when we meant to create it, NOINPUT when only reading).
int exit_code_for(const Error& error, int busy_code, int open_failure);

}  // namespace pidlock::cli
