// Mutual exclusion under load: 4, 16 and 64 processes, each doing hundreds of critical sections
// on one counter, through the library (blocking and timed waits) and through `pidlock run -w`.
// Zero lost updates and zero overlapping holders, detected directly (an O_EXCL marker and a
// journal that must alternate enter/leave), not inferred from the count.
//
// And the truth of status under lock churn: a lock held by flock(1) while other processes take
// and drop hundreds of locks on other files, asked about thousands of times.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <sstream>

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

// Each library worker does `base` sections. A command section is a process or two, so command
// workers do half as many, and a crowd of them no more than 8 × base in all: 64 commands keep
// the queue as full as 16 do, in a quarter of the time.
int iterations(Through through, int processes) {
  const char* env = std::getenv("PIDLOCK_STRESS_ITERATIONS");
  const int base = env != nullptr ? std::atoi(env) : 200;
  if (through != Through::command) return base;
  return std::max(1, std::min(base / 2, base * 8 / processes));
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
  const int count = iterations(through, processes);
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

// --- status under lock churn
// ----------------------------------------------------------------------

// On `cpu`, opens `count` files of its own in `dir`, prints "ready", then until its stdin closes
// takes a shared flock on every one, keeps them for up to 3 ms, drops them all, and waits up to
// 3 ms again. The kernel's lock list grows and shrinks by `count` entries at each turn, and every
// entry listed after them moves by as many: a reader that reads the list a page at a time sees
// entries cross the boundary between two of its reads.
test::Child lock_churner(const std::filesystem::path& dir, int index, int count, std::size_t cpu) {
  test::Child child = test::Child::fork([=] {
    cpu_set_t only{};
    CPU_SET(cpu, &only);
    ::sched_setaffinity(0, sizeof only, &only);  // best effort: the churn matters, not where
    std::vector<int> fds;
    for (int i = 0; i < count; ++i) {
      const auto file = dir / ("churn-" + std::to_string(index) + "-" + std::to_string(i));
      const int fd = ::open(file.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return 1;
      fds.push_back(fd);
    }
    std::printf("ready\n");
    std::fflush(stdout);
    std::minstd_rand random(static_cast<unsigned>(::getpid()));
    std::uniform_int_distribution<int> pause_ms(0, 3);
    pollfd in{.fd = 0, .events = POLLIN, .revents = 0};
    for (int op = LOCK_SH;; op = op == LOCK_SH ? LOCK_UN : LOCK_SH) {
      for (const int fd : fds) {
        if (::flock(fd, op) != 0) return 1;
      }
      // The pause is the churn's rhythm; stdin closing (EOF) is the signal to stop.
      if (::poll(&in, 1, pause_ms(random)) != 0) return 0;
    }
  });
  EXPECT_EQ(child.read_line(), "ready");
  return child;
}

class Churn {
 public:
  Churn(const std::filesystem::path& dir, int churners, int locks_each) {
    cpu_set_t usable{};
    EXPECT_EQ(::sched_getaffinity(0, sizeof usable, &usable), 0);
    std::vector<std::size_t> cpus;
    for (std::size_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &usable)) cpus.push_back(cpu);
    }
    for (int i = 0; i < churners; ++i) {
      const std::size_t cpu = cpus[static_cast<std::size_t>(i) % cpus.size()];
      churners_.push_back(lock_churner(dir, i, locks_each, cpu));
    }
  }
  ~Churn() {
    for (test::Child& churner : churners_) churner.close_stdin();
    for (test::Child& churner : churners_) EXPECT_EQ(churner.wait(), 0);
  }
  Churn(const Churn&) = delete;
  Churn& operator=(const Churn&) = delete;

 private:
  std::vector<test::Child> churners_;
};

struct Wrong {
  int free = 0;       // held, and called free (or unknown)
  int no_holder = 0;  // held, and nobody named
  int wrong_pid = 0;  // somebody named who does not hold it
  int acquired = 0;   // the acquire that had to be refused was granted
  int no_waiter = 0;  // the one waiter not listed, or another listed
  int total() const { return free + no_holder + wrong_pid + acquired + no_waiter; }
};

int churn_scale() {
  const char* env = std::getenv("PIDLOCK_STRESS_ITERATIONS");
  return std::max(1, env != nullptr ? std::atoi(env) : 200);
}

// The reproduction, made faster: `flock L` holds L while four processes take and drop
// 100 shared locks each on other files every few milliseconds (the list grows and shrinks by up
// to 400 entries, 5 pages, and often falls below one page). Every answer about L must say held
// and name flock or its command, and every status must list the one waiter. Before the list was
// read for what it can prove, 0.5 % of the inspect() calls and of the refused acquires went wrong
// here (the issue's own setup, 5-40 ms pauses, 0.1 %).
TEST(Churn, AHeldLockIsNeverCalledFreeNorLeftWithoutItsHolder) {
  TempDir dir;
  const auto lock = dir / "held.lock";
  test::Child holder = test::Child::spawn(
      {test::flock_binary, lock.string(), "sh", "-c", "echo $$; exec cat >/dev/null"});
  const pid_t command = std::stoi(holder.read_line());
  const auto holds = [&](pid_t pid) { return pid == holder.pid() || pid == command; };
  test::Child waiter = test::Child::spawn({test::flock_binary, lock.string(), "true"});
  ASSERT_TRUE(test::someone_waits(lock));

  const int rounds = churn_scale() * 20;  // 4,000 of each library call, 400 status commands
  Wrong inspected, refused, commanded;
  int inspect_calls = 0, acquire_calls = 0, status_commands = 0;
  const auto start = std::chrono::steady_clock::now();
  {
    Churn churn(dir.path(), 4, 100);
    for (int round = 0; round < rounds; ++round) {
      auto status = inspect(lock);
      ++inspect_calls;
      if (!status || !status->held) {
        ++inspected.free;
      } else if (!status->holder) {
        ++inspected.no_holder;
      } else if (!holds(status->holder->pid)) {
        ++inspected.wrong_pid;
      } else if (status->waiters.size() != 1 || status->waiters[0].pid != waiter.pid()) {
        ++inspected.no_waiter;
      }

      auto busy = Lock::acquire(lock);
      ++acquire_calls;
      if (busy) {
        ++refused.acquired;
      } else if (!busy.error().held()) {
        ++refused.free;
      } else if (!busy.error().holder()) {
        ++refused.no_holder;
      } else if (!holds(busy.error().holder()->pid)) {
        ++refused.wrong_pid;
      }

      if (round % 10 == 0) {
        const auto r = test::run({test::pidlock_binary(), "status", lock.string()});
        ++status_commands;
        if (r.code != 75) {
          ++commanded.free;
        } else if (r.out.find("held by pid ") == std::string::npos) {
          ++commanded.no_holder;
        } else if (r.out.find("held by pid " + std::to_string(holder.pid()) + ",") ==
                       std::string::npos &&
                   r.out.find("held by pid " + std::to_string(command) + ",") ==
                       std::string::npos) {
          ++commanded.wrong_pid;
        }
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "under churn, %.1f s: inspect %d calls, %d free, %d without holder, %d wrong holder, "
      "%d without its waiter; "
      "refused acquire %d calls, %d granted, %d not busy, %d without holder, %d wrong holder; "
      "pidlock status %d runs, %d not held, %d without holder, %d wrong holder\n",
      seconds, inspect_calls, inspected.free, inspected.no_holder, inspected.wrong_pid,
      inspected.no_waiter, acquire_calls, refused.acquired, refused.free, refused.no_holder,
      refused.wrong_pid, status_commands, commanded.free, commanded.no_holder, commanded.wrong_pid);
  EXPECT_EQ(inspected.total(), 0);
  EXPECT_EQ(refused.total(), 0);
  EXPECT_EQ(commanded.total(), 0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.wait(), 0);
}

}  // namespace
}  // namespace pidlock
