// Fuzzes the readers of etcd's answers (grant, keep-alive, txn, range, delete, watch messages,
// error bodies): whatever an endpoint sends, they return an answer or say what is wrong with it,
// and never throw, crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fleet/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace wire = pidlock::fleet::etcd::wire;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  if (const auto lease = wire::parse_grant(body)) {
    if (lease->id == 0 || lease->ttl.count() <= 0) __builtin_trap();
  }
  if (const auto alive = wire::parse_keep_alive(body)) {
    if (alive->ttl.count() < 0) __builtin_trap();
  }
  (void)wire::parse_revoke(body);
  if (const auto created = wire::parse_create_if_absent(body)) {
    if (created->created && created->existing) __builtin_trap();
  }
  (void)wire::parse_put(body);
  (void)wire::parse_range(body);
  (void)wire::parse_delete(body);
  if (const auto message = wire::parse_watch_message(body)) {
    if (message->error && !message->events.empty()) __builtin_trap();
  }
  if (const auto error = wire::parse_error(body)) {
    if (error->code <= 0 || error->code > 16) __builtin_trap();
  }
  return 0;
}
