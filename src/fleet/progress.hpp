// A waiter's reports to Options::on_wait: when it starts, every progress_interval, and at once
// when etcd stops or starts answering.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "etcd_failure.hpp"
#include "pidlock/fleet.hpp"
#include "timing.hpp"

namespace pidlock::fleet {

// Keeps Options::on_wait informed. What on_wait throws is kept, never let through: each report
// says whether the waiter may go on.
class Reporter {
 public:
  Reporter(const Options& options, std::string_view name, timing::Clock::time_point started)
      : options_(options), name_(name), started_(started) {}

  // etcd answered; `holders` as it sees them.
  [[nodiscard]] bool answered(std::vector<SlotHolder> holders);
  // etcd could not be asked.
  [[nodiscard]] bool failed(const etcd::Failure& failure);
  // Time passed.
  [[nodiscard]] bool tick() { return report(false); }
  // When the next report is due: a watch must not outlast it.
  timing::Clock::time_point next_due() const {
    return options_.on_wait ? timing::saturating_add(last_, options_.progress_interval)
                            : timing::Clock::time_point::max();
  }
  // What on_wait threw, as the Error that ends the wait.
  const std::optional<Error>& thrown() const { return thrown_; }

 private:
  bool report(bool changed);

  const Options& options_;
  std::string_view name_;
  timing::Clock::time_point started_;
  timing::Clock::time_point last_{};
  bool reported_ = false;
  std::vector<SlotHolder> holders_;
  std::optional<Error> failure_;
  std::optional<Error> thrown_;
};

}  // namespace pidlock::fleet
