// A waiter's way to a slot: lease, read, take or queue, watch, retry; and when to give up.
#include "acquire.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <thread>
#include <variant>

#include "../escape.hpp"
#include "errors.hpp"
#include "lock_view.hpp"
#include "progress.hpp"
#include "slot_record.hpp"
#include "timing.hpp"

namespace pidlock::fleet {
namespace {

using Clock = timing::Clock;
using etcd::Failure;

// The shortest watch a waiter opens (see wait_for_a_turn).
constexpr std::chrono::milliseconds min_watch{200};

std::string host_name() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "unknown";
  return name.data();
}

// The slot a waiter took, and the key's creation, which tells our key from a later one.
struct Taken {
  int slot = -1;
  etcd::Revision created = 0;
};
// The slots held, and the waiters that come before the asker: those free slots are theirs.
struct Busy {
  std::vector<SlotHolder> holders;
  std::size_t waiting = 0;
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
      return give_up(slot_count_mismatch(options_, name_, other->slots, other->at_least));
    }
    if (const auto* found = std::get_if<Busy>(&outcome)) {
      return give_up(busy(options_, name_, found->holders, found->waiting));
    }
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
    return record::format({host_name(), ::getpid(), options_.command, timing::unix_now(),
                           options_.role, options_.slots});
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
      return std::unexpected(etcd::make_failure(etcd::FailureKind::etcd_error, "txn",
                                                client_.endpoint(),
                                                "the waiter key " + text::printable_ascii(key) +
                                                    " exists, under another lease: cannot queue"));
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

}  // namespace

std::expected<Acquired, Error> take_a_slot(etcd::Client& client, const Options& options,
                                           std::string_view name) {
  Acquirer acquirer(client, options, name);
  auto taken = acquirer.run();
  if (!taken) return std::unexpected(std::move(taken.error()));
  Acquired acquired;
  acquired.slot = taken->slot;
  acquired.created = taken->created;
  acquired.lease = acquirer.lease();
  return acquired;
}

}  // namespace pidlock::fleet
