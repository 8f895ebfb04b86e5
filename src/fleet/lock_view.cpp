// One lock's slots and queue, read once and kept current from a watch.
#include "lock_view.hpp"

#include <algorithm>
#include <charconv>
#include <limits>

#include "../escape.hpp"
#include "keys.hpp"
#include "slot_record.hpp"
#include "timing.hpp"

namespace pidlock::fleet::view {
namespace {

// Values are fetched a few keys to a request: etcd caps each value at its request size (1.5 MiB
// by default), so an answer stays small whatever the keys hold. Slot keys are holders, whose
// records are small unless someone wrote junk where a slot goes; waiters' values are read for
// status only, where anyone may have written anything, and answers of 16 such values took half a
// second to come.
constexpr std::size_t slot_values_per_request = 16;
constexpr std::size_t waiter_values_per_request = 4;

template <class Entry>
void fill_from(Entry& entry, record::Reading& reading, std::string_view value) {
  entry.host = std::move(reading.record.host);
  entry.pid = reading.record.pid;
  entry.command = std::move(reading.record.command);
  if (!reading.well_formed()) {
    entry.malformed = true;
    entry.problem = std::move(reading.problem);
    entry.raw = text::printable_ascii(value);
  }
}

// The values of `keys`, read as of `revision`, a few keys to a request. A key gone at that
// revision is left out.
std::expected<std::vector<etcd::KeyValue>, etcd::Failure> values_of(
    etcd::Client& client, const std::vector<std::string>& keys, etcd::Revision revision,
    std::size_t per_request) {
  std::vector<etcd::KeyValue> values;
  for (std::size_t first = 0; first < keys.size(); first += per_request) {
    std::vector<etcd::RangeSpec> ranges;
    const std::size_t last = std::min(keys.size(), first + per_request);
    for (std::size_t i = first; i < last; ++i) ranges.push_back({keys[i], {}, false, revision});
    auto read = client.read(ranges);
    if (!read) return std::unexpected(read.error());
    for (auto& range : *read) {
      for (auto& kv : range.kvs) values.push_back(std::move(kv));
    }
  }
  return values;
}

std::vector<std::string> keys_in(const std::vector<etcd::KeyValue>& kvs) {
  std::vector<std::string> keys;
  keys.reserve(kvs.size());
  for (const auto& kv : kvs) keys.push_back(kv.key);
  return keys;
}

std::expected<Read, etcd::Failure> read_once(etcd::Client& client, const Keys& keys,
                                             bool waiter_values) {
  auto listed = client.read({{keys.slots_begin(), keys.slots_end(), true, 0},
                             {keys.waiters, keys.waiters_end(), true, 0}});
  if (!listed) return std::unexpected(listed.error());
  Read read;
  read.revision = (*listed)[0].revision;
  std::vector<std::string> slot_keys;
  for (const auto& kv : (*listed)[0].kvs) {
    if (record::slot_index(kv.key, keys.slots)) slot_keys.push_back(kv.key);
  }
  auto slots = values_of(client, slot_keys, read.revision, slot_values_per_request);
  if (!slots) return std::unexpected(slots.error());
  read.slots = std::move(*slots);
  if (!waiter_values) {
    read.waiters = std::move((*listed)[1].kvs);
    return read;
  }
  auto waiters =
      values_of(client, keys_in((*listed)[1].kvs), read.revision, waiter_values_per_request);
  if (!waiters) return std::unexpected(waiters.error());
  read.waiters = std::move(*waiters);
  return read;
}

}  // namespace

std::string Keys::waiters_end() const { return etcd::wire::prefix_end(waiters); }

Keys keys_of(std::string_view prefix, std::string_view name) {
  return {keys::slots_prefix(prefix, name), keys::waiters_prefix(prefix, name)};
}

SlotHolder holder_from(const etcd::KeyValue& kv, int slot) {
  SlotHolder holder;
  holder.slot = slot;
  holder.key = kv.key;
  holder.lease = kv.lease;
  holder.fence = kv.create_revision;
  auto reading = record::parse(kv.value);
  holder.started_at = reading.record.started_at;
  holder.slots = reading.record.slots;
  if (holder.started_at > 0) {
    holder.held_for =
        std::chrono::seconds(std::max<std::int64_t>(0, timing::unix_now() - holder.started_at));
  }
  fill_from(holder, reading, kv.value);
  return holder;
}

SlotWaiter waiter_from(const etcd::KeyValue& kv) {
  SlotWaiter waiter;
  auto reading = record::parse(kv.value);
  waiter.slots = reading.record.slots;
  fill_from(waiter, reading, kv.value);
  return waiter;
}

bool queues(const etcd::KeyValue& kv, const std::string& waiters_prefix) {
  if (kv.lease == 0 || !kv.key.starts_with(waiters_prefix)) return false;
  const std::string lease = ":" + std::to_string(kv.lease);
  return kv.key.size() > waiters_prefix.size() + lease.size() && kv.key.ends_with(lease);
}

void LockView::reset(const std::vector<etcd::KeyValue>& slot_keys,
                     const std::vector<etcd::KeyValue>& waiter_keys, etcd::Revision revision) {
  holders_.clear();
  queue_.clear();
  for (const auto& kv : slot_keys) {
    if (const auto slot = record::slot_index(kv.key, keys_.slots)) {
      holders_[*slot] = holder_from(kv, *slot);
    }
  }
  for (const auto& kv : waiter_keys) {
    if (queues(kv, keys_.waiters)) queue_[kv.key] = {kv.create_revision, kv.lease};
  }
  revision_ = revision;
}

void LockView::apply(const std::vector<etcd::WatchEvent>& events) {
  for (const auto& event : events) {
    const etcd::KeyValue& kv = event.kv;
    revision_ = std::max(revision_, kv.mod_revision);
    const bool deleted = event.type == etcd::EventType::del;
    if (const auto slot = record::slot_index(kv.key, keys_.slots)) {
      if (deleted) {
        holders_.erase(*slot);
      } else {
        holders_[*slot] = holder_from(kv, *slot);
      }
    } else if (kv.key.starts_with(keys_.waiters)) {
      // A key rewritten without its lease leaves the queue, as it would never leave it itself.
      if (deleted || !queues(kv, keys_.waiters)) {
        queue_.erase(kv.key);
      } else {
        queue_[kv.key] = {kv.create_revision, kv.lease};
      }
    }
  }
}

std::vector<SlotHolder> LockView::holders() const {
  std::vector<SlotHolder> all;
  all.reserve(holders_.size());
  for (const auto& [slot, holder] : holders_) all.push_back(holder);
  return all;
}

std::size_t LockView::free_count(int slots) const {
  const auto held =
      static_cast<std::size_t>(std::distance(holders_.begin(), holders_.lower_bound(slots)));
  return static_cast<std::size_t>(std::max(slots, 0)) - held;
}

std::optional<int> LockView::nth_free(int slots, std::size_t nth) const {
  int slot = 0;
  for (auto held = holders_.begin(); slot < slots; ++slot) {
    while (held != holders_.end() && held->first < slot) ++held;
    if (held != holders_.end() && held->first == slot) continue;
    if (nth == 0) return slot;
    --nth;
  }
  return std::nullopt;
}

bool LockView::holds_a_slot(etcd::LeaseId lease) const {
  return std::any_of(holders_.begin(), holders_.end(),
                     [lease](const auto& held) { return held.second.lease == lease; });
}

std::size_t LockView::waiters_before(etcd::Revision created) const {
  return static_cast<std::size_t>(
      std::count_if(queue_.begin(), queue_.end(), [&](const auto& entry) {
        const Waiter& waiter = entry.second;
        return (created == 0 || waiter.created < created) && !holds_a_slot(waiter.lease);
      }));
}

std::vector<SlotHolder> LockView::held_under(etcd::LeaseId lease) const {
  std::vector<SlotHolder> mine;
  for (const auto& [slot, holder] : holders_) {
    if (lease != 0 && holder.lease == lease) mine.push_back(holder);
  }
  return mine;
}

std::expected<Read, etcd::Failure> read_lock(etcd::Client& client, const Keys& keys,
                                             bool waiter_values) {
  // The values are read at the revision the keys were listed at; compacted meanwhile (rare: the
  // requests follow one another), the whole read is done again.
  constexpr int tries = 3;
  for (int attempt = 1;; ++attempt) {
    auto read = read_once(client, keys, waiter_values);
    if (read || !read.error().revision_compacted() || attempt == tries) return read;
  }
}

}  // namespace pidlock::fleet::view
