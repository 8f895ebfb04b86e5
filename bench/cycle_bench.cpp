// One acquire+release cycle, pidlock against the syscall floor and the peers, on tmpfs and disk.
// Argument 0 is tmpfs, 1 is disk (see bench_support.hpp).
#include <benchmark/benchmark.h>
#include <bsd/libutil.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/interprocess/sync/file_lock.hpp>
#include <charconv>

#include "bench_support.hpp"
#include "pidlock/pidlock.hpp"

namespace {

using namespace pidlock::bench;

// The least any PID lock can do: open, flock, write the PID, truncate, unlock, close.
void BM_SyscallFloor(benchmark::State& state) {
  const auto path = scratch(dir_for(static_cast<int>(state.range(0))), "floor");
  char record[16];
  const auto end = std::to_chars(record, record + sizeof record, ::getpid()).ptr;
  *end = '\n';
  const auto size = static_cast<std::size_t>(end + 1 - record);
  for (auto _ : state) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ::flock(fd, LOCK_EX | LOCK_NB);
    benchmark::DoNotOptimize(::pwrite(fd, record, size, 0));
    benchmark::DoNotOptimize(::ftruncate(fd, static_cast<off_t>(size)));
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_SyscallFloor)->Arg(0)->Arg(1);

void BM_Pidlock(benchmark::State& state) {
  const auto path = scratch(dir_for(static_cast<int>(state.range(0))), "pidlock");
  for (auto _ : state) {
    auto lock = pidlock::Lock::acquire(path);
    if (!lock) state.SkipWithError(lock.error().message().c_str());
    benchmark::DoNotOptimize(lock->release());
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_Pidlock)->Arg(0)->Arg(1);

// The seed package's Acquire: mkdir -p, open, flock, truncate, write the PID, fsync, then unlock
// and close. Reproduced from its documented behaviour, to price its fsync.
void BM_SeedGoPackageEquivalent(benchmark::State& state) {
  const auto path = scratch(dir_for(static_cast<int>(state.range(0))), "seed");
  const std::string record = std::to_string(::getpid()) + "\n";
  for (auto _ : state) {
    std::filesystem::create_directories(path.parent_path());
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ::flock(fd, LOCK_EX | LOCK_NB);
    benchmark::DoNotOptimize(::ftruncate(fd, 0));
    benchmark::DoNotOptimize(::pwrite(fd, record.data(), record.size(), 0));
    benchmark::DoNotOptimize(::fsync(fd));
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_SeedGoPackageEquivalent)->Arg(0)->Arg(1);

// libbsd: pidfile_open (flock + O_CREAT), pidfile_write (truncate, write, fsync), pidfile_close.
void BM_LibbsdPidfile(benchmark::State& state) {
  const auto path = scratch(dir_for(static_cast<int>(state.range(0))), "bsd");
  for (auto _ : state) {
    pid_t other = 0;
    pidfh* handle = ::pidfile_open(path.c_str(), 0644, &other);
    if (handle == nullptr) state.SkipWithError("pidfile_open failed");
    benchmark::DoNotOptimize(::pidfile_write(handle));
    ::pidfile_close(handle);
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_LibbsdPidfile)->Arg(0)->Arg(1);

// Boost.Interprocess file_lock: flock on an existing file, no PID.
void BM_BoostFileLock(benchmark::State& state) {
  const auto path = scratch(dir_for(static_cast<int>(state.range(0))), "boost");
  ::close(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));  // it must exist
  for (auto _ : state) {
    boost::interprocess::file_lock lock(path.c_str());
    benchmark::DoNotOptimize(lock.try_lock());
    lock.unlock();
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_BoostFileLock)->Arg(0)->Arg(1);

// Acquire+release while another process holds 10,000 unrelated locks: cost must stay flat.
void BM_PidlockWith10000UnrelatedLocks(benchmark::State& state) {
  const auto dir = dir_for(static_cast<int>(state.range(0)));
  HeldElsewhere crowd(scratch(dir, "crowd-anchor"), 10000);
  const auto path = scratch(dir, "pidlock-crowded");
  for (auto _ : state) {
    auto lock = pidlock::Lock::acquire(path);
    if (!lock) state.SkipWithError(lock.error().message().c_str());
  }
  state.SetLabel(fs_name(static_cast<int>(state.range(0))));
  std::filesystem::remove(path);
}
BENCHMARK(BM_PidlockWith10000UnrelatedLocks)->Arg(0)->Arg(1);

}  // namespace
