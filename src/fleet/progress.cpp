// A waiter's progress reports, and what becomes of an on_wait that throws.
#include "progress.hpp"

#include <exception>

#include "errors.hpp"

namespace pidlock::fleet {

bool Reporter::answered(std::vector<SlotHolder> holders) {
  holders_ = std::move(holders);
  const bool changed = failure_.has_value();
  failure_.reset();
  return report(changed);
}

bool Reporter::failed(const etcd::Failure& failure) {
  const bool changed = !failure_.has_value();
  failure_ = error_of(failure, options_);
  return report(changed);
}

bool Reporter::report(bool changed) {
  if (!options_.on_wait || thrown_) return !thrown_;
  const auto now = timing::Clock::now();
  if (!changed && reported_ && now < next_due()) return true;
  reported_ = true;
  last_ = now;
  try {
    options_.on_wait(WaitProgress{now - started_, holders_, failure_});
  } catch (const std::exception& e) {
    thrown_ = Errors::cancelled(name_, e.what());
  } catch (...) {
    // No C++ exception at all: the unwinding of a cancelled thread, which must go on.
    if (!std::current_exception()) throw;
    thrown_ = Errors::cancelled(name_, "not a std::exception");
  }
  return !thrown_;
}

}  // namespace pidlock::fleet
