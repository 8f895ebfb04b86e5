// What `status` costs as the machine grows around the lock: the same held (or free) lock with
// 0, 1,000 and 3,000 idle processes that have nothing to do with it. Status names every process
// sharing the lock; how it finds them decides whether its cost follows the lock or the machine.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

namespace {

using namespace pidlock::bench;

std::string idle_label(const benchmark::State& state) {
  return std::to_string(state.range(0)) + " idle processes, tmpfs";
}

void BM_InspectHeldAmongIdleProcesses(benchmark::State& state) {
  const auto path = scratch(tmpfs_dir(), "inspect-idle");
  HeldElsewhere holder(path, 0);
  IdleProcesses idle(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto status = pidlock::inspect(path);
    if (!status || !status->held || !status->holder || status->holder->pid != holder.pid()) {
      state.SkipWithError("the holder was not named");
    }
  }
  state.SetLabel(idle_label(state));
  std::filesystem::remove(path);
}
BENCHMARK(BM_InspectHeldAmongIdleProcesses)
    ->Arg(0)
    ->Arg(1000)
    ->Arg(3000)
    ->Unit(benchmark::kMicrosecond);

void BM_InspectFreeAmongIdleProcesses(benchmark::State& state) {
  const auto path = scratch(tmpfs_dir(), "inspect-free-idle");
  { auto taken = pidlock::Lock::acquire(path); }  // a record naming a process not holding it
  IdleProcesses idle(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto status = pidlock::inspect(path);
    if (!status || status->held) state.SkipWithError("inspect failed");
  }
  state.SetLabel(idle_label(state));
  std::filesystem::remove(path);
}
BENCHMARK(BM_InspectFreeAmongIdleProcesses)
    ->Arg(0)
    ->Arg(1000)
    ->Arg(3000)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
