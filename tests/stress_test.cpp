// Mutual exclusion under load: 4, 16 and 64 processes, each doing hundreds of critical sections
// on one counter, through the library (blocking and timed waits) and through `pidlock run -w`.
// Zero lost updates and zero overlapping holders, detected directly (an O_EXCL marker and a
// journal that must alternate enter/leave), not inferred from the count.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "critical_section.hpp"
#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::TempDir;

// mixed: half the processes are writers doing the critical section, half readers holding the
// shared lock (timed waits both), and neither may ever be inside with a writer.
enum class Through { library_blocking, library_timed, command, mixed };

bool is_writer(Through through, int index) { return through != Through::mixed || index % 2 == 0; }

// A reader's turn: its marker file says a reader is inside; a writer's marker must be absent.
bool reader_section(const std::filesystem::path& dir) {
  const auto mine = dir / ("reader-" + std::to_string(::getpid()));
  test::write_text(mine, "");
  const bool alone_with_readers = !std::filesystem::exists(dir / "inside");
  std::filesystem::remove(mine);
  return alone_with_readers;
}

bool no_reader_inside(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().starts_with("reader-")) return false;
  }
  return true;
}

int iterations(Through through) {
  const char* env = std::getenv("PIDLOCK_STRESS_ITERATIONS");
  const int base = env != nullptr ? std::atoi(env) : 200;
  return through == Through::command ? std::max(1, base / 2) : base;
}

int worker(const std::filesystem::path& dir, Through through, int index, int count,
           int start_gate) {
  char go;
  if (::read(start_gate, &go, 1) < 0) return 2;  // EOF: everyone starts together
  // Under AddressSanitizer each pidlock would run LeakSanitizer at exit, while it still holds
  // the lock, serialising a quarter of a second per section; leaks are the other suites' job.
  if (through == Through::command) ::setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
  int overlaps = 0;
  for (int i = 0; i < count; ++i) {
    if (through == Through::command) {
      // A place in a queue of 64 slow-starting (sanitized) processes can take minutes.
      const auto r = test::run({test::pidlock_binary(), "run", "-w", "600", (dir / "lock").string(),
                                "--", PIDLOCK_STRESS_CRITICAL, dir.string()},
                               std::chrono::minutes(10));
      if (r.code != 0) ++overlaps;
      continue;
    }
    Options options;
    options.wait = through == Through::library_blocking
                       ? wait_forever
                       : std::chrono::nanoseconds(std::chrono::seconds(120));
    options.shared = !is_writer(through, index);
    auto lock = Lock::acquire(dir / "lock", options);
    if (!lock) {
      ++overlaps;
    } else if (options.shared) {
      if (!reader_section(dir)) ++overlaps;
    } else if (!no_reader_inside(dir) || !test::critical_section(dir)) {
      ++overlaps;
    }
  }
  return overlaps == 0 ? 0 : 1;
}

class MutualExclusion : public testing::TestWithParam<std::tuple<Through, int>> {};

TEST_P(MutualExclusion, NoLostUpdatesAndNoOverlap) {
  const auto [through, processes] = GetParam();
  const int count = iterations(through);
  TempDir dir;
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  std::fflush(nullptr);
  std::vector<pid_t> workers;
  for (int p = 0; p < processes; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(gate[1]);
      ::_exit(worker(dir.path(), through, p, count, gate[0]));
    }
    workers.push_back(pid);
  }
  ::close(gate[0]);
  ::close(gate[1]);  // go
  int failed = 0;
  for (const pid_t pid : workers) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  long sections = 0;
  int writers = 0;
  for (int p = 0; p < processes; ++p) writers += is_writer(through, p) ? 1 : 0;
  EXPECT_EQ(failed, 0) << "a worker saw an overlap (for readers: a writer inside)";
  EXPECT_TRUE(test::journal_alternates(dir.path(), sections)) << "two holders overlapped";
  EXPECT_EQ(sections, static_cast<long>(writers) * count);
  EXPECT_EQ(test::read_counter(dir.path()), static_cast<long>(writers) * count) << "lost updates";
  RecordProperty("critical_sections", static_cast<int>(sections));
  std::printf(
      "%d processes (%d writers) x %d critical sections: %ld writer sections, 0 overlaps, "
      "0 lost updates\n",
      processes, writers, count, sections);
}

std::string name(const testing::TestParamInfo<std::tuple<Through, int>>& info) {
  const auto [through, processes] = info.param;
  const char* how = through == Through::library_blocking ? "LibraryBlocking"
                    : through == Through::library_timed  ? "LibraryTimed"
                    : through == Through::mixed          ? "ReadersAndWriters"
                                                         : "Command";
  return std::string(how) + std::to_string(processes);
}

INSTANTIATE_TEST_SUITE_P(Load, MutualExclusion,
                         testing::Combine(testing::Values(Through::library_blocking,
                                                          Through::library_timed, Through::command,
                                                          Through::mixed),
                                          testing::Values(4, 16, 64)),
                         name);

}  // namespace
}  // namespace pidlock
