// Fleet slots: the policy. Which keys, what they hold, when to wait, retry or give up; the etcd
// client (etcd.hpp) does the talking.
#include "pidlock/fleet.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <ctime>
#include <limits>
#include <thread>
#include <variant>

#include "../escape.hpp"
#include "certificate.hpp"
#include "etcd_client.hpp"
#include "keys.hpp"
#include "lock_view.hpp"
#include "slot_record.hpp"
#include "timing.hpp"

namespace pidlock::fleet {
namespace {

using Clock = timing::Clock;
using etcd::Failure;

// The shortest watch a waiter opens (see wait_for_a_turn).
constexpr std::chrono::milliseconds min_watch{200};

// etcd's own limit (MaxLeaseTTL): it refuses longer leases.
constexpr std::chrono::seconds max_ttl = etcd::max_lease_ttl;

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

// Up to 1 MiB of a file we were given (a certificate), or nothing.
std::optional<std::string> small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  constexpr std::size_t limit = std::size_t{1} << 20U;
  std::string text;
  std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n <= 0 || text.size() + static_cast<std::size_t>(n) > limit) break;
    text.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// What the client certificate's own dates say about a refused session: etcd answers an expired
// one with a bare "bad certificate".
std::string certificate_dates(const Tls& tls) {
  if (tls.cert_file.empty()) return {};
  const auto pem = small_file(tls.cert_file);
  if (!pem) return {};
  const auto dates = certificate::validity(*pem);
  if (!dates) return {};
  const std::string file = text::printable_ascii(tls.cert_file);
  const auto now = unix_now();
  if (now > dates->not_after) {
    return "; the client certificate " + file + " expired on " +
           certificate::utc(dates->not_after) + ": renew it";
  }
  if (now < dates->not_before) {
    return "; the client certificate " + file + " is not valid before " +
           certificate::utc(dates->not_before) + " (check this host's clock)";
  }
  return {};
}

// What to fix when etcd refuses the caller itself. Never the password.
std::string hint(const Failure& failure, const Options& options) {
  const std::string user = text::printable_ascii(options.user);
  switch (failure.kind) {
    case etcd::FailureKind::auth:
      if (options.user.empty())
        return "; this etcd has authentication on: give a user and password";
      return "; check the password of etcd user " + user + ", and that the user exists";
    case etcd::FailureKind::permission: {
      const std::string prefix = text::printable_ascii(options.key_prefix);
      const std::string who = options.user.empty() ? "the user" : "etcd user " + user;
      return "; " + who + " needs a role with readwrite on the keys under " + prefix +
             " (etcdctl role grant-permission --prefix ROLE readwrite " + prefix + ")";
    }
    case etcd::FailureKind::tls:
      return certificate_dates(options.tls);
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

// A word a shell passes on as it is; anything else in single quotes.
std::string for_shell(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("/._-%:+=,@").find(c) != std::string_view::npos;
  });
  if (plain) return word;
  std::string quoted = "'";
  for (const char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The slots held, and the waiters that come before the asker: those free slots are theirs.
struct Busy {
  std::vector<SlotHolder> holders;
  std::size_t waiting = 0;
};

// Everything in it that holders wrote into etcd is escaped for a terminal, as in every message.
Error busy(const Options& options, std::string_view name, const Busy& found) {
  std::string described;
  std::optional<Holder> first;
  for (const auto& h : found.holders) {
    described += (described.empty() ? "" : "; ") +
                 (h.malformed ? "slot " + std::to_string(h.slot) + ": " : "") + describe(h);
    // A key that never expires holds its slot until someone deletes it: say so, and how.
    if (const auto advice = removal_hint(h); !advice.empty()) described += ", " + advice;
    if (!first && !h.malformed) first = as_holder(h);
  }
  std::string counts =
      std::to_string(found.holders.size()) + " of " + std::to_string(options.slots) + " slots held";
  if (found.waiting > 0) {
    counts += ", " + std::to_string(found.waiting) + (found.waiting == 1 ? " waiter" : " waiters") +
              " first in line";
  }
  const std::string role = text::for_terminal(options.role);
  std::string message =
      described.empty()
          ? "another " + role + " is next (a waiter that came first gets the free slot)"
          : "another " + role + " is running (" + described + ")";
  return Error::busy_with_message(
      message + " — fleet lock: " + text::for_terminal(name) + ", " + counts, std::move(first));
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
// Holders that were started with another slot count.
struct Mismatch {
  int slots = 0;
  bool at_least = false;  // no count recorded, but a slot held at slots - 1
};
// Options::on_wait threw: the wait is over.
struct Cancelled {
  Error error;
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

std::optional<Mismatch> disagreement(const std::vector<SlotHolder>& holders, int slots) {
  for (const auto& holder : holders) {
    if (auto other = disagreement(holder, slots)) return other;
  }
  return std::nullopt;
}

Error on_wait_threw(std::string_view name, std::string_view what) {
  const auto code = std::make_error_code(std::errc::operation_canceled);
  return Error::fleet_failure(ErrorKind::cancelled, "on_wait", std::string(name), code,
                              code.message() + ": the callback threw (" + std::string(what) +
                                  "); the wait was stopped and no slot taken");
}

// Keeps Options::on_wait informed: at the start of a wait, every progress_interval, and at once
// when etcd stops or starts answering. What on_wait throws is kept, never let through: each
// report says whether the waiter may go on.
class Reporter {
 public:
  Reporter(const Options& options, std::string_view name, Clock::time_point started)
      : options_(options), name_(name), started_(started) {}

  [[nodiscard]] bool answered(std::vector<SlotHolder> holders) {
    holders_ = std::move(holders);
    const bool changed = failure_.has_value();
    failure_.reset();
    return report(changed);
  }
  [[nodiscard]] bool failed(const Failure& failure) {
    const bool changed = !failure_.has_value();
    failure_ = error_of(failure, options_);
    return report(changed);
  }
  [[nodiscard]] bool tick() { return report(false); }
  // When the next report is due: a watch must not outlast it.
  Clock::time_point next_due() const {
    return options_.on_wait ? timing::saturating_add(last_, options_.progress_interval)
                            : Clock::time_point::max();
  }
  const std::optional<Error>& thrown() const { return thrown_; }

 private:
  bool report(bool changed) {
    if (!options_.on_wait || thrown_) return !thrown_;
    const auto now = Clock::now();
    if (!changed && reported_ && now < next_due()) return true;
    reported_ = true;
    last_ = now;
    try {
      options_.on_wait(WaitProgress{now - started_, holders_, failure_});
    } catch (const std::exception& e) {
      thrown_ = on_wait_threw(name_, e.what());
    } catch (...) {
      // No C++ exception at all: the unwinding of a cancelled thread, which must go on.
      if (!std::current_exception()) throw;
      thrown_ = on_wait_threw(name_, "not a std::exception");
    }
    return !thrown_;
  }

  const Options& options_;
  std::string_view name_;
  Clock::time_point started_;
  Clock::time_point last_{};
  bool reported_ = false;
  std::vector<SlotHolder> holders_;
  std::optional<Error> failure_;
  std::optional<Error> thrown_;
};

// One waiter's way to a slot: a lease; one read of the lock; a slot taken if one is free and no
// waiter came first; else a place in the queue, and a watch that follows the slots and the queue
// until it is our turn. Retried, while the failures may pass, until the deadline.
class Acquirer {
 public:
  Acquirer(etcd::Client& client, const Options& options, std::string_view name)
      : client_(client),
        options_(options),
        name_(name),
        started_(Clock::now()),
        deadline_(timing::saturating_add(started_, options.wait)),
        reporter_(options, name, started_),
        view_(view::keys_of(options.key_prefix, name)) {}

  std::expected<Taken, Error> run() {
    for (;;) {
      auto outcome = attempt();
      if (outcome) return conclude(*outcome);
      const Failure& failure = outcome.error();
      if (!failure.transient() || Clock::now() >= deadline_)
        return give_up(error_of(failure, options_));
      if (!reporter_.failed(failure)) return give_up(cancelled().error);
      const auto pause = std::min(backoff_.next(), timing::time_between(Clock::now(), deadline_));
      std::this_thread::sleep_for(pause);
    }
  }

  const LeaseClock& lease() const { return lease_; }

 private:
  using Outcome = std::variant<Taken, Busy, Mismatch, Cancelled>;
  enum class Woke { turn, deadline, read_again, cancelled };

  std::expected<Taken, Error> conclude(const Outcome& outcome) {
    if (const auto* slot = std::get_if<Taken>(&outcome)) return taken(*slot);
    // Not worth waiting out: the next holders will be started as the last ones were.
    if (const auto* other = std::get_if<Mismatch>(&outcome)) {
      return give_up(mismatch(options_, name_, *other));
    }
    if (const auto* found = std::get_if<Busy>(&outcome))
      return give_up(busy(options_, name_, *found));
    const auto* stopped = std::get_if<Cancelled>(&outcome);  // the one left
    return give_up(stopped != nullptr ? stopped->error : Error());
  }

  Cancelled cancelled() const { return {reporter_.thrown().value_or(Error())}; }

  // After this many creates in a row that a holder overtook (each followed by a read), the lock
  // counts as busy: the asker is told so, or waits for the watch, instead of asking on and on.
  static constexpr int max_overtaken = 4;

  // One read, then tries and watches until a slot is ours, the wait is over, or etcd fails.
  std::expected<Outcome, Failure> attempt() {
    if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
    if (auto read = read_lock(); !read) return std::unexpected(read.error());
    int overtaken = 0;
    for (;;) {
      auto mine = own_slot();
      if (!mine) return std::unexpected(mine.error());
      if (const std::optional<Taken>& found = *mine) return *found;
      if (auto other = disagreement(view_.holders(), options_.slots)) return *other;
      if (overtaken < max_overtaken) {
        if (const auto slot = slot_to_take()) {
          auto tried = try_slot(*slot);
          if (!tried) return std::unexpected(tried.error());
          if (const std::optional<Taken>& got = *tried) return *got;
          ++overtaken;  // our view was behind: look again
          if (auto read = read_lock(); !read) return std::unexpected(read.error());
          continue;
        }
      }
      if (Clock::now() >= deadline_) return Busy{view_.holders(), waiting_before_us()};
      if (!reporter_.answered(view_.holders())) return cancelled();
      if (auto queued = join_the_queue(); !queued) return std::unexpected(queued.error());
      auto woke = wait_for_a_turn();
      if (!woke) return std::unexpected(woke.error());
      if (*woke == Woke::cancelled) return cancelled();
      if (*woke == Woke::read_again) {
        if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
        if (auto read = read_lock(); !read) return std::unexpected(read.error());
      }
      overtaken = 0;
    }
  }

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

  // Our place in the queue went with the lease.
  void forget_lease() {
    lease_ = {};
    queued_at_ = 0;
    waiter_key_.clear();
  }

  std::expected<void, Failure> read_lock() {
    auto read = view::read_lock(client_, view_.keys(), false);
    if (!read) return std::unexpected(read.error());
    view_.reset(read->slots, read->waiters, read->revision);
    backoff_.reset();  // etcd answers
    return {};
  }

  // A slot already bound to our lease: a create of ours that etcd carried out but whose answer
  // was lost. One is kept; any other (a lower slot taken on a later try) is given back at once,
  // so that a lease never holds two slots.
  std::expected<std::optional<Taken>, Failure> own_slot() {
    const auto mine = view_.held_under(lease_.id);
    if (mine.empty()) return std::nullopt;
    for (std::size_t i = 1; i < mine.size(); ++i) {
      auto given_back = client_.delete_if_created(mine[i].key, mine[i].fence);
      if (!given_back) return std::unexpected(given_back.error());
    }
    return Taken{mine.front().slot, mine.front().fence};
  }

  // The free slot that is ours to take, if any: the waiters before us are served first, the
  // first of them the first free slot, and so on, so that waiters served together do not ask for
  // the same one.
  std::optional<int> slot_to_take() const {
    // Until the watch has shown our own place, waiters that came just before us may be missing.
    if (queued_at_ != 0 && view_.revision() < queued_at_) return std::nullopt;
    const std::size_t ahead = waiting_before_us();
    if (ahead >= view_.free_count(options_.slots)) return std::nullopt;
    return view_.nth_free(options_.slots, ahead);
  }

  std::size_t waiting_before_us() const { return view_.waiters_before(queued_at_); }

  // Each slot is created on the condition that no slot key was created or changed since the
  // view's revision, so that two starting at once with different slot counts cannot both get
  // in: the later one's transaction fails, and it reads again. Nothing when overtaken.
  std::expected<std::optional<Taken>, Failure> try_slot(int slot) {
    const view::Keys& keys = view_.keys();
    const etcd::Unchanged since_seen{keys.slots_begin(), keys.slots_end(), view_.revision()};
    auto created = client_.create_if_absent(keys.slots + std::to_string(slot), record_now(),
                                            lease_.id, since_seen);
    if (!created && created.error().lease_not_found()) {
      // Expired between our renewal and the transaction: a fresh lease, and the view read again.
      forget_lease();
      if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
      return std::nullopt;
    }
    if (!created) return std::unexpected(created.error());
    if (created->created) return Taken{slot, created->revision};
    // Ours already: an earlier try reached etcd but its answer did not reach us.
    const auto& existing = created->existing;
    if (existing && existing->lease == lease_.id) return Taken{slot, existing->create_revision};
    return std::nullopt;
  }

  // Who we are, for status; started now, so that "held for" does not count the wait. The slot
  // count goes in too, so that `status` can say "of N" without being told.
  std::string record_now() const {
    return record::format(
        {host_name(), ::getpid(), options_.command, unix_now(), options_.role, options_.slots});
  }

  // A key under our lease, so that status lists us, and that vanishes with us; its creation
  // revision is our place in the queue. Created only if absent, so that a try whose answer was
  // lost finds its own key and its place.
  std::expected<void, Failure> join_the_queue() {
    if (queued_at_ != 0) return {};
    const std::string key = view_.keys().waiters + host_name() + ":" + std::to_string(::getpid()) +
                            ":" + std::to_string(lease_.id);
    auto created = client_.create_if_absent(key, record_now(), lease_.id);
    if (!created) return std::unexpected(created.error());
    const std::optional<etcd::KeyValue>& existing = created->existing;
    if (created->created) {
      queued_at_ = created->revision;
    } else if (existing && existing->lease == lease_.id) {
      queued_at_ = existing->create_revision;
    } else {
      Failure taken_by_another;
      taken_by_another.kind = etcd::FailureKind::etcd_error;
      taken_by_another.operation = "txn";
      taken_by_another.endpoint = client_.endpoint();
      taken_by_another.detail = "the waiter key " + text::printable_ascii(key) +
                                " exists, under another lease: cannot queue";
      return std::unexpected(std::move(taken_by_another));
    }
    waiter_key_ = key;
    return {};
  }

  // Whether the view says something to act on: a slot of ours, a holder with another count, or
  // a free slot that is ours to take.
  bool my_turn() const {
    return !view_.held_under(lease_.id).empty() ||
           disagreement(view_.holders(), options_.slots).has_value() || slot_to_take().has_value();
  }

  // Follows the slots and the queue, without asking etcd anything, until it is our turn or the
  // deadline; keeps our lease alive and the progress reports going meanwhile.
  std::expected<Woke, Failure> wait_for_a_turn() {
    const view::Keys& keys = view_.keys();
    const etcd::LeaseId waiting_under = lease_.id;
    for (;;) {
      const auto now = Clock::now();
      if (now >= deadline_) return Woke::deadline;
      const auto until =
          std::min({deadline_, reporter_.next_due(),
                    timing::saturating_add(lease_.renewed_at, renewal_period(lease_.ttl))});
      // Long enough for etcd to answer the watch at all: one that times out before etcd has
      // said a word looks like an etcd that does not answer.
      const auto slice = std::max(
          std::chrono::duration_cast<std::chrono::milliseconds>(timing::time_between(now, until)),
          min_watch);
      bool turn = false;
      auto woke = client_.watch(keys.slots_begin(), keys.waiters_end(), view_.revision() + 1, slice,
                                [&](const std::vector<etcd::WatchEvent>& events) {
                                  view_.apply(events);
                                  turn = my_turn();
                                  return !turn;
                                });
      if (!woke) return std::unexpected(woke.error());
      if (turn) return Woke::turn;
      // A stream etcd ended (e.g. our start revision was compacted): read again.
      if (*woke != etcd::WatchEnd::timed_out) return Woke::read_again;
      if (!reporter_.tick()) return Woke::cancelled;
      if (auto leased = ensure_lease(); !leased) return std::unexpected(leased.error());
      // A new lease: etcd lost track of us for a while, and our place in the queue with it.
      if (lease_.id != waiting_under) return Woke::read_again;
    }
  }

  std::expected<Taken, Error> taken(Taken slot) {
    // Served: out of the queue, so that it moves on at once (until then, waiters after us count
    // our lease's slot and pass over us anyway).
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
  timing::Backoff backoff_;
  LeaseClock lease_;
  view::LockView view_;
  etcd::Revision queued_at_ = 0;  // our waiter key's creation; 0 until we queue
  std::string waiter_key_;
};

// Empty when `path` can be opened for reading, else why not: a missing certificate is better
// named now than as a TLS failure at the first request.
std::string unreadable(std::string_view what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return "cannot read the " + std::string(what) + " " + text::printable_ascii(path) + ": " +
           std::system_category().message(error);
  }
  ::close(fd);
  return {};
}

// `endpoint` fit for a message: the password in user:password@ (refused, but it must not be
// repeated in the refusal, a log or a terminal's scrollback) replaced with ***.
std::string redacted(const std::string& endpoint) {
  const auto scheme_end = endpoint.find("://");
  const std::size_t authority = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  const auto at = endpoint.find('@', authority);
  const auto slash = endpoint.find('/', authority);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) return endpoint;
  const auto colon = endpoint.find(':', authority);
  std::string shown = endpoint;
  if (colon != std::string::npos && colon < at) shown.replace(colon + 1, at - colon - 1, "***");
  return shown;
}

// Empty when `endpoint` is a URL the client may be given, else why not. Credentials in it
// (user:password@) would sit in every message and, from a command line, in /proc/PID/cmdline.
std::string bad_endpoint(const std::string& endpoint) {
  const auto shown = [&endpoint] {
    return "etcd endpoint '" + text::printable_ascii(redacted(endpoint)) + "'";
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

// TLS files that cannot be read, or a client certificate without its key, are TLS set up wrong,
// as one that does not verify: named now, not as the TLS library's words at the first request
// (which, for a certificate file without a key, call the certificate file the key).
std::optional<Unusable> check_tls(const Tls& tls) {
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a client key file needs its certificate file"};
  }
  const std::pair<std::string_view, const std::string*> files[] = {
      {"CA file", &tls.ca_file},
      {"client certificate file", &tls.cert_file},
      {"client key file", &tls.key_file}};
  for (const auto& [what, path] : files) {
    if (path->empty()) continue;
    if (auto bad = unreadable(what, *path); !bad.empty()) return Unusable{ErrorKind::tls, bad};
  }
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    const auto pem = small_file(tls.cert_file);
    if (pem && !certificate::holds_private_key(*pem)) {
      return Unusable{ErrorKind::tls, "the client certificate file " +
                                          text::printable_ascii(tls.cert_file) +
                                          " holds no private key, and no key file was given "
                                          "(--key)"};
    }
  }
  return std::nullopt;
}

// What acquire and inspect both need: a name, endpoints, a usable prefix, and credentials and
// TLS files that hang together.
std::optional<Unusable> check_connection(std::string_view name, const Options& options) {
  if (name.empty()) return Unusable{ErrorKind::invalid_argument, "a fleet lock needs a name"};
  // Never a default: a lock taken in whatever cluster happens to listen on this host's
  // 127.0.0.1:2379 would exclude nobody.
  if (options.endpoints.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a fleet lock needs etcd endpoints (none given)"};
  }
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
                    "etcd user " + text::printable_ascii(options.user) + " needs a password"};
  }
  // etcd's API carries them as JSON text: other bytes would reach it altered, and a password
  // altered on the way comes back as the wrong password.
  if (!text::valid_utf8(options.user)) {
    return Unusable{ErrorKind::invalid_argument,
                    "etcd user " + text::printable_ascii(options.user) +
                        ": not UTF-8 text, which etcd's API cannot carry"};
  }
  if (!text::valid_utf8(options.password)) {
    return Unusable{ErrorKind::invalid_argument,
                    "the password of etcd user " + text::printable_ascii(options.user) +
                        " is not UTF-8 text, which etcd's API cannot carry"};
  }
  return check_tls(options.tls);
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

// etcd's refusals of who asks: once the user may no longer renew or read its own slot, the slot
// cannot be checked any more, and is given up rather than held unchecked.
bool refused_the_user(const Failure& failure) {
  return failure.kind == etcd::FailureKind::permission || failure.kind == etcd::FailureKind::auth;
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
  state->key = keys::slots_prefix(options.key_prefix, name) + std::to_string(taken->slot);
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
  auto refused = [this](const Failure& failure) {
    Error loss = Error::fleet_failure(ErrorKind::lease_lost, failure.operation, failure.endpoint,
                                      make_error_code(errc::slot_lost),
                                      failure.cause() + hint(failure, state_->options) +
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
    const Failure& failure = revoked.error();
    outcome = std::unexpected(Error::fleet_failure(
        kind_of(failure), failure.operation, failure.endpoint, make_error_code(code_of(failure)),
        failure.cause() + hint(failure, state_->options) + "; the slot frees when the lease " +
            "expires, within " + std::to_string(state_->lease.ttl.count()) + " s"));
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

std::string removal_hint(const SlotHolder& holder) {
  if (holder.lease != 0 || holder.key.empty()) return {};
  return "key " + text::for_terminal(holder.key) +
         ": it has no lease, so it never expires; remove it with etcdctl del " +
         text::for_terminal(for_shell(holder.key));
}

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
