// The kernel-interface refusal with its fstatfs asked once per mount: a mount found to be storage
// is remembered by its unique ID, a kernel interface never is, and neither answer can pass from
// one mount to another.
#include "lock_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
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

// Runs `argv` with fstatfs(2) failing with EIO (a seccomp filter), in a fresh process: nothing of
// this one's remembered mounts can spare it the question.
test::Result run_where_fstatfs_fails(const std::vector<std::string>& argv) {
  test::Child child = test::Child::fork([&] {
    sock_filter filter[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(seccomp_data, nr)},
        {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, SYS_fstatfs},
        {BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | EIO},
        {BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW},
    };
    const sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      std::perror("seccomp");
      return 125;
    }
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror(args[0]);
    return 127;
  });
  child.close_stdin();
  test::Result result;
  result.code = child.wait();
  result.out = child.drain_stdout();
  result.err = child.drain_stderr();
  return result;
}

// Where the filesystem cannot be asked whether it is a kernel interface, nothing is written and
// no directory made: the question fails closed, naming the call, the path and the errno.
TEST(LockFile, AFailingFstatfsWritesNothingAndMakesNoDirectory) {
  const std::filesystem::path shm = "/dev/shm";  // tmpfs: an anonymous device, so it is asked
  if (!std::filesystem::is_directory(shm)) GTEST_SKIP() << "needs /dev/shm";
  const auto dir = shm / ("pidlock-test-fstatfs-" + std::to_string(::getpid()));
  std::filesystem::create_directory(dir);
  const auto file = dir / "l";
  const auto r = run_where_fstatfs_fails({test::pidlock_binary(), "run", file.string(), "true"});
  EXPECT_EQ(r.code, 74) << r.err;
  EXPECT_EQ(r.err, "pidlock: fstatfs " + file.string() + ": Input/output error\n");
  EXPECT_EQ(test::read_text(file), "") << "the record was written";
  const auto nested = dir / "a" / "l";
  const auto made =
      run_where_fstatfs_fails({test::pidlock_binary(), "run", nested.string(), "true"});
  EXPECT_EQ(made.code, 74) << made.err;
  EXPECT_EQ(made.err, "pidlock: fstatfs " + dir.string() + ": Input/output error\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pidlock
