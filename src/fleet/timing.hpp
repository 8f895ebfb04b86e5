// Deadlines and backoff for the fleet code. Every sum of a time point and a caller's duration
// saturates: a wait of nanoseconds::max() - 1 is "forever", not an overflow into the past.
#pragma once

#include <algorithm>
#include <chrono>

#include "../sys.hpp"

namespace pidlock::fleet::timing {

using Clock = std::chrono::steady_clock;

// `from + span`, clamped to the clock's range: the library's one saturating sum.
using sys::saturating_add;

// `later - earlier`, zero when `later` is not later.
constexpr Clock::duration time_between(Clock::time_point earlier, Clock::time_point later) {
  return later > earlier ? later - earlier : Clock::duration::zero();
}

// Capped exponential backoff between retries: 50 ms, 100 ms, … up to one second, so that a
// waiter notices a recovered etcd within a second, without hammering a struggling one.
class Backoff {
 public:
  Clock::duration next() {
    const auto delay = delay_;
    delay_ = std::min<Clock::duration>(delay_ * 2, cap);
    return delay;
  }
  void reset() { delay_ = first; }

  static constexpr Clock::duration first = std::chrono::milliseconds(50);
  static constexpr Clock::duration cap = std::chrono::seconds(1);

 private:
  Clock::duration delay_ = first;
};

}  // namespace pidlock::fleet::timing
