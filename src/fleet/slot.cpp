// A held fleet slot: taking it, keeping it alive and checked, and giving it back.
#include <algorithm>

#include "acquire.hpp"
#include "errors.hpp"
#include "etcd_client.hpp"
#include "keys.hpp"
#include "lease_clock.hpp"
#include "options.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {
namespace {

using Clock = timing::Clock;
using etcd::Failure;

// etcd's refusals of who asks: once the user may no longer renew or read its own slot, the slot
// cannot be checked any more, and is given up rather than held unchecked.
bool refused_the_user(const Failure& failure) {
  return failure.kind == etcd::FailureKind::permission || failure.kind == etcd::FailureKind::auth;
}

}  // namespace

struct Slot::State {
  State(const Options& o, std::string n, etcd::Client c)
      : options(o), name(std::move(n)), client(std::move(c)) {}
  Options options;
  std::string name;
  etcd::Client client;
  LeaseClock lease;
  int slot = -1;
  std::string key;
  etcd::Revision created = 0;
  std::optional<Error> loss;  // why the slot is gone, once it is
};

Slot::Slot() noexcept = default;
Slot::Slot(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Slot::Slot(Slot&&) noexcept = default;
Slot& Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
  }
  return *this;
}
Slot::~Slot() { release(); }

std::expected<Slot, Error> Slot::acquire(std::string_view name, const Options& options) {
  if (auto refused = refusal_to_acquire(name, options)) {
    return std::unexpected(std::move(*refused));
  }
  auto client = etcd::Client::open(settings_of(options));
  if (!client) return std::unexpected(error_of(client.error(), options));
  auto taken = take_a_slot(*client, options, name);
  if (!taken) return std::unexpected(std::move(taken.error()));
  auto state = std::make_unique<State>(options, std::string(name), std::move(*client));
  state->lease = taken->lease;
  state->slot = taken->slot;
  state->key = keys::slots_prefix(options.key_prefix, name) + std::to_string(taken->slot);
  state->created = taken->created;
  return Slot(std::move(state));
}

std::expected<void, Error> Slot::keep_alive() {
  if (!state_) return {};
  if (const auto& loss = state_->loss) return std::unexpected(*loss);
  auto lose = [this](std::string_view operation, std::string_view why) {
    Error loss = Errors::failure(errc::slot_lost, operation, state_->client.endpoint(),
                                 "etcd: " + std::string(why));
    state_->loss = loss;
    return std::unexpected(std::move(loss));
  };
  auto refused = [this](const Failure& failure) {
    Error loss = Errors::failure(errc::slot_lost, failure.operation, failure.endpoint,
                                 explained(failure, state_->options) +
                                     "; the slot can no longer be checked, and is given up");
    state_->loss = loss;
    return std::unexpected(std::move(loss));
  };
  const auto sent = Clock::now();
  // Whatever the endpoints left to try, give up when the slot expires, so that the caller can
  // act on it in time. Past that (with --on-lease-loss warn) every call gets the full timeout.
  const auto expires = expiry(state_->lease);
  std::optional<etcd::Client::Deadline> in_time;
  if (sent < expires) in_time.emplace(state_->client, expires);
  auto ttl = state_->client.keep_alive(state_->lease.id);
  if (!ttl && refused_the_user(ttl.error())) return refused(ttl.error());
  if (!ttl && !ttl.error().lease_not_found())
    return std::unexpected(error_of(ttl.error(), state_->options));
  if (!ttl || ttl->count() <= 0) {
    return lose("lease keepalive", "the lease has expired or was revoked; the slot is lost");
  }
  state_->lease.renewed(sent, *ttl);
  // The lease lives, but the key may not: deleted by hand, or by a revoke and then re-created by
  // another holder. Checked at every renewal, so it is noticed within one renewal period.
  auto read = state_->client.get(state_->key, true);
  if (!read && refused_the_user(read.error())) return refused(read.error());
  if (!read) return std::unexpected(error_of(read.error(), state_->options));
  const std::optional<etcd::KeyValue>& key = *read;
  if (!key) return lose("slot check", "the key " + state_->key + " was deleted; the slot is lost");
  if (key->create_revision != state_->created || key->lease != state_->lease.id) {
    return lose("slot check", "the key " + state_->key + " was replaced (now under lease " +
                                  std::to_string(key->lease) + "); the slot is lost");
  }
  return {};
}

bool Slot::expired() const noexcept {
  if (!state_) return false;
  return state_->loss || Clock::now() >= expiry(state_->lease);
}

bool Slot::lost() const noexcept { return state_ && state_->loss.has_value(); }

std::chrono::nanoseconds Slot::kill_after() const noexcept {
  if (!state_ || state_->loss) return std::chrono::nanoseconds::zero();
  const auto margin =
      std::max<Clock::duration>(part_of(state_->lease.ttl, 10), std::chrono::milliseconds(100));
  const auto left = timing::time_between(Clock::now(), state_->lease.valid_until());
  return std::max<Clock::duration>(left - margin, Clock::duration::zero());
}

std::expected<void, Error> Slot::revoke() noexcept {
  if (!state_) return {};
  auto revoked = state_->client.revoke(state_->lease.id);
  std::expected<void, Error> outcome;
  if (!revoked) {
    outcome = std::unexpected(error_of(revoked.error(), state_->options,
                                       "; the slot frees when the lease expires, within " +
                                           std::to_string(state_->lease.ttl.count()) + " s"));
  }
  state_.reset();
  return outcome;
}

std::error_code Slot::release() noexcept {
  auto revoked = revoke();
  return revoked ? std::error_code() : revoked.error().code();
}

int Slot::index() const noexcept { return state_ ? state_->slot : -1; }
std::int64_t Slot::fence() const noexcept { return state_ ? state_->created : 0; }
bool Slot::held() const noexcept { return state_ != nullptr; }

}  // namespace pidlock::fleet
