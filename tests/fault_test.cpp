// Faults: each gives a clear error naming the operation and the path, is never reported as
// "busy", and changes nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::TempDir;

// A tmpfs of its own, in a mount namespace of this test process's own, so that no mount can
// outlive the test even if it crashes.
class Tmpfs {
 public:
  explicit Tmpfs(const std::string& options) {
    if (::geteuid() != 0) return;
    if (!private_namespace()) return;
    mounted_ =
        ::mount("tmpfs", dir_.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  bool mounted() const { return mounted_; }
  std::filesystem::path operator/(const std::string& name) const { return dir_ / name; }
  bool make_read_only() {
    return ::mount(nullptr, dir_.path().c_str(), nullptr,
                   MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) == 0;
  }

 private:
  static bool private_namespace() {
    static const bool ok = ::unshare(CLONE_NEWNS) == 0 &&
                           ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
    return ok;
  }
  TempDir dir_;
  bool mounted_ = false;
};

#define REQUIRE_TMPFS(fs) \
  if (!(fs).mounted()) GTEST_SKIP() << "needs root and mount namespaces to mount a tmpfs"

void expect_clean_failure(const std::expected<Lock, Error>& lock, ErrorKind kind,
                          const std::string& operation, const std::filesystem::path& path,
                          int error) {
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(to_string(lock.error().kind()), to_string(kind));
  EXPECT_EQ(lock.error().operation(), operation);
  EXPECT_EQ(lock.error().code().value(), error) << lock.error().message();
  EXPECT_EQ(lock.error().message(), "pidlock: " + operation + " " + path.string() + ": " +
                                        std::error_code(error, std::system_category()).message());
}

// An existing file on a read-only filesystem is locked as flock(1) locks it, through a read-only
// descriptor, and nothing is written (the record cannot be): see NoWriteAccess.* for the rest.
TEST(Fault, ReadOnlyFilesystemWithAnExistingFile) {
  Tmpfs fs("size=64k");
  REQUIRE_TMPFS(fs);
  test::write_text(fs / "l", "4242\n");
  ASSERT_TRUE(fs.make_read_only());
  auto lock = Lock::acquire(fs / "l");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(lock->record(), RecordOutcome::no_write_access);
  lock->release();
  EXPECT_EQ(test::read_text(fs / "l"), "4242\n");
  const auto cli = test::run({test::pidlock_binary(), "run", (fs / "l").string(), "--", "true"});
  EXPECT_EQ(cli.code, 0) << cli.err;
  EXPECT_EQ(test::read_text(fs / "l"), "4242\n");
}

TEST(Fault, ReadOnlyFilesystemWithoutTheFile) {
  Tmpfs fs("size=64k");
  REQUIRE_TMPFS(fs);
  ASSERT_TRUE(fs.make_read_only());
  expect_clean_failure(Lock::acquire(fs / "l"), ErrorKind::cannot_open, "open", fs / "l", EROFS);
  EXPECT_FALSE(std::filesystem::exists(fs / "l"));
  // Parents that would have to be created fail the same way, naming the directory.
  auto nested = Lock::acquire(fs / "a" / "b" / "l");
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().message(),
            "pidlock: mkdir " + (fs / "a").string() + ": Read-only file system");
}

TEST(Fault, FullFilesystemWhileWritingTheRecord) {
  Tmpfs fs("size=4k");  // one page
  REQUIRE_TMPFS(fs);
  test::write_text(fs / "l", "");
  test::write_text(fs / "filler", std::string(4096, 'x'));
  expect_clean_failure(Lock::acquire(fs / "l"), ErrorKind::io, "write", fs / "l", ENOSPC);
  EXPECT_EQ(test::read_text(fs / "l"), "");
  EXPECT_TRUE(test::run({"flock", "-n", (fs / "l").string(), "true"}).code ==
              0);  // not left locked
  const auto cli = test::run({test::pidlock_binary(), "run", (fs / "l").string(), "--", "true"});
  EXPECT_EQ(cli.code, 74);
  EXPECT_EQ(cli.err, "pidlock: write " + (fs / "l").string() + ": No space left on device\n");
}

// Runs `body` as the unprivileged user nobody, in a child; returns what it printed.
std::string as_nobody(const std::function<std::string()>& body) {
  Child child = Child::fork([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    std::printf("%s\n", body().c_str());
    return 0;
  });
  std::string line = child.read_line();
  EXPECT_EQ(child.wait(), 0);
  return line;
}

#define REQUIRE_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user"

std::string acquire_message(const std::filesystem::path& path) {
  auto lock = Lock::acquire(path);
  if (lock) return "acquired";
  return (lock.error().held() ? "held: " : "") + lock.error().message();
}

TEST(Fault, ParentNotSearchable) {
  REQUIRE_ROOT();
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  std::filesystem::create_directory(dir / "closed");
  ::chmod((dir / "closed").c_str(), 0700);
  const auto path = dir.path() / "closed" / "l";
  EXPECT_EQ(as_nobody([&] { return acquire_message(path); }),
            "pidlock: open " + path.string() + ": Permission denied");
  EXPECT_FALSE(std::filesystem::exists(path));
}

// Neither writable nor readable by nobody. (A file nobody may read but not write is locked as
// flock(1) locks it, without a record: NoWriteAccess.*.)
TEST(Fault, LockFileNotWritable) {
  REQUIRE_ROOT();
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  test::write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0600);
  EXPECT_EQ(as_nobody([&] { return acquire_message(dir / "l"); }),
            "pidlock: open " + (dir / "l").string() + ": Permission denied");
  EXPECT_EQ(test::read_text(dir / "l"), "4242\n");
  const std::string code = as_nobody([&] {
    return std::to_string(
        test::run({test::pidlock_binary(), "run", (dir / "l").string(), "--", "true"}).code);
  });
  EXPECT_EQ(code, "77");
}

TEST(Fault, ParentIsAFileForTheCommand) {
  TempDir dir;
  test::write_text(dir / "file", "x");
  const auto cli = test::run(
      {test::pidlock_binary(), "run", (dir.path() / "file" / "l").string(), "--", "true"});
  EXPECT_EQ(cli.code, 73);
  EXPECT_EQ(cli.err,
            "pidlock: open " + (dir.path() / "file" / "l").string() + ": Not a directory\n");
}

}  // namespace
}  // namespace pidlock
