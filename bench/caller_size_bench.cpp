// What a timed wait costs a large caller. The wait blocks in a helper process; these measure, with
// 10 MiB, 1 GiB and 8 GiB of the caller's memory touched, how long a 1 ms timed wait on a held lock
// takes, how late a waiter is handed the lock, and how many page faults a thread that keeps
// writing takes while another thread waits. Each run measures its own 10 MiB baseline and reports
// the ratio to it. Not a test: nothing here asserts a time.
//
// The memory is mapped with MADV_NOHUGEPAGE, as a heap of small allocations ends up: with
// transparent huge pages a copied address space has 512 times fewer page-table entries to copy.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

namespace {

using namespace pidlock::bench;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr std::size_t mib = std::size_t{1} << 20;
constexpr std::size_t baseline_mib = 10;
constexpr std::size_t page = 4096;

// `size` bytes of anonymous memory, every page written once, unmapped when it goes.
class Touched {
 public:
  explicit Touched(std::size_t size) : size_(size) {
    memory_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory_ == MAP_FAILED) return;
    ::madvise(memory_, size_, MADV_NOHUGEPAGE);
    write_every_page(1);
  }
  ~Touched() {
    if (ok()) ::munmap(memory_, size_);
  }
  Touched(const Touched&) = delete;
  Touched& operator=(const Touched&) = delete;

  bool ok() const { return memory_ != MAP_FAILED; }
  void write_every_page(unsigned char value) {
    auto* bytes = static_cast<volatile unsigned char*>(memory_);
    for (std::size_t offset = 0; offset < size_; offset += page) bytes[offset] = value;
  }

 private:
  std::size_t size_;
  void* memory_ = MAP_FAILED;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

double milliseconds_since(Clock::time_point start) {
  return duration<double, std::milli>(Clock::now() - start).count();
}

pidlock::Options timed(std::chrono::nanoseconds wait) {
  pidlock::Options options;
  options.wait = wait;
  return options;
}

// How long acquire takes to give up on a lock held elsewhere, with a 1 ms wait.
std::vector<double> one_millisecond_waits(const std::filesystem::path& path, int samples) {
  std::vector<double> taken;
  for (int i = 0; i < samples; ++i) {
    const auto start = Clock::now();
    auto lock = pidlock::Lock::acquire(path, timed(std::chrono::milliseconds(1)));
    taken.push_back(milliseconds_since(start));
    if (lock) return {};  // the lock was free: nothing was measured
  }
  return taken;
}

void BM_OneMillisecondWait(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0)) * mib;
  const auto path = scratch(tmpfs_dir(), "size-wait");
  HeldElsewhere holder(path, 0);
  constexpr int samples = 25;
  double baseline = 0;
  double measured = 0;
  for (auto _ : state) {
    {
      Touched small(baseline_mib * mib);
      baseline = median(one_millisecond_waits(path, samples));
    }
    Touched large(size);
    if (!large.ok()) state.SkipWithError("could not map the memory");
    measured = median(one_millisecond_waits(path, samples));
  }
  state.counters["median_ms"] = measured;
  state.counters["baseline_ms"] = baseline;
  state.counters["ratio"] = baseline > 0 ? measured / baseline : 0;
  state.SetLabel(std::to_string(state.range(0)) + " MiB touched, vs " +
                 std::to_string(baseline_mib) + " MiB");
  std::filesystem::remove(path);
}
BENCHMARK(BM_OneMillisecondWait)
    ->Arg(baseline_mib)
    ->Arg(1024)
    ->Arg(8192)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// When the holder let go, in steady-clock nanoseconds, written by the holder in shared memory.
struct ReleaseTimes {
  std::atomic<std::int64_t> released_at{0};
};

// A small process that takes the lock, and each time it is told to, waits until someone is
// blocked on it, notes the time and lets go; then takes it back when told to. Forked before the
// caller grows, so that forking it costs nothing that is measured.
class Releaser {
 public:
  Releaser(const std::filesystem::path& path, ReleaseTimes& times) {
    int held[2];
    int go[2];
    if (::pipe(held) != 0 || ::pipe(go) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(held[0]);
      ::close(go[1]);
      serve(path, times, held[1], go[0]);
    }
    ::close(held[1]);
    ::close(go[0]);
    held_ = held[0];
    go_ = go[1];
  }
  ~Releaser() {
    ::close(go_);
    ::close(held_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  Releaser(const Releaser&) = delete;
  Releaser& operator=(const Releaser&) = delete;

  bool wait_until_held() {
    char c;
    return ::read(held_, &c, 1) == 1;
  }
  // It lets go once it sees a waiter.
  void release_to_the_next_waiter() { [[maybe_unused]] auto n = ::write(go_, "g", 1); }
  // It takes the lock back; not before, or it could win the lock back from the waiter.
  void take_it_back() { [[maybe_unused]] auto n = ::write(go_, "t", 1); }

 private:
  [[noreturn]] static void serve(const std::filesystem::path& path, ReleaseTimes& times, int held,
                                 int go) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    char c;
    for (;;) {
      if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(2);
      if (::write(held, "h", 1) != 1 || ::read(go, &c, 1) != 1) ::_exit(0);
      for (;;) {
        auto status = pidlock::inspect(path);
        if (status && !status->waiters.empty()) break;
        ::usleep(100);  // the holder's own polling, outside what is measured
      }
      times.released_at = now_ns();
      ::flock(fd, LOCK_UN);
      if (::read(go, &c, 1) != 1) ::_exit(0);
    }
  }

  pid_t pid_ = -1;
  int held_ = -1;
  int go_ = -1;
};

// From the holder's release to the waiter holding the lock, through a timed wait.
std::vector<double> handoffs(const std::filesystem::path& path, Releaser& releaser,
                             ReleaseTimes& times, int samples) {
  std::vector<double> latencies;
  for (int i = 0; i < samples; ++i) {
    if (!releaser.wait_until_held()) return {};
    releaser.release_to_the_next_waiter();
    auto lock = pidlock::Lock::acquire(path, timed(std::chrono::seconds(60)));
    const std::int64_t got = now_ns();
    if (!lock) return {};
    latencies.push_back(static_cast<double>(got - times.released_at.load()) / 1e6);
    lock->release();
    releaser.take_it_back();
  }
  return latencies;
}

void BM_HandoffToALargeCaller(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0)) * mib;
  const auto path = scratch(tmpfs_dir(), "size-handoff");
  void* shared = ::mmap(nullptr, sizeof(ReleaseTimes), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* times = new (shared) ReleaseTimes();
  constexpr int samples = 25;
  double baseline = 0;
  double measured = 0;
  for (auto _ : state) {
    Releaser releaser(path, *times);
    {
      Touched small(baseline_mib * mib);
      baseline = median(handoffs(path, releaser, *times, samples));
    }
    Touched large(size);
    if (!large.ok()) state.SkipWithError("could not map the memory");
    measured = median(handoffs(path, releaser, *times, samples));
  }
  state.counters["median_ms"] = measured;
  state.counters["baseline_ms"] = baseline;
  state.counters["ratio"] = baseline > 0 ? measured / baseline : 0;
  state.SetLabel(std::to_string(state.range(0)) + " MiB touched, vs " +
                 std::to_string(baseline_mib) + " MiB");
  times->~ReleaseTimes();
  ::munmap(shared, sizeof(ReleaseTimes));
  std::filesystem::remove(path);
}
BENCHMARK(BM_HandoffToALargeCaller)
    ->Arg(baseline_mib)
    ->Arg(1024)
    ->Arg(8192)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

long minor_faults() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Page faults in a caller whose other thread keeps writing over its memory, during a timed wait
// and during the same time without one. Every fault beyond the idle count is a copy-on-write
// fault that the wait caused.
void BM_FaultsWhileAThreadWrites(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0)) * mib;
  const auto path = scratch(tmpfs_dir(), "size-faults");
  HeldElsewhere holder(path, 0);
  constexpr auto span = std::chrono::seconds(1);
  Touched memory(size);
  if (!memory.ok()) state.SkipWithError("could not map the memory");
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (unsigned char value = 2; !stop; ++value) memory.write_every_page(value);
  });
  long idle = 0;
  long waiting = 0;
  for (auto _ : state) {
    const long before_idle = minor_faults();
    std::this_thread::sleep_for(span);
    idle = minor_faults() - before_idle;
    const long before_wait = minor_faults();
    auto lock = pidlock::Lock::acquire(path, timed(span));
    waiting = minor_faults() - before_wait;
    if (lock) state.SkipWithError("the lock was free");
  }
  stop = true;
  writer.join();
  state.counters["faults_idle"] = static_cast<double>(idle);
  state.counters["faults_waiting"] = static_cast<double>(waiting);
  state.SetLabel(std::to_string(state.range(0)) + " MiB written over, 1 s");
  std::filesystem::remove(path);
}
BENCHMARK(BM_FaultsWhileAThreadWrites)
    ->Arg(4096)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
