// The seed package's own test list (../shared/seed/seed-tests.md), case by case and under its
// names: each is part of pidlock's contract. Everything runs in this one process, as the seed's
// tests do; no helper process is started.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "pidlock/pidlock.hpp"
#include "record.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::read_text;
using test::TempDir;
using test::write_text;

const std::string own_pid = std::to_string(::getpid());

std::string trimmed(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Seed, FirstAcquireSucceeds) {
  TempDir dir;
  const auto path = dir / "installer.lock";
  auto lock = Lock::acquire(path);
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(lock->path(), path);
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST(Seed, LockFileContainsCurrentPID) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(lock) << lock.error().message();
  const std::string content = read_text(dir / "installer.lock");
  EXPECT_EQ(trimmed(content), own_pid);
  EXPECT_EQ(content, own_pid + "\n");
}

TEST(Seed, SecondAcquireFailsWhileFirstHeld) {
  TempDir dir;
  auto first = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(first) << first.error().message();
  auto second = Lock::acquire(dir / "installer.lock");
  ASSERT_FALSE(second) << "a second lock was returned";
  const std::string& message = second.error().message();
  EXPECT_TRUE(contains(message, own_pid)) << message;
  EXPECT_TRUE(contains(message, "another installer is running")) << message;
}

TEST(Seed, StalePIDIsReclaimable) {
  TempDir dir;
  write_text(dir / "installer.lock", "99999\n");
  auto lock = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(trimmed(read_text(dir / "installer.lock")), own_pid);
}

TEST(Seed, StalePIDWithInvalidContent) {
  for (const std::string content : {"", "  \n  ", "not-a-pid\n", "-1\n", "0\n"}) {
    TempDir dir;
    write_text(dir / "installer.lock", content);
    auto lock = Lock::acquire(dir / "installer.lock");
    ASSERT_TRUE(lock) << "content '" << content << "': " << lock.error().message();
    EXPECT_EQ(trimmed(read_text(dir / "installer.lock")), own_pid) << "content '" << content << "'";
  }
}

TEST(Seed, AfterAcquireAllowsReacquire) {
  TempDir dir;
  auto first = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_FALSE(first->release());
  auto again = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(trimmed(read_text(dir / "installer.lock")), own_pid);
}

TEST(Seed, NilLockIsSafe) {
  Lock never_acquired;
  EXPECT_FALSE(never_acquired.release());
}

TEST(Seed, DoubleReleaseIsSafe) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(lock->release());
}

TEST(Seed, CreatesParentDirectory) {
  TempDir dir;
  const auto path = dir.path() / "fresh-install" / "state" / "installer.lock";
  auto lock = Lock::acquire(path);
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "fresh-install" / "state"));
  EXPECT_TRUE(std::filesystem::exists(path));
}

// The seed's readLockPID is pidlock's record parser.
TEST(Seed, ReadLockPID_EdgeCases) {
  for (const std::string accepted : {"1234\n", "1234", "  1234  \n"}) {
    EXPECT_EQ(record::parse(accepted), 1234) << "'" << accepted << "'";
  }
  for (const std::string rejected : {"", "  \n", "abc", "-1", "0"}) {
    EXPECT_EQ(record::parse(rejected), std::nullopt) << "'" << rejected << "'";
  }
}

TEST(Seed, SecondAcquireFailsOnUnreadablePIDFile) {
  TempDir dir;
  auto first = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(first) << first.error().message();
  std::filesystem::resize_file(dir / "installer.lock", 0);
  auto second = Lock::acquire(dir / "installer.lock");
  ASSERT_FALSE(second) << "a second lock was returned";
  const std::string& message = second.error().message();
  EXPECT_TRUE(contains(message, "recorded pid unreadable") ||
              contains(message, "another installer is running"))
      << message;
}

}  // namespace
}  // namespace pidlock
