// The timed wait's fallbacks against its helper: the hand-off (release → the waiter holds the
// lock) and the CPU a wait costs, with the helper, with the forked waiter (a seccomp filter
// refusing the helper's clone) and polling (a filter refusing every new process). Each waiter is
// a forked process of its own, under its filter.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

namespace {

using namespace pidlock::bench;
using namespace std::chrono_literals;

enum Way { helper = 0, forked = 1, polling = 2 };

const char* way_name(int way) {
  switch (way) {
    case helper:
      return "helper";
    case forked:
      return "forked waiter";
    default:
      return "polling";
  }
}

// The filter for `way`, installed in this (forked) process: as tests/wait_fallback_test.cpp's
// "clone with pidfd refused" and "no process may be created".
void force(Way way) {
  if (way == helper) return;
  constexpr std::uint32_t arg0 =
      offsetof(seccomp_data, args) + (std::endian::native == std::endian::big ? 4 : 0);
  const bool refuse_pidfd = way == forked;
  std::vector<sock_filter> program = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg0),
      // forked: refused when CLONE_PIDFD is set; polling: refused unless CLONE_THREAD is.
      refuse_pidfd ? sock_filter BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_PIDFD, 0, 1)
                   : sock_filter BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  const sock_fprog fprog{static_cast<unsigned short>(program.size()), program.data()};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
    ::_exit(3);
  }
}

constexpr int samples_per_job = 200;

struct Shared {
  std::atomic<std::uint32_t> round{0};     // the holder has locked for this round
  std::atomic<std::uint32_t> waiting{0};   // the waiter's wait of this round has started
  std::atomic<std::uint32_t> finished{0};  // the waiter held and let go in this round
  std::atomic<std::int64_t> acquired_at{0};
};

void await(std::atomic<std::uint32_t>& word, std::uint32_t value) {
  for (std::uint32_t now = word.load(); now != value; now = word.load()) futex_wait(word, now);
}

void publish(std::atomic<std::uint32_t>& word, std::uint32_t value) {
  word = value;
  futex_wake_all(word);
}

// The waiter, a process of its own under the filter for `way`, waits `rounds` times, as a
// long-lived process does (its code and data already in place, as in BM_Handoff).
[[noreturn]] void wait_rounds(Shared& shared, const std::filesystem::path& path, Way way,
                              std::uint32_t rounds) {
  force(way);
  for (std::uint32_t round = 1; round <= rounds; ++round) {
    await(shared.round, round);
    pidlock::Options options;
    options.wait = 60s;
    options.progress_interval = std::chrono::hours(1);  // once, at the start
    options.on_wait = [&shared, round](std::chrono::nanoseconds,
                                       const std::optional<pidlock::Holder>&) {
      publish(shared.waiting, round);
    };
    auto lock = pidlock::Lock::acquire(path, options);
    shared.acquired_at = now_ns();
    if (!lock) ::_exit(2);
    lock->release();
    publish(shared.finished, round);
  }
  ::_exit(0);
}

// One waiter, for `way`, in a timed wait of 60 s; the holder lets go `held` after the wait has
// started (its first on_wait call, and for a waiting process once the kernel lists it as
// blocked), and the sample is the time from the release to the waiter's acquire returning. A
// poller's pause grows with the time it has waited: `held` sets where on its backoff the release
// falls.
void BM_FallbackHandoff(benchmark::State& state) {
  const auto way = static_cast<Way>(state.range(0));
  const auto held = std::chrono::milliseconds(state.range(1));
  const auto path = scratch(tmpfs_dir(), "fallback-handoff");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  struct stat st {};
  ::fstat(fd, &st);
  void* memory =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* shared = new (memory) Shared();
  const auto rounds =
      static_cast<std::uint32_t>(held >= 100ms ? samples_per_job / 4 : samples_per_job);
  std::vector<std::int64_t> samples;
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid == 0) wait_rounds(*shared, path, way, rounds);
    for (std::uint32_t round = 1; round <= rounds; ++round) {
      ::flock(fd, LOCK_EX);
      publish(shared->round, round);
      await(shared->waiting, round);
      // A waiting process is blocked in flock before the hold is timed; a poller is in no list.
      while (way != polling && blocked_on(st.st_ino) == 0) ::sched_yield();
      const auto until = now_ns() + std::chrono::nanoseconds(held).count();
      while (now_ns() < until) ::usleep(200);  // a benchmark's hold, not a test's wait
      const std::int64_t released = now_ns();
      ::flock(fd, LOCK_UN);
      await(shared->finished, round);
      samples.push_back(shared->acquired_at.load() - released);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (status != 0) state.SkipWithError("the waiter failed");
  }
  std::sort(samples.begin(), samples.end());
  state.counters["median_us"] = static_cast<double>(samples[samples.size() / 2]) / 1e3;
  state.counters["p99_us"] = static_cast<double>(samples[samples.size() * 99 / 100]) / 1e3;
  state.counters["handoffs"] = static_cast<double>(samples.size());
  state.SetLabel(std::string(way_name(way)) + ", released " + std::to_string(held.count()) +
                 " ms into the wait");
  ::close(fd);
  shared->~Shared();
  ::munmap(memory, sizeof(Shared));
  std::filesystem::remove(path);
}
BENCHMARK(BM_FallbackHandoff)
    ->ArgsProduct({{helper, forked, polling}, {5, 100}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The CPU a timed wait that runs its full course costs (the holder never lets go), counted in the
// waiting process, its reaped children included.
void BM_FallbackWaitCpu(benchmark::State& state) {
  const auto way = static_cast<Way>(state.range(0));
  const auto path = scratch(tmpfs_dir(), "fallback-cpu");
  HeldElsewhere holder(path, 0);
  void* memory =
      ::mmap(nullptr, sizeof(double), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* cpu_ms = static_cast<double*>(memory);
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      force(way);
      pidlock::Options options;
      options.wait = std::chrono::seconds(state.range(1));
      auto lock = pidlock::Lock::acquire(path, options);
      double cpu = 0;
      for (const int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
        rusage usage{};
        ::getrusage(who, &usage);
        cpu += static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
               static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
      }
      *cpu_ms = cpu;
      ::_exit(lock ? 2 : 0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (status != 0) state.SkipWithError("the wait did not time out");
  }
  state.counters["cpu_ms"] = *cpu_ms;
  state.SetLabel(std::string(way_name(way)) + ", " + std::to_string(state.range(1)) +
                 " s wait (the whole process)");
  ::munmap(memory, sizeof(double));
  std::filesystem::remove(path);
}
BENCHMARK(BM_FallbackWaitCpu)
    ->ArgsProduct({{helper, forked, polling}, {10}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
