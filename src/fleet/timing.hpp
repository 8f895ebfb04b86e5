// Deadlines and backoff for the fleet code. Every sum of a time point and a caller's duration
// saturates: a wait of nanoseconds::max() - 1 is "forever", not an overflow into the past.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <random>

#include "../sys.hpp"

namespace pidlock::fleet::timing {

using Clock = std::chrono::steady_clock;

// `from + span`, clamped to the clock's range: the library's one saturating sum.
using sys::saturating_add;

// Unix seconds, on this host's clock: what records say a holder started at.
inline std::int64_t unix_now() { return static_cast<std::int64_t>(::time(nullptr)); }

// `later - earlier`, zero when `later` is not later.
constexpr Clock::duration time_between(Clock::time_point earlier, Clock::time_point later) {
  return later > earlier ? later - earlier : Clock::duration::zero();
}

// Capped exponential backoff between retries, jittered: each pause is a random point in the upper
// half of its step (50 ms, 100 ms, … up to one second), so that waiters that failed together do
// not all come back together, and a waiter notices a recovered etcd within a second, without
// hammering a struggling one.
class Backoff {
 public:
  // Seeded apart in each process and each Backoff: two waiters started together draw apart.
  Backoff() : Backoff(fresh_seed()) {}
  explicit Backoff(std::uint64_t seed) : random_(static_cast<std::uint_fast32_t>(seed)) {}

  Clock::duration next() {
    const auto step = step_;
    step_ = std::min<Clock::duration>(step_ * 2, cap);
    std::uniform_int_distribution<Clock::rep> within(step.count() / 2, step.count());
    return Clock::duration(within(random_));
  }
  void reset() { step_ = first; }

  static constexpr Clock::duration first = std::chrono::milliseconds(50);
  static constexpr Clock::duration cap = std::chrono::seconds(1);

 private:
  static std::uint64_t fresh_seed() {
    static std::atomic<std::uint64_t> made{0};
    const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
    return now ^ (static_cast<std::uint64_t>(::getpid()) << 32U) ^ (++made * 0x9E3779B97F4A7C15U);
  }

  Clock::duration step_ = first;
  std::minstd_rand random_;
};

}  // namespace pidlock::fleet::timing
