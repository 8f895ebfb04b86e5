// The fleet's Errors, made in one place: the one mapping from the etcd client's failures to
// codes and kinds (an Error's kind follows from its code), and the messages that say them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "etcd_failure.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {

// The only maker of Errors (a friend of Error). Every message but busy()'s reads "pidlock:
// OPERATION PLACE: DETAIL"; the place is escaped for a terminal, the detail must be safe to show
// already (anything from etcd in it escaped).
class Errors {
 public:
  // A failure with a fleet code, and the kind that code means.
  static Error failure(errc code, std::string_view operation, std::string place,
                       std::string_view detail);
  // Options, a name or an endpoint refused before anything was tried.
  static Error invalid(std::string_view operation, std::string_view name, std::string_view why);
  // Options::on_wait threw `what`.
  static Error cancelled(std::string_view name, std::string_view what);
  // The lock is busy; the message names the holders, `holder` is the first well-formed one.
  static Error busy(std::string message, std::optional<SlotHolder> holder);

 private:
  static Error made(ErrorKind kind, std::error_code code, std::string_view operation,
                    std::string place, std::string message, std::optional<SlotHolder> holder);
  static Error at(ErrorKind kind, std::error_code code, std::string_view operation,
                  std::string place, std::string_view detail);
};

// What each failure of the etcd client is to the fleet's callers: the one table.
errc code_of(const etcd::Failure& failure);
// What that code means to a caller: the kind it acts on, and the command's exit status.
ErrorKind kind_of(errc code);

// What a failure says to an operator: its cause, and what to fix when etcd refuses the caller
// itself (the user's roles, the password, the client certificate's dates). Never the password.
std::string explained(const etcd::Failure& failure, const Options& options);

// "pidlock: lease grant http://10.0.0.1:2379: etcd: Couldn't connect to server", then
// `consequence` ("; the slot frees when the lease expires, …").
Error error_of(const etcd::Failure& failure, const Options& options,
               std::string_view consequence = {});

// Busy: "another installer is running (HOLDERS) — fleet lock: NAME, 1 of 1 slots held", with
// the waiters that come first, if any. Everything holders wrote into etcd is escaped.
Error busy(const Options& options, std::string_view name, const std::vector<SlotHolder>& holders,
           std::size_t waiting);

// "pidlock: acquire NAME: the fleet lock has 3 slots, as its holders were started with; this
// one asked for 2" (with "at least" when no holder recorded its count).
Error slot_count_mismatch(const Options& options, std::string_view name, int found, bool at_least);

}  // namespace pidlock::fleet
