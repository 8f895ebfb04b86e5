// The pidlock command's subcommands, behind the argument parsing in command_line.cpp.
#pragma once

#include <string>
#include <vector>

#include "exit_status.hpp"

namespace pidlock::cli {

enum class Inheritance {
  inherit,  // default: the command inherits the lock, as with flock(1)
  close,    // -o: only pidlock holds it
  exec,     // --exec: pidlock becomes the command
};

// The longest -w: a year. Longer is no wait a person means; the bound keeps every deadline
// representable, and NaN and infinity out.
inline constexpr double max_wait_seconds = 365.0 * 24 * 60 * 60;

// `pidlock run`, local or fleet: FILE is the lock file, or the fleet lock's name.
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
};

struct StatusRequest {
  std::string file;
  bool json = false;
};

// Fleet mode: where the lock lives, how to reach it, and how a holder keeps its slot. Options
// win over the environment (PIDLOCK_ETCD_*), which wins over the defaults; see pidlock(1).
struct FleetRequest {
  bool enabled = false;                // --etcd, --fleet, or any other fleet option
  std::vector<std::string> endpoints;  // --etcd, or PIDLOCK_ETCD_ENDPOINTS
  std::string prefix = "pidlock/";     // --prefix, or PIDLOCK_ETCD_PREFIX
  std::string cacert;                  // --cacert, or PIDLOCK_ETCD_CACERT
  std::string cert;                    // --cert, or PIDLOCK_ETCD_CERT
  std::string key;                     // --key, or PIDLOCK_ETCD_KEY
  bool insecure_skip_verify = false;   // the option only: never from the environment
  std::string user;                    // --user, or PIDLOCK_ETCD_USER
  std::string password_file;           // --password-file; else PIDLOCK_ETCD_PASSWORD is used
  int slots = 1;
  int ttl_seconds = 5;
  bool warn_on_lease_loss = false;
  // After SIGTERM on lease loss, SIGKILL this many seconds later; negative: derived from the
  // lease, so that the command is gone before etcd could hand the slot to the next holder.
  double kill_after_seconds = -1;
  // pidlock's own command line, for the plain binary to hand to pidlock-fleet.
  std::vector<std::string> argv;
};

int run(const RunRequest& request);
int status(const StatusRequest& request);

// Fleet mode, the seam between the two binaries: pidlock-fleet implements these (fleet.cpp);
// the plain pidlock hands its command line over to pidlock-fleet (fleet_handoff.cpp), so that
// only the latter loads libcurl.
int run_fleet(const RunRequest& request, const FleetRequest& fleet);
int status_fleet(const StatusRequest& request, const FleetRequest& fleet);

}  // namespace pidlock::cli
