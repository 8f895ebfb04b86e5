// Fleet slots on etcd: lease, create-if-absent transaction, watch, keep-alive, revoke.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <ctime>

#include "etcd.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {
namespace {

using etcd::json;
using Clock = std::chrono::steady_clock;

std::string host_name() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "unknown";
  return name.data();
}

std::int64_t unix_now() { return static_cast<std::int64_t>(::time(nullptr)); }

std::string slots_prefix(const Options& options, std::string_view name) {
  return options.key_prefix + std::string(name) + "/slots/";
}
std::string waiters_prefix(const Options& options, std::string_view name) {
  return options.key_prefix + std::string(name) + "/waiters/";
}

Error etcd_error(std::string_view operation, const etcd::Failure& failure) {
  return Error::failure(operation, failure.endpoint, failure.code, "etcd: " + failure.detail);
}

std::expected<std::int64_t, Error> grant_lease(etcd::Client& client, std::chrono::seconds ttl) {
  auto granted = client.call("lease/grant", {{"TTL", ttl.count()}});
  if (!granted) return std::unexpected(etcd_error("lease grant", granted.error()));
  const auto id = etcd::int64_of((*granted)["ID"]);
  if (id == 0) {
    return std::unexpected(Error::failure("lease grant", client.endpoint(),
                                          std::make_error_code(std::errc::protocol_error),
                                          "etcd granted no lease"));
  }
  return id;
}

void revoke_lease(etcd::Client& client, std::int64_t lease) {
  (void)client.call("lease/revoke", {{"ID", std::to_string(lease)}});
}

json put(const std::string& key, const json& value, std::int64_t lease) {
  return {{"request_put",
           {{"key", etcd::base64_encode(key)}, {"value", etcd::base64_encode(value.dump())},
            {"lease", std::to_string(lease)}}}};
}

SlotHolder holder_from(const json& kv, int slot) {
  SlotHolder holder;
  holder.slot = slot;
  holder.lease = etcd::int64_of(kv.value("lease", json()));
  const auto value = json::parse(etcd::base64_decode(kv.value("value", std::string())), nullptr, false);
  if (value.is_object()) {
    holder.host = value.value("host", std::string());
    holder.pid = static_cast<pid_t>(value.value("pid", 0));
    holder.command = value.value("command", std::string());
    holder.started_at = value.value("started_at", std::int64_t{0});
    if (const auto slots = value.find("slots"); slots != value.end() && slots->is_number_integer()) {
      holder.slots = slots->get<int>();
    }
  }
  holder.held_for = std::chrono::seconds(std::max<std::int64_t>(0, unix_now() - holder.started_at));
  return holder;
}

int slot_of(const std::string& key, const std::string& prefix) {
  int slot = -1;
  if (key.size() > prefix.size()) {
    const auto digits = std::string_view(key).substr(prefix.size());
    std::from_chars(digits.data(), digits.data() + digits.size(), slot);
  }
  return slot;
}

struct Attempt {
  int slot = -1;                 // taken, or -1
  std::vector<SlotHolder> holders;
  std::int64_t revision = 0;     // of the last read: watch from the next one
};

// One pass over the slots: the first that does not exist is created, bound to our lease.
std::expected<Attempt, Error> try_slots(etcd::Client& client, const Options& options, std::string_view name,
                                        std::int64_t lease, const json& record) {
  Attempt attempt;
  const std::string prefix = slots_prefix(options, name);
  for (int slot = 0; slot < options.slots; ++slot) {
    const std::string key = prefix + std::to_string(slot);
    const json txn = {
        {"compare", json::array({{{"target", "CREATE"}, {"key", etcd::base64_encode(key)}, {"create_revision", "0"}}})},
        {"success", json::array({put(key, record, lease)})},
        {"failure", json::array({{{"request_range", {{"key", etcd::base64_encode(key)}}}}})}};
    auto answer = client.call("kv/txn", txn);
    if (!answer) return std::unexpected(etcd_error("txn", answer.error()));
    attempt.revision = std::max(attempt.revision, etcd::int64_of((*answer)["header"]["revision"]));
    if (answer->value("succeeded", false)) {
      attempt.slot = slot;
      return attempt;
    }
    for (const auto& response : answer->value("responses", json::array())) {
      for (const auto& kv : response["response_range"].value("kvs", json::array())) {
        attempt.holders.push_back(holder_from(kv, slot));
      }
    }
  }
  return attempt;
}

std::string describe_holders(const std::vector<SlotHolder>& holders) {
  std::string text;
  for (const auto& h : holders) {
    if (!text.empty()) text += "; ";
    text += "pid " + std::to_string(h.pid) + " on " + (h.host.empty() ? "?" : h.host) + ", for " +
            format_duration(h.held_for);
  }
  return text;
}

Error busy(const Options& options, std::string_view name, const std::vector<SlotHolder>& holders) {
  std::optional<Holder> first;
  if (!holders.empty()) {
    first.emplace();
    first->pid = holders.front().pid;
    first->host = holders.front().host;
    first->command = holders.front().command;
    first->held_for = holders.front().held_for;
  }
  return Error::busy_with_message(
      "another " + options.role + " is running (" + describe_holders(holders) + ") — fleet lock: " +
          std::string(name) + ", " + std::to_string(holders.size()) + " of " + std::to_string(options.slots) +
          " slots held",
      std::move(first));
}

// Blocks until a slot key is deleted (or expires) after `revision`, until `until`, keeping
// our own lease alive meanwhile: a waiter's lease must outlive a long wait.
std::expected<void, Error> wait_for_a_free_slot(etcd::Client& client, const Options& options,
                                                std::string_view name, std::int64_t revision,
                                                std::int64_t lease, Clock::time_point until) {
  const std::string prefix = slots_prefix(options, name);
  const json request = {{"key", etcd::base64_encode(prefix)},
                        {"range_end", etcd::base64_encode(etcd::prefix_end(prefix))},
                        {"start_revision", std::to_string(revision + 1)}};
  const auto renew_every = std::max<Clock::duration>(
      std::chrono::duration_cast<std::chrono::milliseconds>(options.ttl) / 3, std::chrono::milliseconds(200));
  for (;;) {
    const auto now = Clock::now();
    if (now >= until) return {};
    const auto slice = std::min<Clock::duration>(until - now, renew_every);
    auto woke = client.watch(request, std::chrono::duration_cast<std::chrono::milliseconds>(slice) +
                                          std::chrono::milliseconds(1),
                             [](const json& message) {
                               // Canceled (e.g. our start revision was compacted): look again.
                               if (message["result"].value("canceled", false)) return false;
                               for (const auto& event : message["result"].value("events", json::array())) {
                                 if (event.value("type", std::string()) == "DELETE") return false;
                               }
                               return true;
                             });
    if (!woke) return std::unexpected(etcd_error("watch", woke.error()));
    if (*woke) return {};
    auto renewed = client.call("lease/keepalive", {{"ID", std::to_string(lease)}});
    if (!renewed) return std::unexpected(etcd_error("lease keepalive", renewed.error()));
  }
}

}  // namespace

struct Slot::State {
  State(const Options& o, std::string n) : options(o), name(std::move(n)), client(o.endpoints, o.request_timeout) {}
  Options options;
  std::string name;
  etcd::Client client;
  std::int64_t lease = 0;
  int slot = -1;
  Clock::time_point valid_until;
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
  if (name.empty() || name.find('/') != std::string_view::npos || options.slots < 1 || options.ttl.count() < 1) {
    return std::unexpected(Error::failure("acquire", std::string(name), std::make_error_code(std::errc::invalid_argument),
                                          "a fleet lock needs a name without '/', at least one slot and a TTL of 1 s or more"));
  }
  auto state = std::make_unique<State>(options, std::string(name));
  const auto deadline = options.wait == wait_forever ? Clock::time_point::max()
                                                      : Clock::now() + std::chrono::duration_cast<Clock::duration>(options.wait);
  const auto granting = Clock::now();
  auto lease = grant_lease(state->client, options.ttl);
  if (!lease) return std::unexpected(lease.error());
  state->lease = *lease;
  state->valid_until = granting + options.ttl;
  // The slot count goes into the record so that `status` can say "of N" without being told.
  const json record = {{"host", host_name()},   {"pid", ::getpid()},
                       {"command", options.command}, {"started_at", unix_now()},
                       {"role", options.role}, {"slots", options.slots}};
  // The lease makes the key unique even between two hosts that share a name.
  const std::string waiter_key = waiters_prefix(options, name) + host_name() + ":" +
                                 std::to_string(::getpid()) + ":" + std::to_string(state->lease);
  bool registered_as_waiter = false;
  for (;;) {
    auto attempt = try_slots(state->client, options, name, state->lease, record);
    if (!attempt) {
      revoke_lease(state->client, state->lease);
      return std::unexpected(attempt.error());
    }
    if (attempt->slot >= 0) {
      state->slot = attempt->slot;
      if (registered_as_waiter) {
        (void)state->client.call("kv/deleterange", {{"key", etcd::base64_encode(waiter_key)}});
      }
      return Slot(std::move(state));
    }
    if (Clock::now() >= deadline) {
      revoke_lease(state->client, state->lease);
      return std::unexpected(busy(options, name, attempt->holders));
    }
    if (!registered_as_waiter) {
      // A key under the same lease: status can list us, and it vanishes with us.
      (void)state->client.call("kv/put", put(waiter_key, record, state->lease)["request_put"]);
      registered_as_waiter = true;
    }
    if (auto waited = wait_for_a_free_slot(state->client, options, name, attempt->revision, state->lease, deadline);
        !waited) {
      revoke_lease(state->client, state->lease);
      return std::unexpected(waited.error());
    }
  }
}

std::expected<void, Error> Slot::keep_alive() {
  if (!state_) return {};
  // etcd restarts the TTL when the request arrives, no earlier than when it was sent.
  const auto sent = Clock::now();
  auto renewed = state_->client.call("lease/keepalive", {{"ID", std::to_string(state_->lease)}});
  if (!renewed) return std::unexpected(etcd_error("lease keepalive", renewed.error()));
  if (etcd::int64_of((*renewed)["result"].value("TTL", json())) <= 0) {
    state_->valid_until = Clock::time_point::min();
    return std::unexpected(Error::failure("lease keepalive", state_->client.endpoint(),
                                          std::make_error_code(std::errc::timed_out),
                                          "etcd: the lease has expired; the slot is lost"));
  }
  state_->valid_until = sent + state_->options.ttl;
  return {};
}

// A third of the TTL early, so that the holder gives up (and its command gets SIGTERM) before
// etcd can have expired the lease and handed the slot to someone else.
bool Slot::expired() const noexcept {
  if (!state_) return false;
  const auto margin = std::chrono::duration_cast<Clock::duration>(state_->options.ttl) / 3;
  return Clock::now() + margin >= state_->valid_until;
}

std::error_code Slot::release() noexcept {
  if (!state_) return {};
  auto revoked = state_->client.call("lease/revoke", {{"ID", std::to_string(state_->lease)}});
  std::error_code error = revoked ? std::error_code() : revoked.error().code;
  state_.reset();
  return error;
}

int Slot::index() const noexcept { return state_ ? state_->slot : -1; }
bool Slot::held() const noexcept { return state_ != nullptr; }

std::expected<Status, Error> inspect(std::string_view name, const Options& options) {
  etcd::Client client(options.endpoints, options.request_timeout);
  Status status;
  status.name = std::string(name);
  status.slots = options.slots;
  const std::string slots = slots_prefix(options, name);
  auto held = client.call("kv/range", {{"key", etcd::base64_encode(slots)},
                                       {"range_end", etcd::base64_encode(etcd::prefix_end(slots))}});
  if (!held) return std::unexpected(etcd_error("range", held.error()));
  for (const auto& kv : held->value("kvs", json::array())) {
    status.holders.push_back(holder_from(kv, slot_of(etcd::base64_decode(kv.value("key", std::string())), slots)));
    status.slots = std::max(status.slots, status.holders.back().slots);
  }
  const std::string waiting = waiters_prefix(options, name);
  auto waiters = client.call("kv/range", {{"key", etcd::base64_encode(waiting)},
                                          {"range_end", etcd::base64_encode(etcd::prefix_end(waiting))}});
  if (!waiters) return std::unexpected(etcd_error("range", waiters.error()));
  for (const auto& kv : waiters->value("kvs", json::array())) {
    const auto h = holder_from(kv, -1);
    status.waiters.push_back({h.host, h.pid, h.command});
    status.slots = std::max(status.slots, h.slots);
  }
  status.endpoint = client.endpoint();
  return status;
}

}  // namespace pidlock::fleet
