// Hand-off latency: from the moment one process releases to the moment a waiting one holds the
// lock, with 1, 4 and 16 waiters, for the physical limit (processes blocked in flock(LOCK_EX)
// itself) and pidlock's untimed and timed waits; the same through the commands (`flock -w`
// against `pidlock run -w`); the CPU a long wait costs; and whole-process cost,
// `pidlock run F -- true` against `flock F true`.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
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

// How the contenders wait: the limit, a process blocked in flock(LOCK_EX) on a descriptor it
// keeps open; pidlock waiting forever (it blocks in flock itself); pidlock with a deadline (its
// helper process blocks in flock).
enum Waiter { bare_flock = 0, pidlock_untimed = 1, pidlock_timed = 2 };

const char* waiter_name(int waiter) {
  switch (waiter) {
    case bare_flock:
      return "bare blocking flock";
    case pidlock_untimed:
      return "pidlock untimed wait";
    default:
      return "pidlock timed wait";
  }
}

// Holds the lock the contender's way until destroyed.
class Held {
 public:
  Held(Waiter waiter, int fd, const std::filesystem::path& path, const pidlock::Options& options)
      : fd_(fd) {
    if (waiter == bare_flock) {
      if (::flock(fd_, LOCK_EX) != 0) ::_exit(2);
    } else {
      auto lock = pidlock::Lock::acquire(path, options);
      if (!lock) ::_exit(2);
      lock_.emplace(std::move(*lock));
    }
  }
  void release() {
    if (lock_) {
      lock_->release();
    } else {
      ::flock(fd_, LOCK_UN);
    }
  }

 private:
  int fd_;
  std::optional<pidlock::Lock> lock_;
};

// Each contender: take the lock, note how long after the last release by someone else it got it,
// wait until every other contender is blocked in the kernel (the hand-off measured is always to
// a process that sleeps in flock, as the limit is defined, never to one that happens to be
// running and asks just as the lock frees), release, and stay out until another contender has
// taken it.
void contend(Shared& shared, const std::filesystem::path& path, int me, Waiter waiter, int others,
             ino_t ino) {
  pidlock::Options options;
  options.wait = waiter == pidlock_timed ? std::chrono::nanoseconds(std::chrono::seconds(60))
                                         : pidlock::wait_forever;
  const int fd =
      waiter == bare_flock ? ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
  while (shared.taken.load() < handoffs) {
    Held lock(waiter, fd, path, options);
    const std::int64_t got = now_ns();
    const std::int64_t released = shared.released_at.load();
    if (released != 0 && shared.last_releaser.load() != me) {
      const int slot = shared.taken.fetch_add(1);
      if (slot < handoffs) shared.samples[slot] = got - released;
    }
    // Taken: the last holder may queue again.
    const std::uint32_t generation = shared.generation.fetch_add(1) + 1;
    futex_wake_all(shared.generation);
    while (blocked_on(ino) < others && shared.taken.load() < handoffs) ::sched_yield();
    shared.last_releaser = me;
    shared.released_at = now_ns();
    lock.release();
    while (shared.generation.load() == generation && shared.taken.load() < handoffs) {
      futex_wait(shared.generation, generation);
    }
  }
  ::_exit(0);
}

// Arguments: the way of waiting (Waiter), the number of waiters, the filesystem.
void BM_Handoff(benchmark::State& state) {
  const auto waiter = static_cast<Waiter>(state.range(0));
  const int waiters = static_cast<int>(state.range(1));
  const int filesystem = static_cast<int>(state.range(2));
  const auto path = scratch(dir_for(filesystem), "handoff");
  ::close(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  struct stat st {};
  ::stat(path.c_str(), &st);
  void* memory =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* shared = new (memory) Shared();
  std::vector<std::int64_t> sorted;
  for (auto _ : state) {
    std::vector<pid_t> children;
    for (int i = 0; i <= waiters; ++i) {  // one holder at a time, `waiters` waiting
      const pid_t pid = ::fork();
      if (pid == 0) contend(*shared, path, i, waiter, waiters, st.st_ino);
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
  state.SetLabel(std::string(waiter_name(waiter)) + ", " + std::to_string(waiters) + " waiters, " +
                 fs_name(filesystem));
  shared->~Shared();
  ::munmap(memory, sizeof(Shared));
  std::filesystem::remove(path);
}
BENCHMARK(BM_Handoff)
    ->ArgsProduct({{bare_flock, pidlock_untimed, pidlock_timed}, {1, 4, 16}, {0, 1}})
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

// The hand-off through the commands: this process holds the lock, starts `flock -w 60 F stamp`
// or `pidlock run -w 60 F -- stamp`, waits until the command's flock (its own, or pidlock's
// helper's) is blocked, releases, and reads when the command started (the stamp program prints
// CLOCK_MONOTONIC at its start). Argument: 0 flock(1), 1 pidlock. The sample includes the exec
// of the stamp program, the same for both.
constexpr int cli_handoffs = 200;

void BM_CliHandoff(benchmark::State& state) {
  const bool pidlock = state.range(0) == 1;
  const auto path = scratch(tmpfs_dir(), pidlock ? "cli-handoff-pidlock" : "cli-handoff-flock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  struct stat st {};
  ::fstat(fd, &st);
  std::vector<std::int64_t> samples;
  for (auto _ : state) {
    for (int i = 0; i < cli_handoffs; ++i) {
      ::flock(fd, LOCK_EX);
      int out[2];
      if (::pipe2(out, O_CLOEXEC) != 0) std::abort();
      posix_spawn_file_actions_t actions;
      ::posix_spawn_file_actions_init(&actions);
      ::posix_spawn_file_actions_adddup2(&actions, out[1], 1);
      std::vector<const char*> argv;
      if (pidlock) {
        argv = {PIDLOCK_BINARY, "run", "-w", "60", path.c_str(), "--", STAMP_BINARY, nullptr};
      } else {
        argv = {"flock", "-w", "60", path.c_str(), STAMP_BINARY, nullptr};
      }
      pid_t pid = 0;
      if (::posix_spawnp(&pid, argv[0], &actions, nullptr, const_cast<char**>(argv.data()),
                         environ) != 0) {
        std::abort();
      }
      ::posix_spawn_file_actions_destroy(&actions);
      ::close(out[1]);
      while (blocked_on(st.st_ino) == 0) ::sched_yield();  // a benchmark's wait, not a test's
      const std::int64_t released = now_ns();
      ::flock(fd, LOCK_UN);
      char text[32] = {};
      std::size_t got = 0;
      for (ssize_t n = 0; (n = ::read(out[0], text + got, sizeof text - 1 - got)) > 0;)
        got += static_cast<std::size_t>(n);
      ::close(out[0]);
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (status != 0) state.SkipWithError("the command failed");
      samples.push_back(std::stoll(text) - released);
    }
  }
  std::sort(samples.begin(), samples.end());
  state.counters["median_us"] = static_cast<double>(samples[samples.size() / 2]) / 1e3;
  state.counters["p99_us"] = static_cast<double>(samples[samples.size() * 99 / 100]) / 1e3;
  state.counters["handoffs"] = static_cast<double>(samples.size());
  state.SetLabel(pidlock ? "pidlock run -w" : "flock -w");
  ::close(fd);
  std::filesystem::remove(path);
}
BENCHMARK(BM_CliHandoff)
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
