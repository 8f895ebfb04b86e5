// Where a timed wait's hand-off spends its time, stage by stage, beside a bare blocking flock's
// hand-off in the same run. flock(2) has no timeout and a library may not use signals, so a timed
// wait needs a second process blocked in flock on the caller's open file description (see
// src/wait.hpp); the hand-off then takes two wake-ups in series where a bare flock takes one.
// This measures each: the unlock waking the helper (the same wake-up a bare flock waiter gets),
// the helper waking the caller through an eventfd, and the caller reaping the helper. The helper
// here is plain C++ built like pidlock's (CLONE_VM | CLONE_FILES | CLONE_PIDFD, no exit signal,
// its own stack), with a time stamp added: pidlock's own is a few instructions of assembly that
// cannot take one. A third kind shows what guarantee 12 of docs/guarantees.md (the helper never
// outlives acquire) costs: its helper steps aside (sched_yield) once it has said "granted", and
// the caller's sample ends when it wakes, before it reaps the helper. The three kinds take turns,
// so that all see the same machine.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <vector>

#include "bench_support.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace {

using namespace pidlock::bench;

constexpr int rounds = 1000;  // each: one hand-off of each kind

enum Kind { bare = 0, helper = 1, unreaped = 2, kinds = 3 };

struct Sample {
  std::int64_t bare;             // unlock → the bare waiter's flock returned
  std::int64_t to_helper;        // unlock → the helper's flock returned
  std::int64_t to_caller;        // the helper's flock returned → the caller's ppoll returned
  std::int64_t reap;             // the caller's ppoll returned → the helper reaped
  std::int64_t unreaped;         // unlock → the caller woke, its helper stepping aside
  bool bare_on_releasers_cpu;    // the bare waiter ran where the unlock was made
  bool helper_on_releasers_cpu;  // so did the helper
  bool caller_on_helpers_cpu;    // the caller woke where the helper ran
};

struct Shared {
  std::atomic<std::uint32_t> turn{0};  // odd: the releaser holds the lock and the waiter may queue
  std::atomic<std::int64_t> released{0};
  std::atomic<int> releasers_cpu{-1};
  std::atomic<std::int64_t> helper_granted{0};
  std::atomic<int> helpers_cpu{-1};
  Sample samples[rounds];
};

int current_cpu() {
  unsigned cpu = 0;
  ::syscall(SYS_getcpu, &cpu, nullptr, nullptr);
  return static_cast<int>(cpu);
}

void await_turn(Shared& shared, std::uint32_t turn) {
  while (shared.turn.load() != turn) futex_wait(shared.turn, shared.turn.load());
}

void pass_turn(Shared& shared, std::uint32_t turn) {
  shared.turn = turn;
  futex_wake_all(shared.turn);
}

struct HelperArgs {
  Shared* shared;
  int fd;
  int granted;
  bool step_aside;
};

// Runs on memory shared with the caller: system calls and stores only.
int helper_main(void* raw) {
  const auto* args = static_cast<const HelperArgs*>(raw);
  while (::syscall(SYS_flock, args->fd, LOCK_EX) != 0) {
  }
  args->shared->helper_granted = now_ns();
  args->shared->helpers_cpu = current_cpu();
  const std::uint64_t one = 1;
  ::syscall(SYS_write, args->granted, &one, sizeof one);
  if (args->step_aside) ::syscall(SYS_sched_yield);
  ::syscall(SYS_exit_group, 0);
  return 0;
}

// The caller's side of one hand-off through a helper: returns once it holds the lock and the
// helper is reaped, its sample filled in.
void through_helper(Shared& shared, int fd, void* stack_top, Kind kind, Sample& sample) {
  const int granted = ::eventfd(0, EFD_CLOEXEC);
  HelperArgs args{&shared, fd, granted, kind == unreaped};
  int pidfd = -1;
  if (::clone(helper_main, stack_top, CLONE_VM | CLONE_FILES | CLONE_PIDFD, &args, &pidfd) < 0) {
    ::_exit(3);
  }
  pollfd watched[2] = {{granted, POLLIN, 0}, {pidfd, POLLIN, 0}};
  while (::ppoll(watched, 2, nullptr, nullptr) < 0 && errno == EINTR) {
  }
  const std::int64_t woke = now_ns();
  const bool on_helpers_cpu = current_cpu() == shared.helpers_cpu.load();
  siginfo_t info{};
  while (::syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED | __WALL, nullptr) != 0 &&
         errno == EINTR) {
  }
  const std::int64_t reaped = now_ns();
  if (kind == unreaped) {
    sample.unreaped = woke - shared.released.load();
    ::close(pidfd);
    ::close(granted);
    return;
  }
  const std::int64_t granted_at = shared.helper_granted.load();
  sample.to_helper = granted_at - shared.released.load();
  sample.to_caller = woke - granted_at;
  sample.reap = reaped - woke;
  sample.helper_on_releasers_cpu = shared.helpers_cpu.load() == shared.releasers_cpu.load();
  sample.caller_on_helpers_cpu = on_helpers_cpu;
  ::close(pidfd);
  ::close(granted);
}

// The waiting process: on each odd turn it queues for the lock, each kind by turns, takes its
// sample, lets go and hands the turn back.
[[noreturn]] void waiter(Shared& shared, const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  constexpr std::size_t stack_size = 64 * 1024;
  void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (fd < 0 || stack == MAP_FAILED) ::_exit(2);
  for (int i = 0; i < kinds * rounds; ++i) {
    const auto turn = static_cast<std::uint32_t>(2 * i + 1);
    await_turn(shared, turn);
    Sample& sample = shared.samples[i / kinds];
    const auto kind = static_cast<Kind>(i % kinds);
    if (kind == bare) {
      ::flock(fd, LOCK_EX);
      sample.bare = now_ns() - shared.released.load();
      sample.bare_on_releasers_cpu = current_cpu() == shared.releasers_cpu.load();
    } else {
      through_helper(shared, fd, static_cast<char*>(stack) + stack_size, kind, sample);
    }
    ::flock(fd, LOCK_UN);
    pass_turn(shared, turn + 1);
  }
  ::_exit(0);
}

template <typename Field>
std::vector<std::int64_t> sorted(const Shared& shared, Field field) {
  std::vector<std::int64_t> values;
  values.reserve(rounds);
  for (const Sample& sample : shared.samples) values.push_back(sample.*field);
  std::sort(values.begin(), values.end());
  return values;
}

double median_us(const std::vector<std::int64_t>& values) {
  return static_cast<double>(values[values.size() / 2]) / 1e3;
}

double p99_us(const std::vector<std::int64_t>& values) {
  return static_cast<double>(values[values.size() * 99 / 100]) / 1e3;
}

template <typename Field>
double share(const Shared& shared, Field field) {
  const auto n = std::count_if(std::begin(shared.samples), std::end(shared.samples),
                               [&](const Sample& sample) { return sample.*field; });
  return static_cast<double>(n) / rounds;
}

// Argument: the filesystem (0 tmpfs, 1 disk).
void BM_HandoffStages(benchmark::State& state) {
  const int filesystem = static_cast<int>(state.range(0));
  const auto path = scratch(dir_for(filesystem), "handoff-stages");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  struct stat st {};
  ::fstat(fd, &st);
  void* memory =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* shared = new (memory) Shared();
  for (auto _ : state) {
    const pid_t child = ::fork();
    if (child == 0) waiter(*shared, path);
    for (int i = 0; i < kinds * rounds; ++i) {
      const auto turn = static_cast<std::uint32_t>(2 * i + 1);
      ::flock(fd, LOCK_EX);
      pass_turn(*shared, turn);
      while (blocked_on(st.st_ino) == 0) ::sched_yield();  // a benchmark's wait, not a test's
      shared->releasers_cpu = current_cpu();
      shared->released = now_ns();
      ::flock(fd, LOCK_UN);
      await_turn(*shared, turn + 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
  }
  const auto bare = sorted(*shared, &Sample::bare);
  const auto to_helper = sorted(*shared, &Sample::to_helper);
  const auto to_caller = sorted(*shared, &Sample::to_caller);
  const auto reap = sorted(*shared, &Sample::reap);
  const auto unreaped_total = sorted(*shared, &Sample::unreaped);
  std::vector<std::int64_t> total;
  for (const Sample& sample : shared->samples) {
    total.push_back(sample.to_helper + sample.to_caller + sample.reap);
  }
  std::sort(total.begin(), total.end());
  state.counters["bare_median_us"] = median_us(bare);
  state.counters["bare_p99_us"] = p99_us(bare);
  state.counters["to_helper_median_us"] = median_us(to_helper);
  state.counters["to_caller_median_us"] = median_us(to_caller);
  state.counters["reap_median_us"] = median_us(reap);
  state.counters["helper_median_us"] = median_us(total);
  state.counters["helper_p99_us"] = p99_us(total);
  state.counters["unreaped_median_us"] = median_us(unreaped_total);
  state.counters["unreaped_p99_us"] = p99_us(unreaped_total);
  state.counters["bare_on_releasers_cpu"] = share(*shared, &Sample::bare_on_releasers_cpu);
  state.counters["helper_on_releasers_cpu"] = share(*shared, &Sample::helper_on_releasers_cpu);
  state.counters["caller_on_helpers_cpu"] = share(*shared, &Sample::caller_on_helpers_cpu);
  state.SetLabel(fs_name(filesystem));
  shared->~Shared();
  ::munmap(memory, sizeof(Shared));
  ::close(fd);
  std::filesystem::remove(path);
}
BENCHMARK(BM_HandoffStages)
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
