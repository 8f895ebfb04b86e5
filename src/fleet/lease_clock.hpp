// A lease's timing, as a waiter and a holder keep it: when to renew it, until when etcd keeps it
// for sure, and when to give it up, counted in parts of its TTL.
#pragma once

#include <algorithm>
#include <chrono>

#include "etcd_client.hpp"
#include "timing.hpp"

namespace pidlock::fleet {

// A part of a TTL, in the clock's units: seconds would round 5 s / 3 down to 1 s.
inline timing::Clock::duration part_of(std::chrono::seconds ttl, int parts) {
  return std::chrono::duration_cast<timing::Clock::duration>(ttl) / parts;
}

// How often a waiter's lease is renewed: a third of its TTL. (The command renews the lease of a
// slot it holds every sixth, cli/fleet.cpp.)
inline timing::Clock::duration renewal_period(std::chrono::seconds ttl) {
  return std::max<timing::Clock::duration>(part_of(ttl, 3), std::chrono::milliseconds(200));
}

// Our lease, and until when etcd keeps it for sure: the TTL it answered, counted from when the
// request that it answered was sent (etcd restarts the TTL on receipt, never earlier).
struct LeaseClock {
  etcd::LeaseId id = 0;
  std::chrono::seconds ttl{0};
  timing::Clock::time_point renewed_at{};

  void renewed(timing::Clock::time_point sent, std::chrono::seconds granted) {
    renewed_at = sent;
    ttl = granted;
  }
  timing::Clock::time_point valid_until() const { return timing::saturating_add(renewed_at, ttl); }
  bool renewal_due(timing::Clock::time_point now) const {
    return timing::time_between(renewed_at, now) >= renewal_period(ttl);
  }
};

// A third of the TTL before etcd may expire the lease: the holder gives up then (and its
// command gets SIGTERM), before etcd can have handed the slot to someone else.
inline timing::Clock::time_point expiry(const LeaseClock& lease) {
  const auto until = lease.valid_until();
  return until - std::min(part_of(lease.ttl, 3), until.time_since_epoch());
}

}  // namespace pidlock::fleet
