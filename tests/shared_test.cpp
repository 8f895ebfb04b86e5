// Shared (reader) locks: many readers or one writer, across the library, `pidlock run -s` and
// flock(1) -s, and what messages and status say of them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::pidlock_binary;
using test::run;
using test::TempDir;
using json = nlohmann::json;

Options reader() {
  Options options;
  options.shared = true;
  return options;
}

// Later forks inherit the write ends of earlier ones' stdin pipes: let go of them last first.
void release_all(std::vector<Child>& children) {
  for (auto it = children.rbegin(); it != children.rend(); ++it) {
    it->close_stdin();
    EXPECT_EQ(it->wait(), 0);
  }
}

// A forked process that takes the lock (shared or not), says "in" once it holds it and keeps it
// until its stdin closes; it prints the error instead when refused.
Child holder(const std::filesystem::path& path, const Options& options) {
  return Child::fork([path, options] {
    auto lock = Lock::acquire(path, options);
    std::printf("%s\n", lock ? "in" : lock.error().message().c_str());
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return lock ? 0 : 1;
  });
}

TEST(Shared, ReadersHoldTheLockAllAtOnce) {
  TempDir dir;
  constexpr int readers = 6;
  std::vector<Child> held;
  // Each says "in" while it holds; none lets go before all have said it.
  for (int i = 0; i < readers; ++i) held.push_back(holder(dir / "l", reader()));
  for (auto& child : held) EXPECT_EQ(child.read_line(), "in");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->held);
  EXPECT_TRUE(status->shared);
  EXPECT_EQ(status->readers, static_cast<std::size_t>(readers));
  EXPECT_EQ(status->holders.size(), static_cast<std::size_t>(readers));
  for (const auto& h : status->holders) EXPECT_TRUE(h.shared);
  release_all(held);
}

TEST(Shared, AReaderWritesNoRecord) {
  TempDir dir;
  {
    auto writer = Lock::acquire(dir / "l");
    ASSERT_TRUE(writer);
  }
  const std::string record = test::read_text(dir / "l");
  auto lock = Lock::acquire(dir / "l", reader());
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(test::read_text(dir / "l"), record);
}

TEST(Shared, AWriterExcludesReadersAndIsNamedWithTheSeedsPhrase) {
  TempDir dir;
  Child writer = holder(dir / "l", {});
  ASSERT_EQ(writer.read_line(), "in");
  auto lock = Lock::acquire(dir / "l", reader());
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held());
  EXPECT_EQ(lock.error().message().rfind(
                "another installer is running (pid " + std::to_string(writer.pid()), 0),
            0u)
      << lock.error().message();
  writer.close_stdin();
  EXPECT_EQ(writer.wait(), 0);
}

TEST(Shared, ReadersExcludeAWriterWhichNamesThemAndCountsTheRest) {
  TempDir dir;
  std::vector<Child> held;
  for (int i = 0; i < 3; ++i) held.push_back(holder(dir / "l", reader()));
  for (auto& child : held) ASSERT_EQ(child.read_line(), "in");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_TRUE(lock.error().held());
  const std::string& message = lock.error().message();
  EXPECT_EQ(message.rfind("3 readers hold the lock (pid ", 0), 0u) << message;
  EXPECT_NE(message.find(", and 2 more) — lock file: " + (dir / "l").string()), std::string::npos)
      << message;
  ASSERT_TRUE(lock.error().holder());
  EXPECT_TRUE(lock.error().holder()->shared);
  release_all(held);
}

TEST(Shared, OneReaderIsSaidToBeOne) {
  TempDir dir;
  Child one = holder(dir / "l", reader());
  ASSERT_EQ(one.read_line(), "in");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_EQ(
      lock.error().message().rfind("a reader holds the lock (pid " + std::to_string(one.pid()), 0),
      0u)
      << lock.error().message();
  one.close_stdin();
  EXPECT_EQ(one.wait(), 0);
}

TEST(Shared, AWaitingWriterGetsTheLockWhenTheLastReaderLeaves) {
  TempDir dir;
  Child first = holder(dir / "l", reader());
  ASSERT_EQ(first.read_line(), "in");
  // Spawned, not forked, so that it holds no copy of the reader's stdin.
  Child writer = Child::spawn({pidlock_binary(), "run", "-w", "20", (dir / "l").string(), "sh",
                               "-c", "echo in; read _ || :"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->waiters.size(), 1u);
  EXPECT_FALSE(status->waiters[0].shared) << "it waits for the exclusive lock";
  first.close_stdin();
  EXPECT_EQ(first.wait(), 0);
  EXPECT_EQ(writer.read_line(), "in");
  writer.close_stdin();
  EXPECT_EQ(writer.wait(), 0);
}

// flock(2) grants a shared lock whenever no exclusive one is *held*: a writer that waits does not
// hold new readers back. Two readers whose holds overlap (each 30 ms, the second 15 ms behind)
// keep a waiting writer out for as long as they go on; it gets the lock the moment they stop.
// This is the kernel's behaviour, documented in docs/guarantees.md with the figures printed here.
// Readers that each hold 30 ms, the second 15 ms behind the first, for 1.5 s from now; the
// writer asks once they hold. Returns how long before (negative) or after the readers stopped
// the writer was granted, having printed the figures.
double writer_against_overlapping_readers(bool defer) {
  using namespace std::chrono;
  TempDir dir;
  const auto readers_stop = steady_clock::now() + milliseconds(1500);
  auto reader_loop = [&](milliseconds offset) {
    return Child::fork([&, offset] {
      ::usleep(static_cast<useconds_t>(duration_cast<microseconds>(offset).count()));
      Options options = reader();
      options.wait = wait_forever;
      options.defer_to_writers = defer;
      while (steady_clock::now() < readers_stop) {
        auto lock = Lock::acquire(dir / "l", options);
        if (!lock) return 1;
        ::usleep(30000);  // the reader's work
      }
      return 0;
    });
  };
  Child a = reader_loop(milliseconds(0));
  Child b = reader_loop(milliseconds(15));
  EXPECT_TRUE(test::eventually([&] {
    auto st = inspect(dir / "l");
    return st && st->held && st->shared;
  }));
  const auto asked = steady_clock::now();
  Options writer;
  writer.wait = seconds(20);
  auto lock = Lock::acquire(dir / "l", writer);
  const auto granted = steady_clock::now();
  EXPECT_TRUE(lock) << lock.error().message();
  const double waited = duration<double>(granted - asked).count();
  const double after_readers = duration<double>(granted - readers_stop).count();
  std::printf("%s readers: the writer waited %.3f s; granted %.3f s %s they stopped\n",
              defer ? "deferring" : "plain", waited, std::abs(after_readers),
              after_readers < 0 ? "before" : "after");
  if (lock) lock->release();
  EXPECT_EQ(a.wait(), 0);
  EXPECT_EQ(b.wait(), 0);
  return after_readers;
}

// flock(2) grants a shared lock whenever no exclusive one is *held*: a writer that waits does not
// hold new readers back, and overlapping readers keep it out for as long as they go on. It gets
// the lock the moment they stop. The kernel's behaviour, documented with the figures printed.
TEST(Shared, AWriterWaitsWhileReadersOverlapAndGetsTheLockWhenTheyStop) {
  const double after_readers = writer_against_overlapping_readers(false);
  EXPECT_GT(after_readers, -0.1) << "granted while readers still overlapped";
  EXPECT_LT(after_readers, 1.0);
}

// The remedy: readers that defer to writers queue behind a waiting writer, which then gets the
// lock while they go on.
TEST(Shared, ReadersThatDeferLetAWaitingWriterInWhileTheyGoOn) {
  const double after_readers = writer_against_overlapping_readers(true);
  EXPECT_LT(after_readers, -0.5) << "the writer still waited for the readers to stop";
}

TEST(Shared, ADeferringReaderThatMayNotWaitIsRefusedWhileAWriterWaits) {
  TempDir dir;
  Child first = holder(dir / "l", reader());
  ASSERT_EQ(first.read_line(), "in");
  Child writer = Child::spawn({pidlock_binary(), "run", "-w", "20", (dir / "l").string(), "sh",
                               "-c", "echo in; read _ || :"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Options deferring = reader();
  deferring.defer_to_writers = true;
  auto refused = Lock::acquire(dir / "l", deferring);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().held());
  EXPECT_EQ(refused.error().message().rfind("a writer waits for the lock (pid ", 0), 0u)
      << refused.error().message();
  auto plain = Lock::acquire(dir / "l", reader());
  EXPECT_TRUE(plain) << "a reader that does not defer still gets in, as with flock -s";
  plain->release();
  first.close_stdin();
  EXPECT_EQ(first.wait(), 0);
  EXPECT_EQ(writer.read_line(), "in");
  writer.close_stdin();
  EXPECT_EQ(writer.wait(), 0);
}

// --- the command, and flock(1) both ways -------------------------------------------------------

Child run_holding(const std::filesystem::path& path, std::vector<std::string> options) {
  std::vector<std::string> argv{pidlock_binary(), "run"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {path.string(), "sh", "-c", "echo in; read _ || :"});
  return Child::spawn(argv);
}

TEST(SharedCli, PidlockReadersAndFlockReadersShareAndExcludeWritersBothWays) {
  TempDir dir;
  const std::string file = (dir / "l").string();
  Child pidlock_reader = run_holding(dir / "l", {"-s"});
  ASSERT_EQ(pidlock_reader.read_line(), "in");
  Child flock_reader = Child::spawn({"flock", "-s", file, "sh", "-c", "echo in; read _ || :"});
  ASSERT_EQ(flock_reader.read_line(), "in") << "flock -s shares with pidlock -s";
  EXPECT_EQ(run({"flock", "-s", "-n", file, "true"}).code, 0);
  EXPECT_EQ(run({pidlock_binary(), "run", "--shared", file, "true"}).code, 0);
  EXPECT_EQ(run({"flock", "-n", file, "true"}).code, 1) << "a flock writer is refused";
  const auto writer = run({pidlock_binary(), "run", file, "true"});
  EXPECT_EQ(writer.code, 75);
  EXPECT_EQ(writer.err.rfind("2 readers hold the lock (pid ", 0), 0u) << writer.err;

  const auto r = run({pidlock_binary(), "status", "--json", file});
  EXPECT_EQ(r.code, 75);
  const json st = json::parse(r.out);
  EXPECT_EQ(st["mode"], "shared");
  EXPECT_EQ(st["readers"], 2);
  for (const auto& h : st["holders"]) EXPECT_EQ(h["mode"], "shared");
  const auto human = run({pidlock_binary(), "status", file});
  EXPECT_NE(human.out.find(": held shared by 2 readers: pid "), std::string::npos) << human.out;

  pidlock_reader.close_stdin();
  flock_reader.close_stdin();
  EXPECT_EQ(pidlock_reader.wait(), 0);
  EXPECT_EQ(flock_reader.wait(), 0);
}

TEST(SharedCli, AFlockWriterExcludesPidlockReadersAndAPidlockWriterExcludesFlockReaders) {
  TempDir dir;
  const std::string file = (dir / "l").string();
  Child flock_writer = Child::spawn({"flock", file, "sh", "-c", "echo in; read _ || :"});
  ASSERT_EQ(flock_writer.read_line(), "in");
  const auto refused = run({pidlock_binary(), "run", "-s", file, "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_EQ(refused.err.rfind(
                "another installer is running (pid " + std::to_string(flock_writer.pid()), 0),
            0u)
      << refused.err;
  flock_writer.close_stdin();
  EXPECT_EQ(flock_writer.wait(), 0);

  Child pidlock_writer = run_holding(dir / "l", {});
  ASSERT_EQ(pidlock_writer.read_line(), "in");
  EXPECT_EQ(run({"flock", "-s", "-n", file, "true"}).code, 1);
  const json st = json::parse(run({pidlock_binary(), "status", "--json", file}).out);
  EXPECT_EQ(st["mode"], "exclusive");
  pidlock_writer.close_stdin();
  EXPECT_EQ(pidlock_writer.wait(), 0);
}

TEST(SharedCli, SharedAndExclusiveTogetherIsAUsageError) {
  TempDir dir;
  EXPECT_EQ(run({pidlock_binary(), "run", "-s", "-x", (dir / "l").string(), "true"}).code, 64);
  EXPECT_EQ(run({pidlock_binary(), "run", "-s", "--etcd", "http://127.0.0.1:1", "n", "true"}).code,
            64);
  EXPECT_EQ(run({pidlock_binary(), "run", "-e", (dir / "l").string(), "true"}).code, 0);
  EXPECT_EQ(run({pidlock_binary(), "run", "--defer-to-writers", (dir / "l").string(), "true"}).code,
            64);
  EXPECT_EQ(
      run({pidlock_binary(), "run", "-s", "--defer-to-writers", (dir / "l").string(), "true"}).code,
      0);
}

}  // namespace
}  // namespace pidlock
