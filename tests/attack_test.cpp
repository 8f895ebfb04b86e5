// Attacks: another user, who may write to the lock file's directory, swaps the lock path for a
// symlink (and back) in a tight loop while we acquire and release over and over. No write may
// ever land outside the lock file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::TempDir;

TEST(Attack, SymlinkSwapLoopNeverRedirectsAWrite) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  std::filesystem::create_directory(dir / "victim");  // root's, not writable by the attacker
  std::filesystem::create_directory(dir / "shared");  // writable by everyone, not sticky
  ::chmod((dir / "shared").c_str(), 0777);
  const auto precious = dir.path() / "victim" / "precious";
  test::write_text(precious, "precious\n");
  ::chmod(precious.c_str(),
          0666);  // even a file the attacker could write must not be written by us
  struct stat before {};
  ::stat(precious.c_str(), &before);
  const auto lock_path = dir.path() / "shared" / "installer.lock";

  // The attacker, as nobody: renames a symlink to the precious file, then a regular file of its
  // own, over the lock path, as fast as it can; atomically, so every state is one or the other.
  Child attacker = Child::fork([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    const auto link = dir.path() / "shared" / ".link";
    const auto file = dir.path() / "shared" / ".file";
    std::printf("ready\n");
    std::fflush(stdout);
    for (unsigned long i = 0;; ++i) {
      ::unlink(link.c_str());
      ::symlink(precious.c_str(), link.c_str());
      ::rename(link.c_str(), lock_path.c_str());
      const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
      if (fd >= 0) ::close(fd);
      ::rename(file.c_str(), lock_path.c_str());
      if ((i & 1023) == 0 && ::getppid() == 1) return 0;
    }
  });
  ASSERT_EQ(attacker.read_line(), "ready");

  int acquired = 0;
  int refused = 0;
  int other = 0;
  std::string unexpected;
  const auto end = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < end) {
    Options options;
    options.create_parents = false;
    auto lock = Lock::acquire(lock_path, options);
    if (lock) {
      ++acquired;
    } else if (lock.error().code().value() == ELOOP || lock.error().code().value() == ENOENT ||
               lock.error().code().value() == EAGAIN) {
      ++refused;  // a symlink at the path, the path gone for an instant, or replaced each time
    } else {
      ++other;
      unexpected = lock.error().message();
    }
  }
  attacker.signal(SIGKILL);
  attacker.wait();

  struct stat after {};
  ::stat(precious.c_str(), &after);
  EXPECT_EQ(test::read_text(precious), "precious\n");
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_EQ(other, 0) << unexpected;
  EXPECT_GT(refused, 0);  // the attack really raced us
  std::printf("attack: %d acquires, %d refused, 0 writes outside the lock file\n", acquired,
              refused);
  RecordProperty("acquires", acquired);
  RecordProperty("refused", refused);
}

TEST(Attack, FileReplacedAfterLockingIsNotTrusted) {
  // Someone renames a new file over the path while we hold a lock on the old one: the next
  // acquire must lock the file the path names now, not be satisfied by the orphan.
  TempDir dir;
  auto first = Lock::acquire(dir / "l");
  ASSERT_TRUE(first);
  test::write_text(dir / "new", "");
  std::filesystem::rename(dir / "new", dir / "l");
  auto second = Lock::acquire(dir / "l");
  ASSERT_TRUE(second) << second.error().message();  // the path's file is a new, unlocked one
  EXPECT_EQ(test::read_text(dir / "l"), std::to_string(::getpid()) + "\n");
}

TEST(Attack, StatusWarnsAboutADirectoryOthersMayWrite) {
  TempDir dir;
  std::filesystem::create_directory(dir / "shared");
  ::chmod((dir / "shared").c_str(), 01777);
  const auto r =
      test::run({test::pidlock_binary(), "status", (dir.path() / "shared" / "l").string()});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(
      r.out.find("warning: the directory " + (dir / "shared").string() + " is writable by others"),
      std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace pidlock
