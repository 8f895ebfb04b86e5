// A fleet lock's status: its holders and waiters, read from etcd without taking anything.
#include <algorithm>
#include <limits>

#include "errors.hpp"
#include "etcd_client.hpp"
#include "lock_view.hpp"
#include "options.hpp"
#include "pidlock/fleet.hpp"
#include "slot_record.hpp"

namespace pidlock::fleet {

std::expected<Status, Error> inspect(std::string_view name, const Options& options) {
  if (auto refused = refusal_to_inspect(name, options)) {
    return std::unexpected(std::move(*refused));
  }
  auto client = etcd::Client::open(settings_of(options));
  if (!client) return std::unexpected(error_of(client.error(), options));
  const auto keys = view::keys_of(options.key_prefix, name);
  auto read = view::read_lock(*client, keys, true);
  if (!read) return std::unexpected(error_of(read.error(), options));
  Status status;
  status.name = std::string(name);
  status.slots = options.slots;
  for (const auto& kv : read->slots) {
    const auto slot = record::slot_index(kv.key, keys.slots);
    if (!slot) continue;
    status.holders.push_back(view::holder_from(kv, *slot));
    // A held slot N means the lock has at least N + 1, whatever its holder recorded.
    const int implied = *slot < std::numeric_limits<int>::max() ? *slot + 1 : *slot;
    status.slots = std::max({status.slots, status.holders.back().slots, implied});
  }
  std::sort(status.holders.begin(), status.holders.end(),
            [](const SlotHolder& a, const SlotHolder& b) { return a.slot < b.slot; });
  // In the order they came: the order they will be served in.
  auto waiters = read->waiters;
  std::stable_sort(waiters.begin(), waiters.end(),
                   [](const etcd::KeyValue& a, const etcd::KeyValue& b) {
                     return a.create_revision < b.create_revision;
                   });
  for (const auto& kv : waiters) {
    status.waiters.push_back(view::waiter_from(kv));
    status.slots = std::max(status.slots, status.waiters.back().slots);
  }
  status.endpoint = client->endpoint();
  return status;
}

}  // namespace pidlock::fleet
