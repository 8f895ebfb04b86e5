// The lock: every case of the seed package's test list, plus what it left out.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::read_text;
using test::run;
using test::TempDir;
using test::write_text;

std::string record_of(pid_t pid) { return std::to_string(pid) + "\n"; }

Child holder_child(const std::filesystem::path& path) { return test::lock_holder(path); }

pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;  // reaped: nobody has it until the PID space wraps
}

// Asked of a real process, util-linux flock(1), as any other locker would ask.
bool someone_holds(const std::filesystem::path& path) {
  const auto probe = test::run({test::flock_binary, "-n", path.string(), "true"});
  EXPECT_TRUE(probe.code == 0 || probe.code == 1) << probe.err;
  return probe.code == 1;
}

TEST(Acquire, FirstAcquireSucceeds) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "installer.lock");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_TRUE(lock->held());
  EXPECT_EQ(lock->path(), dir / "installer.lock");
  EXPECT_TRUE(std::filesystem::is_regular_file(dir / "installer.lock"));
}

TEST(Acquire, DefaultLockFileNameIsInstallerLock) {
  static_assert(default_lock_file == std::string_view("installer.lock"));
  TempDir dir;
  auto lock = Lock::acquire(dir.path() / default_lock_file);
  ASSERT_TRUE(lock);
  EXPECT_EQ(lock->path().filename(), "installer.lock");
}

TEST(Acquire, RecordHoldsOurPidExactly) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

TEST(Acquire, SecondAcquireInTheSameProcessFailsSayingItIsThisProcess) {
  TempDir dir;
  auto first = Lock::acquire(dir / "l");
  ASSERT_TRUE(first);
  auto second = Lock::acquire(dir / "l");
  ASSERT_FALSE(second);
  EXPECT_TRUE(second.error().held());
  ASSERT_TRUE(second.error().holder());
  EXPECT_EQ(second.error().holder()->pid, ::getpid());
  EXPECT_TRUE(second.error().holder()->is_caller);
  // The seed's phrase, as for any holder, and the holder named as this process.
  const std::string expected =
      "another installer is running (pid " + std::to_string(::getpid()) + ", this process";
  EXPECT_EQ(second.error().message().rfind(expected, 0), 0u) << second.error().message();
  EXPECT_NE(second.error().message().find("— lock file: " + (dir / "l").string()),
            std::string::npos);
  EXPECT_EQ(second.error().code(), std::errc::resource_unavailable_try_again);
}

TEST(Acquire, SecondAcquireFromAnotherProcessNamesThatProcess) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  auto second = Lock::acquire(dir / "l");
  ASSERT_FALSE(second);
  ASSERT_TRUE(second.error().held());
  ASSERT_TRUE(second.error().holder());
  EXPECT_EQ(second.error().holder()->pid, holder.pid());
  EXPECT_NE(second.error().message().find("another installer is running (pid " +
                                          std::to_string(holder.pid()) + ", "),
            std::string::npos)
      << second.error().message();
  // The record of a file we could not lock is untouched.
  EXPECT_EQ(read_text(dir / "l"), record_of(holder.pid()));
}

TEST(Acquire, RoleNamesTheKindOfProcess) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  Options options;
  options.role = "updater";
  auto second = Lock::acquire(dir / "l", options);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message().rfind("another updater is running (pid ", 0), 0u);
}

TEST(Acquire, StalePidIsReclaimed) {
  TempDir dir;
  write_text(dir / "l", record_of(dead_pid()));
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

TEST(Acquire, RecordOfALiveProcessThatDoesNotHoldTheLockIsReclaimed) {
  TempDir dir;
  write_text(dir / "l", record_of(1));  // init is alive, and holds nothing here
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

class JunkRecord : public testing::TestWithParam<std::string> {};

TEST_P(JunkRecord, IsReclaimedAndOverwritten) {
  TempDir dir;
  write_text(dir / "l", GetParam());
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

// What a lock file may hold besides a record: nothing, blanks, one word that is no PID, an
// overlong number, and what a crash between writing a record over a longer one and cutting the
// file leaves ("42\n4567\n").
INSTANTIATE_TEST_SUITE_P(Records, JunkRecord,
                         testing::Values("", "   \n\t ", "junk\n", "-42\n", "0\n",
                                         "99999999999999999999999999\n", "42\n4567\n",
                                         "  4194304  \r\n"));

// --- Files that are not lock files: somebody's data, locked as flock(1) locks them. ---

struct FileState {
  std::string content;
  struct timespec mtime;
};

FileState state_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return {read_text(path), st.st_mtim};
}

void expect_untouched(const std::filesystem::path& path, const FileState& before) {
  const auto after = state_of(path);
  EXPECT_EQ(after.content, before.content);
  EXPECT_EQ(after.mtime.tv_sec, before.mtime.tv_sec);
  EXPECT_EQ(after.mtime.tv_nsec, before.mtime.tv_nsec);
}

int access_mode(int fd) { return ::fcntl(fd, F_GETFL) & O_ACCMODE; }

class DataFile : public testing::TestWithParam<std::string> {};

TEST_P(DataFile, IsLockedThroughAReadOnlyDescriptorAndLeftAlone) {
  TempDir dir;
  write_text(dir / "f", GetParam());
  const auto before = state_of(dir / "f");
  auto lock = Lock::acquire(dir / "f");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(lock->record(), RecordOutcome::not_a_lock_file);
  EXPECT_EQ(access_mode(lock->native_handle()), O_RDONLY);
  EXPECT_TRUE(someone_holds(dir / "f"));
  EXPECT_NE(lock->note().find((dir / "f").string() + " is not a lock file"), std::string::npos)
      << lock->note();
  lock->release();
  expect_untouched(dir / "f", before);
  auto status = inspect(dir / "f");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(status->record, Record::not_a_lock_file);
  EXPECT_FALSE(status->recorded_pid) << "a data file's first line is nobody's PID";
}

// A configuration file, two words, a record with more after it, a script, bytes that are not
// text, one byte over the limit.
INSTANTIATE_TEST_SUITE_P(Contents, DataFile,
                         testing::Values("listen 8080\n", "12 34\n", "8080\nlisten\n",
                                         "#!/bin/sh\necho hi\n", std::string("4\0002\n", 4),
                                         std::string(33, '7'), std::string(4096, '7')));

TEST(DataFile, AnExecutableIsNeverALockFileAndCanBeRunWhileLocked) {
  TempDir dir;
  write_text(dir / "tool", "#!/bin/sh\nexit 7\n");
  ::chmod((dir / "tool").c_str(), 0755);
  write_text(dir / "record-like", "12\n");  // a lock file's content, but executable
  ::chmod((dir / "record-like").c_str(), 0700);
  const auto tool_before = state_of(dir / "tool");
  const auto record_like_before = state_of(dir / "record-like");
  Options inherited;
  inherited.inheritable = true;  // as `pidlock run` passes it to the command
  auto tool = Lock::acquire(dir / "tool", inherited);
  ASSERT_TRUE(tool) << tool.error().message();
  EXPECT_EQ(tool->record(), RecordOutcome::not_a_lock_file);
  EXPECT_EQ(access_mode(tool->native_handle()), O_RDONLY);
  // No writable descriptor of it is open anywhere, so executing it works (no ETXTBSY).
  EXPECT_EQ(test::run({(dir / "tool").string()}).code, 7);
  auto record_like = Lock::acquire(dir / "record-like");
  ASSERT_TRUE(record_like) << record_like.error().message();
  EXPECT_EQ(record_like->record(), RecordOutcome::not_a_lock_file);
  tool->release();
  record_like->release();
  expect_untouched(dir / "tool", tool_before);
  expect_untouched(dir / "record-like", record_like_before);
}

TEST(DataFile, ALockFileIsWrittenThroughAWritableDescriptorAndSaysSo) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  EXPECT_EQ(lock->record(), RecordOutcome::written);
  EXPECT_EQ(access_mode(lock->native_handle()), O_RDWR);
  EXPECT_EQ(lock->note(), "");
}

TEST(DataFile, ABusyDataFileNamesItsHolderButNoRecordedPid) {
  TempDir dir;
  write_text(dir / "f", "1\nlisten 8080\n");  // a first line that looks like init's PID
  Child holder = holder_child(dir / "f");
  auto second = Lock::acquire(dir / "f");
  ASSERT_FALSE(second);
  ASSERT_TRUE(second.error().holder());
  EXPECT_EQ(second.error().holder()->pid, holder.pid());
  EXPECT_FALSE(second.error().holder()->record_agrees);
  EXPECT_EQ(read_text(dir / "f"), "1\nlisten 8080\n");
}

// --- A writer that may only read the file locks it as flock(1) does, and writes no record. ---

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
  write_text(dir / file, content);
  if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
              nullptr) != 0) {
    std::printf("cannot remount it read-only: %s\n", std::strerror(errno));
    return false;
  }
  return true;
}

// One line: what acquire did about the record, whether through a read-only descriptor, whether
// another process (flock -n) finds the lock held, whether the file still holds `content`, and
// the note for an operator.
std::string acquire_without_write_access(const std::filesystem::path& path,
                                         const std::string& content) {
  auto lock = Lock::acquire(path);
  if (!lock) return lock.error().message();
  const bool read_only = access_mode(lock->native_handle()) == O_RDONLY;
  const bool held = test::run({test::flock_binary, "-n", path.string(), "true"}).code == 1;
  const std::string note = lock->note();
  lock->release();
  return std::string(to_string(lock->record())) + (read_only ? " read-only" : " WRITABLE") +
         (held ? " held" : " FREE") + (read_text(path) == content ? " unchanged: " : " CHANGED: ") +
         note;
}

TEST(NoWriteAccess, AWriterOnAReadOnlyMountLocksAsFlockDoesWithoutARecord) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir dir;
  Child child = Child::fork([&] {
    if (!read_only_tmpfs_holding(dir.path(), "l", "4242\n")) return 2;
    std::printf("%s\n", acquire_without_write_access(dir / "l", "4242\n").c_str());
    return 0;
  });
  EXPECT_EQ(child.read_line(), "no_write_access read-only held unchanged: " + (dir / "l").string() +
                                   " may not be written by this process: locked as flock(1) "
                                   "locks it, through a read-only descriptor; no PID is recorded");
  EXPECT_EQ(child.wait(), 0);
}

TEST(NoWriteAccess, AWriterThatMayOnlyReadTheFileLocksAsFlockDoesWithoutARecord) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0644);  // root's, readable by everyone
  Child child = Child::fork([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    std::printf("%s\n", acquire_without_write_access(dir / "l", "4242\n").c_str());
    return 0;
  });
  EXPECT_EQ(child.read_line().rfind("no_write_access read-only held unchanged: ", 0), 0u);
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(read_text(dir / "l"), "4242\n");
}

TEST(NoWriteAccess, AFileThatMayNotBeReadEitherIsStillRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0600);
  Child child = Child::fork([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    std::printf("%s\n", acquire_without_write_access(dir / "l", "4242\n").c_str());
    return 0;
  });
  EXPECT_EQ(child.read_line(), "pidlock: open " + (dir / "l").string() + ": Permission denied");
  EXPECT_EQ(child.wait(), 0);
}

TEST(Release, ThenReacquire) {
  TempDir dir;
  auto first = Lock::acquire(dir / "l");
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->release());
  EXPECT_FALSE(first->held());
  auto second = Lock::acquire(dir / "l");
  ASSERT_TRUE(second) << second.error().message();
}

TEST(Release, OfAnEmptyLockIsANoOp) {
  Lock empty;
  EXPECT_FALSE(empty.held());
  EXPECT_FALSE(empty.release());
}

TEST(Release, TwiceIsANoOp) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(lock->release());
}

TEST(Release, LeavesTheFileAndItsRecord) {
  TempDir dir;
  {
    auto lock = Lock::acquire(dir / "l");
    ASSERT_TRUE(lock);
  }
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

TEST(Release, DestructorReleases) {
  TempDir dir;
  { auto lock = Lock::acquire(dir / "l"); }
  EXPECT_TRUE(Lock::acquire(dir / "l"));
}

TEST(Release, MovedFromLockHoldsNothingAndTheMoveTargetHolds) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Lock moved = std::move(*lock);
  EXPECT_FALSE(lock->held());  // NOLINT(bugprone-use-after-move): that is the point
  EXPECT_TRUE(moved.held());
  EXPECT_FALSE(Lock::acquire(dir / "l"));
  moved = Lock();
  EXPECT_TRUE(Lock::acquire(dir / "l"));
}

TEST(Release, UnlocksForForkedChildrenToo) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Child sharer = test::idle_child();  // inherits the locked descriptor
  lock->release();
  EXPECT_TRUE(Lock::acquire(dir / "l"));
}

TEST(Release, AnInheritableLockStaysWithTheProcessesItWasPassedTo) {
  TempDir dir;
  Options options;
  options.inheritable = true;
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_TRUE(lock);
  Child sharer = test::idle_child();
  lock->release();
  EXPECT_FALSE(Lock::acquire(dir / "l"));
  sharer.close_stdin();
  EXPECT_EQ(sharer.wait(), 0);
  EXPECT_TRUE(Lock::acquire(dir / "l"));
}

// --- A Lock belongs to the process that acquired it: a forked copy never unlocks it. ---

TEST(Fork, AWorkerReturningFromItsFunctionLeavesTheParentHolding) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Child worker = Child::fork([&] {
    Lock inherited = std::move(*lock);  // destroyed as the worker returns: its ~Lock runs here
    return inherited.held() ? 0 : 1;
  });
  EXPECT_EQ(worker.wait(), 0);
  EXPECT_TRUE(someone_holds(dir / "l"));
  EXPECT_TRUE(lock->held());
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(someone_holds(dir / "l"));
}

TEST(Fork, AWorkerThatReleasesOnlyClosesItsOwnDescriptor) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  const int fd = lock->native_handle();
  Child worker = Child::fork([&] {
    if (lock->release()) return 1;
    if (lock->held()) return 2;
    return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF ? 0 : 3;  // closed in the worker
  });
  EXPECT_EQ(worker.wait(), 0);
  EXPECT_TRUE(someone_holds(dir / "l"));
  EXPECT_GE(::fcntl(fd, F_GETFD), 0);  // and still open here
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(someone_holds(dir / "l"));
}

// No pthread_atfork() handler runs in the child of a raw clone(): a PID cached in the parent must
// not make that child the owner.
TEST(Fork, ARawCloneChildThatReleasesLeavesTheParentHolding) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);  // writing the record cached our PID
  const long child = ::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (child == 0) {
    const bool released = !lock->release() && !lock->held();
    ::syscall(SYS_exit_group, released ? 0 : 1);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(child), &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(someone_holds(dir / "l"));
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(someone_holds(dir / "l"));
}

TEST(Fork, AWorkerReleasingAnInheritableLockLeavesItWithTheParent) {
  TempDir dir;
  Options options;
  options.inheritable = true;
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_TRUE(lock);
  Child worker = Child::fork([&] { return lock->release() ? 1 : 0; });
  EXPECT_EQ(worker.wait(), 0);
  EXPECT_TRUE(someone_holds(dir / "l"));
  // An inheritable lock is only ever closed; with the worker gone, the last descriptor is ours.
  EXPECT_FALSE(lock->release());
  EXPECT_FALSE(someone_holds(dir / "l"));
}

TEST(Fork, AMovedLockStillBelongsToTheProcessThatAcquiredIt) {
  TempDir dir;
  auto acquired = Lock::acquire(dir / "l");
  ASSERT_TRUE(acquired);
  Lock lock = std::move(*acquired);
  Child worker = Child::fork([&] {
    Lock other;
    other = std::move(lock);  // a move in the worker carries the parent's ownership along
    return other.release() ? 1 : 0;
  });
  EXPECT_EQ(worker.wait(), 0);
  EXPECT_TRUE(someone_holds(dir / "l"));
  EXPECT_FALSE(lock.release());
  EXPECT_FALSE(someone_holds(dir / "l"));
}

TEST(Acquire, CreatesParentDirectories) {
  TempDir dir;
  const auto path = dir.path() / "var" / "lib" / "app" / "installer.lock";
  auto lock = Lock::acquire(path);
  ASSERT_TRUE(lock) << lock.error().message();
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "var" / "lib").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777 & ~0755u, 0u);
}

TEST(Acquire, WithoutCreateParentsAMissingDirectoryIsAnError) {
  TempDir dir;
  Options options;
  options.create_parents = false;
  auto lock = Lock::acquire(dir.path() / "missing" / "l", options);
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().code(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(lock.error().message(), "pidlock: open " + (dir.path() / "missing" / "l").string() +
                                        ": No such file or directory");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "missing"));
}

TEST(Acquire, NewFileGetsTheConfiguredModeUnderUmask) {
  TempDir dir;
  const mode_t old = ::umask(022);
  Options options;
  options.mode = 0640;
  auto lock = Lock::acquire(dir / "l", options);
  ::umask(old);
  ASSERT_TRUE(lock);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "l").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(Acquire, SyncRecordStillWritesTheRecord) {
  TempDir dir;
  Options options;
  options.sync_record = true;
  auto lock = Lock::acquire(dir / "l", options);
  ASSERT_TRUE(lock);
  EXPECT_EQ(read_text(dir / "l"), record_of(::getpid()));
}

TEST(Acquire, SecondAcquireWhileTheRecordIsTruncatedStillNamesTheHolder) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  ::truncate((dir / "l").c_str(), 0);  // the instant between lock and write, or a wiped file
  auto second = Lock::acquire(dir / "l");
  ASSERT_FALSE(second);
  EXPECT_TRUE(second.error().held());
  ASSERT_TRUE(second.error().holder());
  EXPECT_EQ(second.error().holder()->pid, holder.pid());
  EXPECT_EQ(read_text(dir / "l"), "");
}

TEST(Acquire, InteroperatesWithFlockOnTheSamePath) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  EXPECT_EQ(test::run({"flock", "-n", (dir / "l").string(), "true"}).code, 1);
  lock->release();
  EXPECT_EQ(test::run({"flock", "-n", (dir / "l").string(), "true"}).code, 0);
}

// --- Hostile paths: a clear error, not "held", and nothing changed. ---

struct Snapshot {
  std::string content;
  struct timespec mtime;
  mode_t mode;
};

Snapshot snapshot(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return {read_text(path), st.st_mtim, st.st_mode};
}

void expect_unchanged(const std::filesystem::path& path, const Snapshot& before) {
  const auto after = snapshot(path);
  EXPECT_EQ(after.content, before.content);
  EXPECT_EQ(after.mtime.tv_sec, before.mtime.tv_sec);
  EXPECT_EQ(after.mtime.tv_nsec, before.mtime.tv_nsec);
  EXPECT_EQ(after.mode, before.mode);
}

TEST(Hostile, SymlinkToAFileIsRefusedAndTheTargetIsUntouched) {
  TempDir dir;
  write_text(dir / "precious", "do not touch\n");
  const auto before = snapshot(dir / "precious");
  std::filesystem::create_symlink(dir / "precious", dir / "l");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().message(), "pidlock: open " + (dir / "l").string() +
                                        ": is a symbolic link; refusing to follow it");
  expect_unchanged(dir / "precious", before);
}

TEST(Hostile, DanglingSymlinkIsRefusedAndCreatesNothing) {
  TempDir dir;
  std::filesystem::create_symlink(dir / "target", dir / "l");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().code().value(), ELOOP);
  EXPECT_FALSE(std::filesystem::exists(dir / "target"));
}

TEST(Hostile, SymlinkToADirectoryIsRefused) {
  TempDir dir;
  std::filesystem::create_directory(dir / "d");
  std::filesystem::create_symlink(dir / "d", dir / "l");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code().value(), ELOOP);
  EXPECT_TRUE(std::filesystem::is_empty(dir / "d"));
}

TEST(Hostile, DirectoryIsRefused) {
  TempDir dir;
  std::filesystem::create_directory(dir / "l");
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().message(),
            "pidlock: open " + (dir / "l").string() + ": refusing a lock file that is a directory");
}

TEST(Hostile, FifoIsRefusedWithoutBlocking) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "l").c_str(), 0644), 0);
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().message(),
            "pidlock: open " + (dir / "l").string() + ": refusing a lock file that is a FIFO");
}

TEST(Hostile, CharacterDeviceIsRefused) {
  TempDir dir;
  if (::mknod((dir / "l").c_str(), S_IFCHR | 0666, ::makedev(1, 3)) != 0) {
    GTEST_SKIP() << "mknod needs CAP_MKNOD";
  }
  auto lock = Lock::acquire(dir / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_NE(lock.error().message().find("refusing a lock file that is a character device"),
            std::string::npos);
}

TEST(Hostile, ParentThatIsAFileIsAClearError) {
  TempDir dir;
  write_text(dir / "file", "x");
  auto lock = Lock::acquire(dir / "file" / "l");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
  EXPECT_EQ(lock.error().code().value(), ENOTDIR);
  EXPECT_EQ(read_text(dir / "file"), "x");
}

TEST(Hostile, PathTooLongIsAClearError) {
  TempDir dir;
  auto lock = Lock::acquire(dir.path() / std::string(300, 'x'));
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code().value(), ENAMETOOLONG);
  EXPECT_NE(lock.error().message().find("File name too long"), std::string::npos);
}

TEST(Hostile, EmptyPathIsAnError) {
  auto lock = Lock::acquire("");
  ASSERT_FALSE(lock);
  EXPECT_FALSE(lock.error().held());
}

TEST(Hostile, SymlinkedParentDirectoryIsAllowed) {
  TempDir dir;
  std::filesystem::create_directory(dir / "real");
  std::filesystem::create_directory_symlink(dir / "real", dir / "link");
  auto lock = Lock::acquire(dir.path() / "link" / "l");
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_EQ(read_text(dir.path() / "real" / "l"), record_of(::getpid()));
}

// --- inspect(): read-only. ---

TEST(Inspect, MissingFileIsFreeAndIsNotCreated) {
  TempDir dir;
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_FALSE(status->exists);
  EXPECT_FALSE(status->held);
  EXPECT_FALSE(status->holder);
  EXPECT_FALSE(std::filesystem::exists(dir / "l"));
}

TEST(Inspect, FreeFileReportsThePreviousHolder) {
  TempDir dir;
  write_text(dir / "l", "4242\n");
  const auto before = snapshot(dir / "l");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->exists);
  EXPECT_FALSE(status->held);
  EXPECT_EQ(status->recorded_pid, 4242);
  EXPECT_EQ(status->record, Record::previous);
  expect_unchanged(dir / "l", before);
}

TEST(Inspect, HeldFileNamesTheHolderAndChangesNothing) {
  TempDir dir;
  Child holder = holder_child(dir / "l");
  const auto before = snapshot(dir / "l");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, holder.pid());
  EXPECT_TRUE(status->holder->record_agrees);
  EXPECT_EQ(status->record, Record::agrees);
  expect_unchanged(dir / "l", before);
}

// inspect() confirms a lock the kernel's list does not show with a probe, a lock taken and
// dropped at once: afterwards the lock is as it was, free or held, every time.
TEST(Inspect, LeavesTheLockAsItFoundIt) {
  TempDir dir;
  write_text(dir / "l", "");
  for (int i = 0; i < 50; ++i) {
    auto status = inspect(dir / "l");
    ASSERT_TRUE(status);
    EXPECT_FALSE(status->held);
    EXPECT_EQ(run({"flock", "-n", (dir / "l").string(), "true"}).code, 0);
  }
  Child holder = test::lock_holder(dir / "l");
  for (int i = 0; i < 50; ++i) {
    auto status = inspect(dir / "l");
    ASSERT_TRUE(status);
    EXPECT_TRUE(status->held);
    EXPECT_EQ(status->evidence, Evidence::kernel) << "a held lock the list shows is not probed";
  }
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(run({"flock", "-n", (dir / "l").string(), "true"}).code, 0);
}

TEST(Inspect, SymlinkIsAnError) {
  TempDir dir;
  write_text(dir / "t", "1\n");
  std::filesystem::create_symlink(dir / "t", dir / "l");
  auto status = inspect(dir / "l");
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message().find("symbolic link"), std::string::npos);
}

TEST(Inspect, WarnsAboutAParentWritableByOthers) {
  TempDir dir;
  std::filesystem::create_directory(dir / "open");
  ::chmod((dir / "open").c_str(), 0777);
  auto status = inspect(dir.path() / "open" / "l");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->warnings.size(), 1u);
  EXPECT_NE(status->warnings[0].find("writable by others"), std::string::npos);
}

TEST(Format, Durations) {
  using std::chrono::seconds;
  EXPECT_EQ(format_duration(seconds(0)), "0s");
  EXPECT_EQ(format_duration(seconds(45)), "45s");
  EXPECT_EQ(format_duration(seconds(192)), "3m12s");
  EXPECT_EQ(format_duration(seconds(3600 * 2 + 180)), "2h03m");
  EXPECT_EQ(format_duration(seconds(86400 * 4 + 3600 * 7)), "4d07h");
  EXPECT_EQ(format_duration(seconds(-5)), "0s");
}

}  // namespace
}  // namespace pidlock
