// pidlock's exit statuses, and the one table that turns an error into one, local or fleet.
// pidlock(1), EXIT STATUS, documents this table. It names the fleet's kinds (pidlock/fleet.hpp, a
// header alone: the plain pidlock does not link the fleet library).
#pragma once

#include "pidlock/fleet.hpp"
#include "pidlock/pidlock.hpp"

namespace pidlock::cli {

// sysexits(3): the codes shell scripts and service managers already understand.
namespace exit_code {
inline constexpr int ok = 0;
inline constexpr int usage = 64;
inline constexpr int no_input = 66;
inline constexpr int unavailable = 69;
inline constexpr int software = 70;
inline constexpr int os_error = 71;
inline constexpr int cant_create = 73;
inline constexpr int io_error = 74;
inline constexpr int busy = 75;        // EX_TEMPFAIL: try again later
inline constexpr int lease_lost = 76;  // fleet: the slot was lost; the command got SIGTERM
inline constexpr int no_permission = 77;
inline constexpr int config = 78;  // fleet: TLS set up wrong, or a slot count that disagrees
inline constexpr int cannot_execute = 126;
inline constexpr int not_found = 127;
}  // namespace exit_code

// What the lock file is to a subcommand: `run` opens it to lock, creating it if need be (a lock
// file it cannot use is EX_CANTCREAT); `status` only reads it (EX_NOINPUT).
enum class FileUse { lock, read };

// The table: the exit code for each kind of error. A fleet kind the local lock has too
// (busy, invalid_argument, permission_denied, system, cancelled) gets the same code.
int exit_code_for(ErrorKind kind, FileUse use);
int exit_code_for(fleet::ErrorKind kind);

// The exit code for a failed acquire or inspect; `busy_code` for a busy lock (-E).
int exit_code_for(const Error& error, FileUse use, int busy_code = exit_code::busy);
int exit_code_for(const fleet::Error& error, int busy_code = exit_code::busy);

}  // namespace pidlock::cli
