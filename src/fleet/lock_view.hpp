// One fleet lock as a waiter or a reader sees it: the slot keys (its holders) and the queue of
// its waiters, as of a revision of etcd's store. Built from one read, then kept current from a
// watch's events without asking etcd again, so that a hand-off costs the waiters nothing but
// the events they are sent.
//
// Only the lock's own keys are read: the slot numbers (keys under slots/ that start with a
// digit, of which only canonical numbers count) and the waiters' keys, without their values.
// Values are read for the slot keys found, a few at a time, and, for status, for the waiters:
// anything else under the name, however large, is never fetched.
#pragma once

#include <cstddef>
#include <expected>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "etcd_client.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet::view {

// Where one lock's keys are: PREFIX NAME/slots/N and PREFIX NAME/waiters/HOST:PID:LEASE.
struct Keys {
  std::string slots;    // …/slots/
  std::string waiters;  // …/waiters/

  // The slot numbers' range, [slots "0", slots ":"): every key under slots/ that starts with a
  // digit. A create's condition and every read cover this range only.
  std::string slots_begin() const { return slots + "0"; }
  std::string slots_end() const { return slots + ":"; }
  std::string waiters_end() const;
  // A waiter watches [slots_begin, waiters_end): the slots and the queue in one stream.
};

Keys keys_of(std::string_view prefix, std::string_view name);

// A slot's holder from its key, as recorded.
SlotHolder holder_from(const etcd::KeyValue& kv, int slot);
SlotWaiter waiter_from(const etcd::KeyValue& kv);

// A waiter in the queue: a key under waiters/ that pidlock wrote, named HOST:PID:LEASE and bound
// to that lease, so that it goes when its waiter does. Anything else there (a key without a
// lease would never expire) holds nobody up.
struct Waiter {
  etcd::Revision created = 0;  // its place in the queue: the earlier, the sooner
  etcd::LeaseId lease = 0;
};
bool queues(const etcd::KeyValue& kv, const std::string& waiters_prefix);

class LockView {
 public:
  explicit LockView(Keys keys) : keys_(std::move(keys)) {}

  // Forgets everything for a read at `revision`: slot keys with their values, waiters' keys.
  void reset(const std::vector<etcd::KeyValue>& slot_keys,
             const std::vector<etcd::KeyValue>& waiter_keys, etcd::Revision revision);
  // One watch message's events; keys that are neither slots nor waiters are passed over.
  void apply(const std::vector<etcd::WatchEvent>& events);

  // Everything up to this revision has been seen.
  etcd::Revision revision() const noexcept { return revision_; }
  const Keys& keys() const noexcept { return keys_; }
  std::vector<SlotHolder> holders() const;  // by slot
  // How many of slots 0 … slots - 1 no key holds, and the `nth` of them (from 0) in order.
  std::size_t free_count(int slots) const;
  std::optional<int> nth_free(int slots, std::size_t nth) const;
  // Waiters queued before `created` (every one when it is 0), leaving out any whose lease holds
  // a slot already: it has been served, and its waiter key is on its way out.
  std::size_t waiters_before(etcd::Revision created) const;
  // The slots held under `lease`, by slot.
  std::vector<SlotHolder> held_under(etcd::LeaseId lease) const;

 private:
  bool holds_a_slot(etcd::LeaseId lease) const;

  Keys keys_;
  etcd::Revision revision_ = 0;
  std::map<int, SlotHolder> holders_;
  std::map<std::string, Waiter> queue_;
};

// One consistent read of a lock: the slot keys with their values, and the waiters' keys (with
// their values only when asked: status shows them, the queue needs their keys alone).
struct Read {
  std::vector<etcd::KeyValue> slots;
  std::vector<etcd::KeyValue> waiters;
  etcd::Revision revision = 0;
};
std::expected<Read, etcd::Failure> read_lock(etcd::Client& client, const Keys& keys,
                                             bool waiter_values);

}  // namespace pidlock::fleet::view
