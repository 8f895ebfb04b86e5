// Fleet slots: the policy. Which keys, what they hold, when to wait, retry or give up; the etcd
// client (etcd.hpp) does the talking.
#include "pidlock/fleet.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>
#include <limits>
#include <thread>
#include <variant>

#include "../escape.hpp"
#include "etcd.hpp"
#include "keys.hpp"
#include "slot_record.hpp"
#include "timing.hpp"

namespace pidlock::fleet {
namespace {

using Clock = timing::Clock;
using etcd::Failure;

// The shortest watch a waiter opens (see wait_for_a_free_slot).
constexpr std::chrono::milliseconds min_watch{200};

// etcd's own limit (MaxLeaseTTL): it refuses longer leases.
constexpr std::chrono::seconds max_ttl{9'000'000'000};

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "pidlock.fleet"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::unreachable:
        return "etcd cannot be reached";
      case errc::timed_out:
        return "etcd did not answer in time";
      case errc::etcd_error:
        return "etcd refused the request";
      case errc::malformed_response:
        return "the answer is not etcd's";
      case errc::client_setup:
        return "the HTTP client cannot be set up";
      case errc::slot_lost:
        return "the fleet slot is lost";
      case errc::tls_failed:
        return "no TLS session with etcd";
      case errc::auth_failed:
        return "etcd did not accept the credentials";
      case errc::permission_denied:
        return "etcd denied access to the fleet lock's keys";
      case errc::slot_count_mismatch:
        return "the fleet lock's holders use another slot count";
    }
    return "unknown fleet error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::unreachable:
        return std::errc::host_unreachable;
      case errc::timed_out:
        return std::errc::timed_out;
      case errc::etcd_error:
        return std::errc::io_error;
      case errc::malformed_response:
        return std::errc::bad_message;
      case errc::client_setup:
        return std::errc::not_enough_memory;
      case errc::slot_lost:
        return std::errc::owner_dead;
      case errc::tls_failed:
        return std::errc::protocol_error;
      case errc::auth_failed:
        return std::errc::permission_denied;
      case errc::permission_denied:
        return std::errc::operation_not_permitted;
      case errc::slot_count_mismatch:
        return std::errc::invalid_argument;
    }
    return {value, *this};
  }
};

std::string host_name() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "unknown";
  return name.data();
}

std::int64_t unix_now() { return static_cast<std::int64_t>(::time(nullptr)); }

std::string slots_prefix(const Options& options, std::string_view name) {
  return keys::slots_prefix(options.key_prefix, name);
}
std::string waiters_prefix(const Options& options, std::string_view name) {
  return keys::waiters_prefix(options.key_prefix, name);
}

ErrorKind kind_of(const Failure& failure) {
  switch (failure.kind) {
    case etcd::FailureKind::unreachable:
    case etcd::FailureKind::timeout:
      return ErrorKind::unreachable;
    case etcd::FailureKind::etcd_error:
    case etcd::FailureKind::malformed_response:
      return ErrorKind::etcd_error;
    case etcd::FailureKind::client_setup:
      return ErrorKind::system;
    case etcd::FailureKind::tls:
      return ErrorKind::tls;
    case etcd::FailureKind::auth:
      return ErrorKind::authentication;
    case etcd::FailureKind::permission:
      return ErrorKind::permission_denied;
  }
  return ErrorKind::unreachable;
}

errc code_of(const Failure& failure) {
  switch (failure.kind) {
    case etcd::FailureKind::unreachable:
      return errc::unreachable;
    case etcd::FailureKind::timeout:
      return errc::timed_out;
    case etcd::FailureKind::etcd_error:
      return errc::etcd_error;
    case etcd::FailureKind::malformed_response:
      return errc::malformed_response;
    case etcd::FailureKind::client_setup:
      return errc::client_setup;
    case etcd::FailureKind::tls:
      return errc::tls_failed;
    case etcd::FailureKind::auth:
      return errc::auth_failed;
    case etcd::FailureKind::permission:
      return errc::permission_denied;
  }
  return errc::unreachable;
}

// What to fix when etcd refuses the caller itself. Never the password.
std::string hint(const Failure& failure, const Options& options) {
  const std::string user = etcd::wire::printable(options.user);
  switch (failure.kind) {
    case etcd::FailureKind::auth:
      if (options.user.empty())
        return "; this etcd has authentication on: give a user and password";
      return "; check the password of etcd user " + user + ", and that the user exists";
    case etcd::FailureKind::permission: {
      const std::string prefix = etcd::wire::printable(options.key_prefix);
      const std::string who = options.user.empty() ? "the user" : "etcd user " + user;
      return "; " + who + " needs a role with readwrite on the keys under " + prefix +
             " (etcdctl role grant-permission --prefix ROLE readwrite " + prefix + ")";
    }
    default:
      return {};
  }
}

// "pidlock: lease grant http://10.0.0.1:2379: etcd: Couldn't connect to server".
Error error_of(const Failure& failure, const Options& options) {
  return Error::fleet_failure(kind_of(failure), failure.operation, failure.endpoint,
                              make_error_code(code_of(failure)),
                              failure.cause() + hint(failure, options));
}

Error invalid_options(std::string_view operation, std::string_view name, std::string_view why) {
  return Error::fleet_failure(ErrorKind::invalid_argument, operation, std::string(name),
                              std::make_error_code(std::errc::invalid_argument), why);
}

etcd::Settings settings_of(const Options& options) {
  etcd::Settings settings;
  // As etcdctl: an endpoint without a scheme is http.
  for (const auto& endpoint : options.endpoints) {
    settings.endpoints.push_back(endpoint.find("://") == std::string::npos ? "http://" + endpoint
                                                                           : endpoint);
  }
  settings.timeout = options.request_timeout;
  settings.tls = options.tls;
  settings.user = options.user;
  settings.password = options.password;
  return settings;
}

template <class Entry>
void fill_from(Entry& entry, record::Reading& reading, std::string_view value) {
  entry.host = std::move(reading.record.host);
  entry.pid = reading.record.pid;
  entry.command = std::move(reading.record.command);
  if (!reading.well_formed()) {
    entry.malformed = true;
    entry.problem = std::move(reading.problem);
    entry.raw = etcd::wire::printable(value);
  }
}

SlotHolder holder_from(const etcd::KeyValue& kv, int slot) {
  SlotHolder holder;
  holder.slot = slot;
  holder.lease = kv.lease;
  holder.fence = kv.create_revision;
  auto reading = record::parse(kv.value);
  holder.started_at = reading.record.started_at;
  holder.slots = reading.record.slots;
  if (holder.started_at > 0) {
    holder.held_for =
        std::chrono::seconds(std::max<std::int64_t>(0, unix_now() - holder.started_at));
  }
  fill_from(holder, reading, kv.value);
  return holder;
}

// A slot's holder as messages name any holder (pidlock::describe): what it runs, on which host.
Holder as_holder(const SlotHolder& slot) {
  Holder holder;
  holder.pid = slot.pid;
  holder.host = slot.host.empty() ? "?" : slot.host;
  if (!slot.command.empty()) holder.runs = {slot.command};
  holder.inspectable = true;  // its record says for how long
  holder.held_for = slot.held_for;
  return holder;
}

// Everything in it that holders wrote into etcd is escaped for a terminal, as in every message.
Error busy(const Options& options, std::string_view name, const std::vector<SlotHolder>& holders) {
  std::string described;
  std::optional<Holder> first;
  for (const auto& h : holders) {
    described += (described.empty() ? "" : "; ") +
                 (h.malformed ? "slot " + std::to_string(h.slot) + ": " : "") + describe(h);
    if (!first && !h.malformed) first = as_holder(h);
  }
  return Error::busy_with_message("another " + text::for_terminal(options.role) + " is running (" +
                                      described + ") — fleet lock: " + text::for_terminal(name) +
                                      ", " + std::to_string(holders.size()) + " of " +
                                      std::to_string(options.slots) + " slots held",
                                  std::move(first));
}

// A part of a TTL, in the clock's units: seconds would round 5 s / 3 down to 1 s.
Clock::duration part_of(std::chrono::seconds ttl, int parts) {
  return std::chrono::duration_cast<Clock::duration>(ttl) / parts;
}

// How often a waiter's lease is renewed: a third of its TTL. (The command renews the lease of a
// slot it holds every sixth, cli/fleet.cpp.)
Clock::duration renewal_period(std::chrono::seconds ttl) {
  return std::max<Clock::duration>(part_of(ttl, 3), std::chrono::milliseconds(200));
}

// Our lease, and until when etcd keeps it for sure: the TTL it answered, counted from when the
// request that it answered was sent (etcd restarts the TTL on receipt, never earlier).
struct LeaseClock {
  etcd::LeaseId id = 0;
  std::chrono::seconds ttl{0};
  Clock::time_point renewed_at{};

  void renewed(Clock::time_point sent, std::chrono::seconds granted) {
    renewed_at = sent;
    ttl = granted;
  }
  Clock::time_point valid_until() const { return timing::saturating_add(renewed_at, ttl); }
  bool renewal_due(Clock::time_point now) const {
    return timing::time_between(renewed_at, now) >= renewal_period(ttl);
  }
};

// A third of the TTL before etcd may expire the lease: the holder gives up then (and its
// command gets SIGTERM), before etcd can have handed the slot to someone else.
Clock::time_point expiry(const LeaseClock& lease) {
  const auto until = lease.valid_until();
  return until - std::min(part_of(lease.ttl, 3), until.time_since_epoch());
}

// The slot a waiter took, and the key's creation, which tells our key from a later one.
struct Taken {
  int slot = -1;
  etcd::Revision created = 0;
};
struct Busy {
  std::vector<SlotHolder> holders;
  etcd::Revision revision = 0;  // of the last read: watch from the next one
  bool raced = false;           // a holder came between the read and a create: read again
};
// Holders that were started with another slot count.
struct Mismatch {
  int slots = 0;
  bool at_least = false;  // no count recorded, but a slot held at slots - 1
};

// "pidlock: acquire NAME: the fleet lock has 3 slots, as its holders were started with; this
// one asked for 2".
Error mismatch(const Options& options, std::string_view name, Mismatch found) {
  return Error::fleet_failure(
      ErrorKind::slot_count_mismatch, "acquire", std::string(name),
      make_error_code(errc::slot_count_mismatch),
      "the fleet lock has " + std::string(found.at_least ? "at least " : "") +
          std::to_string(found.slots) + " slots, as its holders were started with; this one " +
          "asked for " + std::to_string(options.slots));
}

// What a holder's record says about the slot count, if it disagrees with `slots`. Malformed
// records say nothing one could trust.
std::optional<Mismatch> disagreement(const SlotHolder& holder, int slots) {
  if (holder.malformed) return std::nullopt;
  if (holder.slots > 0) {
    if (holder.slots == slots) return std::nullopt;
    return Mismatch{holder.slots, false};
  }
  if (holder.slot >= slots) return Mismatch{holder.slot + 1, true};
  return std::nullopt;
}

// Keeps Options::on_wait informed: at the start of a wait, every progress_interval, and at once
// when etcd stops or starts answering.
class Reporter {
 public:
  Reporter(const Options& options, Clock::time_point started)
      : options_(options), started_(started) {}

  void answered(std::vector<SlotHolder> holders) {
    holders_ = std::move(holders);
    const bool changed = failure_.has_value();
    failure_.reset();
    report(changed);
  }
  void failed(const Failure& failure) {
    const bool changed = !failure_.has_value();
    failure_ = error_of(failure, options_);
    report(changed);
  }
  void tick() { report(false); }
  // When the next report is due: a watch must not outlast it.
  Clock::time_point next_due() const {
    return options_.on_wait ? timing::saturating_add(last_, options_.progress_interval)
                            : Clock::time_point::max();
  }

 private:
  void report(bool changed) {
    if (!options_.on_wait) return;
    const auto now = Clock::now();
    if (!changed && reported_ && now < next_due()) return;
    reported_ = true;
    last_ = now;
    options_.on_wait(WaitProgress{now - started_, holders_, failure_});
  }

  const Options& options_;
  Clock::time_point started_;
  Clock::time_point last_{};
  bool reported_ = false;
  std::vector<SlotHolder> holders_;
  std::optional<Error> failure_;
};

// One waiter's way to a slot: a lease, a try at each slot, a watch until one frees; retried,
// while the failures may pass, until the deadline.
class Acquirer {
 public:
  Acquirer(etcd::Client& client, const Options& options, std::string_view name)
      : client_(client),
        options_(options),
        name_(name),
        started_(Clock::now()),
        deadline_(timing::saturating_add(started_, options.wait)),
        reporter_(options, started_) {}

  std::expected<Taken, Error> run() {
    timing::Backoff backoff;
    std::optional<Busy> last_seen;
    for (;;) {
      auto outcome = try_once();
      if (outcome && std::holds_alternative<Taken>(*outcome))
        return taken(std::get<Taken>(*outcome));
      // Not worth waiting out: the next holders will be started as the last ones were.
      if (outcome && std::holds_alternative<Mismatch>(*outcome))
        return give_up(mismatch(options_, name_, std::get<Mismatch>(*outcome)));
      if (outcome) {
        last_seen = std::move(std::get<Busy>(*outcome));
        if (Clock::now() >= deadline_) return give_up(busy(options_, name_, last_seen->holders));
        backoff.reset();
        reporter_.answered(last_seen->holders);
        register_as_waiter();
        auto woke = wait_for_a_free_slot(last_seen->revision);
        if (woke) continue;
        // The wait ran out while a watch was still connecting: the slots were busy at last look.
        if (Clock::now() >= deadline_) return give_up(busy(options_, name_, last_seen->holders));
        outcome = std::unexpected(woke.error());
      }
      const Failure& failure = outcome.error();
      if (!failure.transient() || Clock::now() >= deadline_)
        return give_up(error_of(failure, options_));
      reporter_.failed(failure);
      const auto pause = std::min(backoff.next(), timing::time_between(Clock::now(), deadline_));
      std::this_thread::sleep_for(pause);
    }
  }

  const LeaseClock& lease() const { return lease_; }

 private:
  // The lease we wait and hold under: granted once, renewed when due, and granted anew when etcd
  // has let it expire (a stall longer than the TTL).
  std::expected<void, Failure> ensure_lease() {
    const auto now = Clock::now();
    if (lease_.id != 0 && lease_.renewal_due(now)) {
      auto ttl = client_.keep_alive(lease_.id);
      if (!ttl && !ttl.error().lease_not_found()) return std::unexpected(ttl.error());
      if (ttl && ttl->count() > 0) {
        lease_.renewed(now, *ttl);
      } else {
        forget_lease();
      }
    }
    if (lease_.id != 0) return {};
    auto granted = client_.grant(options_.ttl);
    if (!granted) return std::unexpected(granted.error());
    lease_ = {granted->id, {}, {}};
    lease_.renewed(now, granted->ttl);
    return {};
  }

  void forget_lease() {
    lease_ = {};
    registered_ = false;  // the waiter's key went with the lease
  }

  // One pass: the first slot that does not exist is created, bound to our lease.
  std::expected<std::variant<Taken, Busy, Mismatch>, Failure> try_once() {
    if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
    auto outcome = try_slots();
    if (!outcome && outcome.error().lease_not_found()) {
      // Expired between our renewal and the transaction: one more try with a fresh lease.
      forget_lease();
      if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
      outcome = try_slots();
    }
    return outcome;
  }

  // Each slot is created on the condition that no holder came since the holders were read, so
  // that two starting at once with different slot counts cannot both get in: the later one's
  // transaction fails, and it reads again. A few times: holders coming that fast make the lock
  // busy, which the caller waits out (a watch, its deadline) as any other.
  std::expected<std::variant<Taken, Busy, Mismatch>, Failure> try_slots() {
    constexpr int passes = 4;
    const std::string prefix = slots_prefix(options_, name_);
    for (int pass = 1;; ++pass) {
      auto outcome = try_slots_since_read(prefix);
      if (!outcome) return std::unexpected(outcome.error());
      const auto* busy = std::get_if<Busy>(&*outcome);
      if (busy == nullptr || !busy->raced || pass == passes) return outcome;
    }
  }

  // One read of the holders, then the slots in order.
  std::expected<std::variant<Taken, Busy, Mismatch>, Failure> try_slots_since_read(
      const std::string& prefix) {
    Busy busy_now;
    // All holders first, beyond our count too: one started with 3 slots holding slot 2 must
    // stop us, started with 2, as much as one holding slot 0.
    auto read = read_holders(prefix);
    if (!read) return std::unexpected(read.error());
    Holders& others = *read;
    if (const auto& mismatch = others.mismatch) return *mismatch;
    // Slot keys only (a decimal index after the prefix): another key there holds nothing, and
    // whatever rewrites it must not hold askers up.
    const etcd::Unchanged since_read{prefix + "0", prefix + ":", others.revision};
    const std::string mine = record_now();
    for (int slot = 0; slot < options_.slots; ++slot) {
      auto created =
          client_.create_if_absent(prefix + std::to_string(slot), mine, lease_.id, since_read);
      if (!created) return std::unexpected(created.error());
      busy_now.revision = std::max(busy_now.revision, created->revision);
      if (created->created) return Taken{slot, created->revision};
      const auto& existing = created->existing;
      if (!existing) {  // free, but a holder came since the read: say who was there then
        busy_now.holders = std::move(others.holders);
        busy_now.raced = true;
        return busy_now;
      }
      // Ours already: an earlier try reached etcd but its answer did not reach us.
      if (existing->lease == lease_.id) return Taken{slot, existing->create_revision};
      busy_now.holders.push_back(holder_from(*existing, slot));
      // Taken since we looked, by a holder started with another count.
      if (auto other = disagreement(busy_now.holders.back(), options_.slots)) return *other;
    }
    return busy_now;
  }

  struct Holders {
    std::vector<SlotHolder> holders;
    std::optional<Mismatch> mismatch;  // the first holder started with another slot count
    etcd::Revision revision = 0;       // of the read
  };

  std::expected<Holders, Failure> read_holders(const std::string& prefix) {
    auto held = client_.range_prefix(prefix);
    if (!held) return std::unexpected(held.error());
    Holders holders;
    holders.revision = held->revision;
    for (const auto& kv : held->kvs) {
      const auto slot = record::slot_index(kv.key, prefix);
      if (!slot) continue;
      holders.holders.push_back(holder_from(kv, *slot));
      if (auto other = disagreement(holders.holders.back(), options_.slots)) {
        holders.mismatch = other;
        break;
      }
    }
    return holders;
  }

  // Who we are, for status; started now, so that "held for" does not count the wait. The slot
  // count goes in too, so that `status` can say "of N" without being told.
  std::string record_now() const {
    return record::format(
        {host_name(), ::getpid(), options_.command, unix_now(), options_.role, options_.slots});
  }

  // A key under the same lease, so that status can list us, and that vanishes with us. Only for
  // status: a failure here is not worth failing the wait for.
  void register_as_waiter() {
    if (registered_) return;
    const std::string key = waiters_prefix(options_, name_) + host_name() + ":" +
                            std::to_string(::getpid()) + ":" + std::to_string(lease_.id);
    registered_ = client_.put(key, record_now(), lease_.id).has_value();
    if (registered_) waiter_key_ = key;
  }

  // Blocks until a slot key is deleted after `revision`, or until the deadline, keeping our
  // lease alive and the progress reports going meanwhile.
  std::expected<void, Failure> wait_for_a_free_slot(etcd::Revision revision) {
    const std::string prefix = slots_prefix(options_, name_);
    const etcd::LeaseId waiting_under = lease_.id;
    for (;;) {
      const auto now = Clock::now();
      if (now >= deadline_) return {};
      const auto until =
          std::min({deadline_, reporter_.next_due(),
                    timing::saturating_add(lease_.renewed_at, renewal_period(lease_.ttl))});
      // Long enough for etcd to answer the watch at all: one that times out before etcd has
      // said a word looks like an etcd that does not answer.
      const auto slice = std::max(
          std::chrono::duration_cast<std::chrono::milliseconds>(timing::time_between(now, until)),
          min_watch);
      auto woke =
          client_.watch_prefix(prefix, revision + 1, slice, [](const etcd::WatchEvent& event) {
            return event.type != etcd::EventType::del;  // a freed slot ends the watch
          });
      if (!woke) return std::unexpected(woke.error());
      // A freed slot, or a stream etcd ended (e.g. our start revision was compacted): look again.
      if (*woke != etcd::WatchEnd::timed_out) return {};
      reporter_.tick();
      if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
      // A new lease: etcd lost track of us for a while, and the slots may have changed meanwhile.
      if (lease_.id != waiting_under) return {};
    }
  }

  std::expected<Taken, Error> taken(Taken slot) {
    if (!waiter_key_.empty()) (void)client_.delete_key(waiter_key_);
    return slot;
  }

  std::expected<Taken, Error> give_up(Error error) {
    // Revoking frees our waiter key at once; when etcd does not answer, the lease will expire
    // by itself, and asking again would only hold the caller past its deadline.
    const bool etcd_answers = error.held() || error.kind() != ErrorKind::unreachable;
    if (lease_.id != 0 && etcd_answers) (void)client_.revoke(lease_.id);
    return std::unexpected(std::move(error));
  }

  etcd::Client& client_;
  const Options& options_;
  std::string_view name_;
  Clock::time_point started_;
  Clock::time_point deadline_;
  Reporter reporter_;
  LeaseClock lease_;
  bool registered_ = false;
  std::string waiter_key_;
};

// Empty when `path` can be opened for reading, else why not: a missing certificate is better
// named now than as a TLS failure at the first request.
std::string unreadable(std::string_view what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return "cannot read the " + std::string(what) + " " + etcd::wire::printable(path) + ": " +
           std::system_category().message(error);
  }
  ::close(fd);
  return {};
}

// Empty when `endpoint` is a URL the client may be given, else why not. Credentials in it
// (user:password@) would sit in every message and, from a command line, in /proc/PID/cmdline.
std::string bad_endpoint(const std::string& endpoint) {
  const auto shown = [&endpoint] {
    return "etcd endpoint '" + etcd::wire::printable(endpoint) + "'";
  };
  if (endpoint.empty()) return "an empty etcd endpoint";
  for (const char c : endpoint) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return shown() + ": a URL has no spaces or control characters";
    }
  }
  const auto scheme_end = endpoint.find("://");
  std::string_view authority = endpoint;
  if (scheme_end != std::string::npos) {
    const std::string_view scheme(endpoint.data(), scheme_end);
    if (scheme != "http" && scheme != "https") {
      return shown() + ": the scheme must be http:// or https://";
    }
    authority.remove_prefix(scheme_end + 3);
  }
  authority = authority.substr(0, authority.find('/'));
  if (authority.empty()) return shown() + ": no host";
  if (authority.find('@') != std::string_view::npos) {
    return shown() +
           ": no credentials in the URL; use a user and password (--user, "
           "--password-file)";
  }
  return {};
}

// Why acquire and inspect may not go on, and as what kind of error.
struct Unusable {
  ErrorKind kind = ErrorKind::invalid_argument;
  std::string why;
};

// What acquire and inspect both need: a name, endpoints, a usable prefix, and credentials and
// TLS files that hang together.
std::optional<Unusable> check_connection(std::string_view name, const Options& options) {
  if (name.empty()) return Unusable{ErrorKind::invalid_argument, "a fleet lock needs a name"};
  for (const auto& endpoint : options.endpoints) {
    if (auto bad = bad_endpoint(endpoint); !bad.empty()) {
      return Unusable{ErrorKind::invalid_argument, bad};
    }
  }
  if (auto bad = keys::check_prefix(options.key_prefix); !bad.empty()) {
    return Unusable{ErrorKind::invalid_argument, bad};
  }
  if (options.request_timeout <= std::chrono::milliseconds::zero()) {
    return Unusable{ErrorKind::invalid_argument, "the request timeout must be positive"};
  }
  if (options.user.empty() && !options.password.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a password needs a user name"};
  }
  if (!options.user.empty() && options.password.empty()) {
    return Unusable{ErrorKind::invalid_argument,
                    "etcd user " + etcd::wire::printable(options.user) + " needs a password"};
  }
  // etcd's API carries them as JSON text: other bytes would reach it altered, and a password
  // altered on the way comes back as the wrong password.
  if (!text::valid_utf8(options.user)) {
    return Unusable{ErrorKind::invalid_argument,
                    "etcd user " + etcd::wire::printable(options.user) +
                        ": not UTF-8 text, which etcd's API cannot carry"};
  }
  if (!text::valid_utf8(options.password)) {
    return Unusable{ErrorKind::invalid_argument,
                    "the password of etcd user " + etcd::wire::printable(options.user) +
                        " is not UTF-8 text, which etcd's API cannot carry"};
  }
  const Tls& tls = options.tls;
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a client key file needs its certificate file"};
  }
  // A TLS file that cannot be read is TLS set up wrong, as one that does not verify.
  const std::pair<std::string_view, const std::string*> files[] = {
      {"CA file", &tls.ca_file},
      {"client certificate file", &tls.cert_file},
      {"client key file", &tls.key_file}};
  for (const auto& [what, path] : files) {
    if (path->empty()) continue;
    if (auto bad = unreadable(what, *path); !bad.empty()) return Unusable{ErrorKind::tls, bad};
  }
  return std::nullopt;
}

Error unusable(std::string_view operation, std::string_view name, const Unusable& problem) {
  if (problem.kind == ErrorKind::tls) {
    return Error::fleet_failure(ErrorKind::tls, operation, std::string(name),
                                make_error_code(errc::tls_failed), problem.why);
  }
  return invalid_options(operation, name, problem.why);
}

std::optional<Error> check_options(std::string_view name, const Options& options) {
  if (auto problem = check_connection(name, options)) return unusable("acquire", name, *problem);
  if (options.slots < 1) {
    return invalid_options("acquire", name, "a fleet lock needs at least one slot");
  }
  if (options.ttl < std::chrono::seconds(1) || options.ttl > max_ttl) {
    return invalid_options("acquire", name,
                           "the lease TTL must be from 1 s to 9000000000 s (etcd's limit)");
  }
  return std::nullopt;
}

}  // namespace

const std::error_category& category() noexcept {
  static const Category instance;
  return instance;
}

std::error_code make_error_code(errc value) noexcept {
  return {static_cast<int>(value), category()};
}

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
  if (auto invalid = check_options(name, options)) return std::unexpected(std::move(*invalid));
  auto client = etcd::Client::open(settings_of(options));
  if (!client) return std::unexpected(error_of(client.error(), options));
  Acquirer acquirer(*client, options, name);
  auto taken = acquirer.run();
  if (!taken) return std::unexpected(std::move(taken.error()));
  auto state = std::make_unique<State>(options, std::string(name), std::move(*client));
  state->lease = acquirer.lease();
  state->slot = taken->slot;
  state->key = slots_prefix(options, name) + std::to_string(taken->slot);
  state->created = taken->created;
  return Slot(std::move(state));
}

std::expected<void, Error> Slot::keep_alive() {
  if (!state_) return {};
  if (const auto& loss = state_->loss) return std::unexpected(*loss);
  auto lose = [this](std::string_view operation, std::string_view why) {
    Error loss =
        Error::fleet_failure(ErrorKind::lease_lost, operation, state_->client.endpoint(),
                             make_error_code(errc::slot_lost), "etcd: " + std::string(why));
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
  if (!ttl && !ttl.error().lease_not_found())
    return std::unexpected(error_of(ttl.error(), state_->options));
  if (!ttl || ttl->count() <= 0) {
    return lose("lease keepalive", "the lease has expired or was revoked; the slot is lost");
  }
  state_->lease.renewed(sent, *ttl);
  // The lease lives, but the key may not: deleted by hand, or by a revoke and then re-created by
  // another holder. Checked at every renewal, so it is noticed within one renewal period.
  auto read = state_->client.get(state_->key, true);
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

std::error_code Slot::release() noexcept {
  if (!state_) return {};
  auto revoked = state_->client.revoke(state_->lease.id);
  const std::error_code error =
      revoked ? std::error_code() : make_error_code(code_of(revoked.error()));
  state_.reset();
  return error;
}

int Slot::index() const noexcept { return state_ ? state_->slot : -1; }
std::int64_t Slot::fence() const noexcept { return state_ ? state_->created : 0; }
bool Slot::held() const noexcept { return state_ != nullptr; }

std::string describe(const SlotHolder& holder) {
  if (holder.malformed) return "a malformed record (" + text::for_terminal(holder.problem) + ")";
  return pidlock::describe(as_holder(holder));
}

std::expected<Status, Error> inspect(std::string_view name, const Options& options) {
  if (auto problem = check_connection(name, options)) {
    return std::unexpected(unusable("inspect", name, *problem));
  }
  auto client = etcd::Client::open(settings_of(options));
  if (!client) return std::unexpected(error_of(client.error(), options));
  Status status;
  status.name = std::string(name);
  status.slots = options.slots;
  const std::string slots = slots_prefix(options, name);
  auto held = client->range_prefix(slots);
  if (!held) return std::unexpected(error_of(held.error(), options));
  for (const auto& kv : held->kvs) {
    // Keys no pidlock would compete for block nobody: not slots.
    const auto slot = record::slot_index(kv.key, slots);
    if (!slot) continue;
    status.holders.push_back(holder_from(kv, *slot));
    // A held slot N means the lock has at least N + 1, whatever its holder recorded.
    const int implied = *slot < std::numeric_limits<int>::max() ? *slot + 1 : *slot;
    status.slots = std::max({status.slots, status.holders.back().slots, implied});
  }
  std::sort(status.holders.begin(), status.holders.end(),
            [](const SlotHolder& a, const SlotHolder& b) { return a.slot < b.slot; });
  auto waiters = client->range_prefix(waiters_prefix(options, name));
  if (!waiters) return std::unexpected(error_of(waiters.error(), options));
  for (const auto& kv : waiters->kvs) {
    SlotWaiter waiter;
    auto reading = record::parse(kv.value);
    status.slots = std::max(status.slots, reading.record.slots);
    fill_from(waiter, reading, kv.value);
    status.waiters.push_back(std::move(waiter));
  }
  status.endpoint = client->endpoint();
  return status;
}

}  // namespace pidlock::fleet
