// Shared (reader) locks: many readers or one writer, across the library, `pidlock run -s` and
// flock(1) -s, and what messages and status say of them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

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

// Two readers pass the shared lock between them as a relay, for 1.5 s from now: each takes it,
// tells the other, and lets go only once the other says it holds it too, so that no instant passes
// without a reader (no timing involved). Readers that defer to writers queue behind a waiting
// writer and so can never say "I hold it": their partner waits 30 ms for the word, then lets go
// anyway. The writer asks once they hold. Returns how long before (negative) or after the readers
// stopped the writer was granted, having printed the figures.
double writer_against_overlapping_readers(bool defer) {
  using namespace std::chrono;
  TempDir dir;
  const auto readers_stop = steady_clock::now() + milliseconds(1500);
  std::array<int, 2> a_to_b{};
  std::array<int, 2> b_to_a{};
  EXPECT_EQ(::pipe(a_to_b.data()), 0);
  EXPECT_EQ(::pipe(b_to_a.data()), 0);
  // Reads the partner's word "I hold it"; false at end of file (the partner stopped).
  auto partner_holds = [defer](int from) {
    pollfd readable{from, POLLIN, 0};
    if (::poll(&readable, 1, defer ? 30 : -1) != 1) return true;  // deferring: let go anyway
    char word = 0;
    return ::read(from, &word, 1) == 1;
  };
  auto relay_runner = [&](bool starts, int from, int to, int unused_read, int unused_write) {
    return Child::fork([&, starts, from, to, unused_read, unused_write] {
      ::close(unused_read);
      ::close(unused_write);
      ::signal(SIGPIPE, SIG_IGN);  // the partner may have stopped already: nobody to tell
      Options options = reader();
      options.wait = wait_forever;
      options.defer_to_writers = defer;
      std::optional<Lock> held;
      auto take = [&] {
        auto lock = Lock::acquire(dir / "l", options);
        if (!lock) return false;
        held = std::move(*lock);
        [[maybe_unused]] auto told = ::write(to, "h", 1);
        return true;
      };
      if (starts && !take()) return 1;
      while (partner_holds(from)) {
        if (held) held->release();
        held.reset();
        if (steady_clock::now() >= readers_stop) return 0;
        if (!take()) return 1;
      }
      return 0;  // the partner stopped; let go (by exiting) too
    });
  };
  Child a = relay_runner(true, b_to_a[0], a_to_b[1], a_to_b[0], b_to_a[1]);
  Child b = relay_runner(false, a_to_b[0], b_to_a[1], b_to_a[0], a_to_b[1]);
  for (int fd : {a_to_b[0], a_to_b[1], b_to_a[0], b_to_a[1]}) ::close(fd);
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

// --- deferring readers defer to writers that really wait --------------------------------------

std::size_t waiter_count(const std::filesystem::path& path) {
  auto status = inspect(path);
  return status ? status->waiters.size() : 0;
}

// A writer gives up (its -w runs out) while a deferring reader queues behind it and a plain
// reader holds the lock: the deferring reader must not wait on for a writer that is gone.
TEST(Shared, ADeferringReaderGetsTheLockAsSoonAsTheWriterItDeferredToGivesUp) {
  using namespace std::chrono;
  TempDir dir;
  const std::string file = (dir / "l").string();
  Child plain = holder(dir / "l", reader());
  ASSERT_EQ(plain.read_line(), "in");
  Child writer = Child::spawn({pidlock_binary(), "run", "-w", "3", file, "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Child deferring = Child::spawn({pidlock_binary(), "run", "-s", "--defer-to-writers", "-w", "20",
                                  file, "sh", "-c", "echo in; read _ || :"});
  ASSERT_TRUE(test::eventually([&] { return waiter_count(dir / "l") == 2; }))
      << "the deferring reader queues behind the writer";
  EXPECT_EQ(writer.wait(), 75) << "the writer gives up after 3 s";
  const auto gave_up = steady_clock::now();
  EXPECT_EQ(deferring.read_line(seconds(5)), "in");
  const double after = duration<double>(steady_clock::now() - gave_up).count();
  std::printf("the deferring reader held the lock %.3f s after the writer gave up\n", after);
  EXPECT_LT(after, 1.0);
  deferring.close_stdin();
  EXPECT_EQ(deferring.wait(), 0);
  plain.close_stdin();
  EXPECT_EQ(plain.wait(), 0);
}

// ... and a second deferring reader must not take the first one's queued wait for a writer.
TEST(Shared, ASecondDeferringReaderIsNotHeldBackByTheFirstOnesWait) {
  TempDir dir;
  const std::string file = (dir / "l").string();
  Child plain = holder(dir / "l", reader());
  ASSERT_EQ(plain.read_line(), "in");
  Child writer = Child::spawn({pidlock_binary(), "run", "-w", "3", file, "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Child first = Child::spawn({pidlock_binary(), "run", "-s", "--defer-to-writers", "-w", "20", file,
                              "sh", "-c", "echo in; read _ || :"});
  ASSERT_TRUE(test::eventually([&] { return waiter_count(dir / "l") == 2; }));
  EXPECT_EQ(writer.wait(), 75);
  const auto second =
      run({pidlock_binary(), "run", "-s", "--defer-to-writers", "-n", file, "true"});
  EXPECT_EQ(second.code, 0) << second.err;
  first.close_stdin();
  first.wait();
  plain.close_stdin();
  EXPECT_EQ(plain.wait(), 0);
}

// A deferring reader's queued wait names itself pidlock-defer (pidlock(1), --defer-to-writers):
// whatever waits under that name is no writer. flock(1) run under that name (its comm is the name
// it was run by) and blocked for the exclusive lock stands in for one here, queued with no writer
// ahead of it.
TEST(Shared, AQueuedDeferringReaderIsNoWriterToDeferTo) {
  TempDir dir;
  Child plain = holder(dir / "l", reader());
  ASSERT_EQ(plain.read_line(), "in");
  const auto flock_path = run({"sh", "-c", "command -v flock"}).out;
  ASSERT_FALSE(flock_path.empty());
  std::filesystem::create_symlink(flock_path.substr(0, flock_path.find('\n')),
                                  dir / "pidlock-defer");
  Child queued = Child::spawn({(dir / "pidlock-defer").string(), (dir / "l").string(), "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Options deferring = reader();
  deferring.defer_to_writers = true;
  auto lock = Lock::acquire(dir / "l", deferring);
  EXPECT_TRUE(lock) << lock.error().message();
  if (lock) lock->release();
  plain.close_stdin();
  EXPECT_EQ(plain.wait(), 0);
  EXPECT_EQ(queued.wait(), 0);
}

// The writer named is the process that waits, not the helper its timed wait blocks in.
TEST(Shared, ADeferringReaderNamesTheWaitingWriterNotItsHelper) {
  TempDir dir;
  Child plain = holder(dir / "l", reader());
  ASSERT_EQ(plain.read_line(), "in");
  Child writer = Child::spawn({pidlock_binary(), "run", "-w", "20", (dir / "l").string(), "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  Options deferring = reader();
  deferring.defer_to_writers = true;
  auto refused = Lock::acquire(dir / "l", deferring);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message().rfind(
                "a writer waits for the lock (pid " + std::to_string(writer.pid()) + ")", 0),
            0u)
      << refused.error().message();
  plain.close_stdin();
  EXPECT_EQ(plain.wait(), 0);
  EXPECT_EQ(writer.wait(), 0);
}

// --- readers need no write access ---------------------------------------------------------------

// In a child: a private mount namespace (it, and every mount in it, ends with the child), a tmpfs
// on `dir` holding `file` with `content`, remounted read-only. False, having said why, if not.
bool read_only_tmpfs_holding(const std::filesystem::path& dir, const std::string& file,
                             const std::string& content) {
  if (::unshare(CLONE_NEWNS) != 0 ||
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") != 0) {
    std::printf("cannot mount a private tmpfs: %s\n", std::strerror(errno));
    return false;
  }
  test::write_text(dir / file, content);
  if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
              nullptr) != 0) {
    std::printf("cannot remount it read-only: %s\n", std::strerror(errno));
    return false;
  }
  return true;
}

// `pidlock run -s FILE` whose command asks flock(1) for the exclusive and the shared lock: a
// reader holds it when the first is refused (1) and the second granted (0).
std::vector<std::string> reader_run(const std::string& file) {
  return {pidlock_binary(),
          "run",
          "-s",
          file,
          "sh",
          "-c",
          "flock -n \"$0\" true; x=$?; flock -s -n \"$0\" true; echo \"$x $?\"",
          file};
}

TEST(SharedCli, AReaderNeedsNoWriteAccessOnAReadOnlyMount) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir dir;
  Child child = Child::fork([&] {
    if (!read_only_tmpfs_holding(dir.path(), "l", "4242\n")) return 2;
    const auto r = run(reader_run((dir / "l").string()));
    std::printf("%d %s %s|\n", r.code, r.out.substr(0, r.out.find('\n')).c_str(), r.err.c_str());
    return test::read_text(dir / "l") == "4242\n" ? 0 : 3;
  });
  EXPECT_EQ(child.read_line(), "0 1 0 |") << "exit, flock -x, flock -s: held shared, silently";
  EXPECT_EQ(child.wait(), 0);
}

TEST(SharedCli, AReaderNeedsNoWriteAccessAsAUserWhoMayOnlyRead) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  test::write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0644);  // root's; nobody may read it, not write it
  std::vector<std::string> argv{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  const auto as_reader = reader_run((dir / "l").string());
  argv.insert(argv.end(), as_reader.begin(), as_reader.end());
  const auto r = run(argv);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1 0\n");
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(test::read_text(dir / "l"), "4242\n");
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
