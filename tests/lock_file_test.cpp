// The kernel-interface refusal with its fstatfs asked once per mount: a mount found to be storage
// is remembered by its unique ID, a kernel interface never is, and neither answer can pass from
// one mount to another.
#include "lock_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "pidlock/pidlock.hpp"
#include "support.hpp"
#include "sys.hpp"

namespace pidlock {
namespace {

using test::TempDir;

lock_file::Description described(const std::filesystem::path& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd) << path;
  lock_file::Description file;
  EXPECT_EQ(lock_file::describe(fd.get(), file), 0) << path;
  return file;
}

TEST(LockFile, DescribeAgreesWithFstat) {
  TempDir dir;
  test::write_text(dir / "l", "12345\n");
  const auto file = described(dir / "l");
  struct stat st {};
  ASSERT_EQ(::stat((dir / "l").c_str(), &st), 0);
  EXPECT_EQ(file.st.st_dev, st.st_dev);
  EXPECT_EQ(file.st.st_ino, st.st_ino);
  EXPECT_EQ(file.st.st_mode, st.st_mode);
  EXPECT_EQ(file.st.st_size, st.st_size);
  EXPECT_EQ(file.st.st_uid, st.st_uid);
  EXPECT_EQ(file.st.st_mtim.tv_sec, st.st_mtim.tv_sec);
  EXPECT_EQ(file.st.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
}

TEST(LockFile, AStorageMountIsAskedOnceAndAKernelInterfaceEveryTime) {
  const std::filesystem::path shm = "/dev/shm";
  const std::filesystem::path proc_file = "/proc/sys/kernel/pid_max";
  if (!std::filesystem::exists(shm) || !std::filesystem::exists(proc_file)) {
    GTEST_SKIP() << "needs /dev/shm and /proc";
  }
  if (::geteuid() != 0) GTEST_SKIP() << "only root may open a /proc/sys file for writing";
  const auto lock_path = shm / ("pidlock-test-lock-file-" + std::to_string(::getpid()));
  {
    auto lock = Lock::acquire(lock_path);  // tmpfs: asked, found storage, remembered
    ASSERT_TRUE(lock) << lock.error().message();
  }
  const auto on_tmpfs = described(lock_path);
  const auto on_proc = described(proc_file);
  std::filesystem::remove(lock_path);
  if (on_tmpfs.mount_id == 0) GTEST_SKIP() << "this kernel names no mount uniquely (before 6.8)";
  EXPECT_FALSE(lock_file::needs_filesystem_check(on_tmpfs));
  ASSERT_NE(on_proc.mount_id, 0u);
  EXPECT_NE(on_proc.mount_id, on_tmpfs.mount_id);
  // Refused, and refused again: a kernel interface is never remembered as storage.
  const std::string before = test::read_text(proc_file);
  for (int attempt = 0; attempt < 2; ++attempt) {
    EXPECT_TRUE(lock_file::needs_filesystem_check(on_proc));
    auto refused = Lock::acquire(proc_file);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("a kernel interface"), std::string::npos)
        << refused.error().message();
  }
  EXPECT_EQ(test::read_text(proc_file), before);
}

}  // namespace
}  // namespace pidlock
