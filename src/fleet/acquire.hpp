// Taking a fleet slot: one waiter's way from a lease to a slot of its own, first come, first
// served, waiting and retrying as Options say.
#pragma once

#include <expected>
#include <string_view>

#include "etcd_client.hpp"
#include "lease_clock.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {

// The slot a waiter took, its key's creation (the fence, which tells our key from a later one),
// and the lease it is held under.
struct Acquired {
  int slot = -1;
  etcd::Revision created = 0;
  LeaseClock lease;
};

// Takes a free slot of `name` through `client`, waiting up to options.wait for one; the Error
// Slot::acquire documents otherwise. Options are checked already.
std::expected<Acquired, Error> take_a_slot(etcd::Client& client, const Options& options,
                                           std::string_view name);

}  // namespace pidlock::fleet
