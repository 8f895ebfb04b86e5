// Hand-off latency: from the moment one process releases to the moment a waiting one holds the
// lock, with 1, 4 and 16 waiters using timed waits; the CPU a long wait costs; and whole-process
// cost, `pidlock run F -- true` against `flock F true`.
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

extern char** environ;

namespace {

using namespace pidlock::bench;
using Clock = std::chrono::steady_clock;

constexpr int handoffs = 2000;

struct Shared {
  std::atomic<std::int64_t> released_at{0};  // steady-clock ns
  std::atomic<int> last_releaser{-1};
  std::atomic<std::uint32_t> generation{0};
  std::atomic<int> taken{0};
  std::int64_t samples[handoffs];
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t value) {
  timespec timeout{0, 50'000'000};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, value, &timeout, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1 << 30, nullptr, nullptr, 0);
}

// Each contender: take the lock (a timed wait, through the helper), note how long after the last
// release by someone else it got it, release, and stay out until another contender has taken it.
void contend(Shared& shared, const std::filesystem::path& path, int me) {
  pidlock::Options options;
  options.wait = std::chrono::seconds(60);
  while (shared.taken.load() < handoffs) {
    auto lock = pidlock::Lock::acquire(path, options);
    if (!lock) ::_exit(2);
    const std::int64_t got = now_ns();
    const std::int64_t released = shared.released_at.load();
    if (released != 0 && shared.last_releaser.load() != me) {
      const int slot = shared.taken.fetch_add(1);
      if (slot < handoffs) shared.samples[slot] = got - released;
    }
    const std::uint32_t generation = shared.generation.fetch_add(1) + 1;
    futex_wake_all(shared.generation);
    shared.last_releaser = me;
    shared.released_at = now_ns();
    lock->release();
    while (shared.generation.load() == generation && shared.taken.load() < handoffs) {
      futex_wait(shared.generation, generation);
    }
  }
  ::_exit(0);
}

void BM_Handoff(benchmark::State& state) {
  const int waiters = static_cast<int>(state.range(0));
  const auto path = scratch(dir_for(static_cast<int>(state.range(1))), "handoff");
  void* memory = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* shared = new (memory) Shared();
  std::vector<std::int64_t> sorted;
  for (auto _ : state) {
    std::vector<pid_t> children;
    for (int i = 0; i <= waiters; ++i) {  // one holder at a time, `waiters` waiting
      const pid_t pid = ::fork();
      if (pid == 0) contend(*shared, path, i);
      children.push_back(pid);
    }
    for (const pid_t pid : children) {
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
    sorted.assign(shared->samples, shared->samples + handoffs);
  }
  std::sort(sorted.begin(), sorted.end());
  state.counters["median_us"] = static_cast<double>(sorted[sorted.size() / 2]) / 1e3;
  state.counters["p99_us"] = static_cast<double>(sorted[sorted.size() * 99 / 100]) / 1e3;
  state.counters["handoffs"] = handoffs;
  state.SetLabel(std::to_string(waiters) + " waiters, " + fs_name(static_cast<int>(state.range(1))));
  shared->~Shared();
  ::munmap(memory, sizeof(Shared));
  std::filesystem::remove(path);
}
BENCHMARK(BM_Handoff)
    ->ArgsProduct({{1, 4, 16}, {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

double cpu_seconds(int who) {
  rusage usage{};
  ::getrusage(who, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// CPU spent by a timed wait that runs its full course (the holder never lets go).
void BM_TimedWaitCpu(benchmark::State& state) {
  const auto path = scratch(tmpfs_dir(), "cpu");
  HeldElsewhere holder(path, 0);
  pidlock::Options options;
  options.wait = std::chrono::seconds(state.range(0));
  double cpu = 0;
  for (auto _ : state) {
    const double before = cpu_seconds(RUSAGE_SELF) + cpu_seconds(RUSAGE_CHILDREN);
    auto lock = pidlock::Lock::acquire(path, options);
    cpu = cpu_seconds(RUSAGE_SELF) + cpu_seconds(RUSAGE_CHILDREN) - before;
    if (lock) state.SkipWithError("the lock was free");
  }
  state.counters["cpu_ms"] = cpu * 1e3;
  state.SetLabel(std::to_string(state.range(0)) + " s wait");
  std::filesystem::remove(path);
}
BENCHMARK(BM_TimedWaitCpu)->Arg(10)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

int spawn_and_wait(const std::vector<const char*>& argv) {
  pid_t pid = 0;
  std::vector<char*> args;
  for (const char* a : argv) args.push_back(const_cast<char*>(a));
  args.push_back(nullptr);
  if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

void BM_ProcessFlock(benchmark::State& state) {
  const auto path = scratch(tmpfs_dir(), "process-flock");
  for (auto _ : state) {
    if (spawn_and_wait({"flock", path.c_str(), "true"}) != 0) state.SkipWithError("flock failed");
  }
  std::filesystem::remove(path);
}
BENCHMARK(BM_ProcessFlock)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_ProcessPidlockRun(benchmark::State& state) {
  const auto path = scratch(tmpfs_dir(), "process-pidlock");
  for (auto _ : state) {
    if (spawn_and_wait({PIDLOCK_BINARY, "run", path.c_str(), "--", "true"}) != 0) {
      state.SkipWithError("pidlock run failed");
    }
  }
  std::filesystem::remove(path);
}
BENCHMARK(BM_ProcessPidlockRun)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
