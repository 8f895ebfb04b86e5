// The busy path (another process holds the lock, and the error names it, kernel-verified), with
// and without 1,000 unrelated locks in /proc/locks; and inspect().
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

namespace {

using namespace pidlock::bench;

// Each benchmark here takes (unrelated locks, filesystem).
std::string crowd_label(const benchmark::State& state) {
  return std::to_string(state.range(0)) + " unrelated locks, " +
         fs_name(static_cast<int>(state.range(1)));
}

void BM_BusyWithHolderIdentified(benchmark::State& state) {
  const auto dir = dir_for(static_cast<int>(state.range(1)));
  const auto path = scratch(dir, "busy");
  // The unrelated locks belong to another process, as they would on a busy machine.
  HeldElsewhere crowd(scratch(dir, "busy-crowd"), static_cast<int>(state.range(0)));
  HeldElsewhere holder(path, 0);
  for (auto _ : state) {
    auto lock = pidlock::Lock::acquire(path);
    if (lock || !lock.error().holder() || lock.error().holder()->pid != holder.pid()) {
      state.SkipWithError("the holder was not identified");
    }
  }
  state.SetLabel(crowd_label(state));
  std::filesystem::remove(path);
}
BENCHMARK(BM_BusyWithHolderIdentified)->ArgsProduct({{0, 1000}, {0, 1}});

void BM_InspectHeld(benchmark::State& state) {
  const auto dir = dir_for(static_cast<int>(state.range(1)));
  const auto path = scratch(dir, "inspect");
  HeldElsewhere crowd(scratch(dir, "inspect-crowd"), static_cast<int>(state.range(0)));
  HeldElsewhere holder(path, 0);
  for (auto _ : state) {
    auto status = pidlock::inspect(path);
    if (!status || !status->held) state.SkipWithError("inspect failed");
  }
  state.SetLabel(crowd_label(state));
  std::filesystem::remove(path);
}
BENCHMARK(BM_InspectHeld)->ArgsProduct({{0, 1000}, {0, 1}});

// A free lock on a machine whose /proc/locks runs to many pages: the list may have skipped the
// lock, so inspect() asks the processes' descriptors too.
void BM_InspectFree(benchmark::State& state) {
  const auto dir = dir_for(static_cast<int>(state.range(1)));
  const auto path = scratch(dir, "inspect-free");
  HeldElsewhere crowd(scratch(dir, "inspect-free-crowd"), static_cast<int>(state.range(0)));
  { auto taken = pidlock::Lock::acquire(path); }  // a record naming a process not holding it
  for (auto _ : state) {
    auto status = pidlock::inspect(path);
    if (!status || status->held) state.SkipWithError("inspect failed");
  }
  state.SetLabel(crowd_label(state));
  std::filesystem::remove(path);
}
BENCHMARK(BM_InspectFree)->ArgsProduct({{0, 1000}, {0, 1}});

}  // namespace
