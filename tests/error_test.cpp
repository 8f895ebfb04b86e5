// The error vocabulary: each way the library fails carries its kind, and the command's one table
// turns each kind into the exit code pidlock(1) documents.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "../cli/exit_status.hpp"
#include "pidlock/fleet.hpp"
#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::TempDir;

constexpr ErrorKind every_kind[] = {
    ErrorKind::busy,        ErrorKind::invalid_argument,  ErrorKind::not_found,
    ErrorKind::symlink,     ErrorKind::not_regular_file,  ErrorKind::kernel_interface,
    ErrorKind::cannot_open, ErrorKind::permission_denied, ErrorKind::io,
    ErrorKind::system,      ErrorKind::cancelled,
};

constexpr fleet::ErrorKind every_fleet_kind[] = {
    fleet::ErrorKind::busy,
    fleet::ErrorKind::invalid_argument,
    fleet::ErrorKind::unreachable,
    fleet::ErrorKind::etcd_error,
    fleet::ErrorKind::lease_lost,
    fleet::ErrorKind::tls,
    fleet::ErrorKind::authentication,
    fleet::ErrorKind::permission_denied,
    fleet::ErrorKind::slot_count_mismatch,
    fleet::ErrorKind::system,
    fleet::ErrorKind::cancelled,
};

ErrorKind acquire_kind(const std::filesystem::path& path, const Options& options = {}) {
  auto lock = Lock::acquire(path, options);
  EXPECT_FALSE(lock) << path;
  return lock ? ErrorKind::system : lock.error().kind();
}

ErrorKind inspect_kind(const std::filesystem::path& path) {
  auto status = inspect(path);
  EXPECT_FALSE(status) << path;
  return status ? ErrorKind::system : status.error().kind();
}

TEST(ErrorKinds, NameWhatWentWrongWithTheLockFile) {
  TempDir dir;
  test::write_text(dir / "file", "");
  std::filesystem::create_symlink(dir / "file", dir / "link");
  std::filesystem::create_directory(dir / "dir");
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);

  EXPECT_EQ(acquire_kind(dir / "link"), ErrorKind::symlink);
  EXPECT_EQ(inspect_kind(dir / "link"), ErrorKind::symlink);
  EXPECT_EQ(acquire_kind(dir / "dir"), ErrorKind::not_regular_file);
  EXPECT_EQ(inspect_kind(dir / "dir"), ErrorKind::not_regular_file);
  EXPECT_EQ(acquire_kind(dir / "fifo"), ErrorKind::not_regular_file);
  EXPECT_EQ(inspect_kind(dir / "fifo"), ErrorKind::not_regular_file);
  EXPECT_EQ(acquire_kind(dir / "file" / "l"), ErrorKind::not_found);  // ENOTDIR
  EXPECT_EQ(inspect_kind(dir / "file" / "l"), ErrorKind::not_found);
  EXPECT_EQ(acquire_kind(""), ErrorKind::not_found);
  Options no_parents;
  no_parents.create_parents = false;
  EXPECT_EQ(acquire_kind(dir / "missing" / "l", no_parents), ErrorKind::not_found);
  if (std::filesystem::exists("/proc/self/comm")) {
    EXPECT_EQ(acquire_kind("/proc/self/comm"), ErrorKind::kernel_interface);
    EXPECT_EQ(inspect_kind("/proc/self/comm"), ErrorKind::kernel_interface);
  }
}

// What is there is said, not "a directory": open(O_CREAT) says EISDIR for any path ending in
// '/'. And a file that cannot be created in sysfs is a kernel interface's (73), not a permission
// (77): only storage may hold a lock file.
TEST(ErrorKinds, ATrailingSlashIsNotCalledADirectoryAndSysfsIsAKernelInterface) {
  TempDir dir;
  test::write_text(dir / "file", "x");
  const auto slash = Lock::acquire(dir.path() / "file" / "");
  ASSERT_FALSE(slash);
  EXPECT_EQ(slash.error().kind(), ErrorKind::not_found);
  EXPECT_EQ(slash.error().message(),
            "pidlock: open " + (dir / "file").string() + "/: Not a directory");
  const auto missing = Lock::acquire(dir.path() / "missing" / "");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(),
            "pidlock: open " + (dir / "missing").string() + "/: No such file or directory");
  EXPECT_FALSE(std::filesystem::exists(dir / "missing"));
  EXPECT_EQ(test::read_text(dir / "file"), "x");

  const std::filesystem::path in_sysfs = "/sys/kernel/pidlock-test-no-such-file";
  if (!std::filesystem::is_directory(in_sysfs.parent_path())) GTEST_SKIP() << "needs sysfs";
  const auto sys = Lock::acquire(in_sysfs);
  ASSERT_FALSE(sys);
  EXPECT_EQ(sys.error().kind(), ErrorKind::kernel_interface) << sys.error().message();
  EXPECT_EQ(cli::exit_code_for(sys.error(), cli::FileUse::lock), 73);
  EXPECT_EQ(sys.error().message().rfind("pidlock: open " + in_sysfs.string() +
                                            ": refusing a lock file on sysfs, a kernel interface",
                                        0),
            0u)
      << sys.error().message();
}

TEST(ErrorKinds, BusyIsHeldAndNothingElseIs) {
  TempDir dir;
  auto first = Lock::acquire(dir / "l");
  ASSERT_TRUE(first) << first.error().message();
  auto second = Lock::acquire(dir / "l");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().kind(), ErrorKind::busy);
  EXPECT_TRUE(second.error().held());
  EXPECT_EQ(second.error().path(), dir / "l");

  Options bad;
  bad.progress_interval = std::chrono::nanoseconds(0);
  const auto refused = Lock::acquire(dir / "other", bad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind(), ErrorKind::invalid_argument);
  EXPECT_FALSE(refused.error().held());
}

// An errno that means the same whichever step returned it decides the kind.
TEST(ErrorKinds, PermissionDeniedFromAnyStep) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  TempDir dir;
  std::filesystem::create_directory(dir / "private");
  ASSERT_EQ(::chmod((dir / "private").c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    const auto opened = Lock::acquire(dir / "private" / "l");
    const auto made = Lock::acquire(dir / "private" / "sub" / "l");
    const bool ok = !opened && opened.error().kind() == ErrorKind::permission_denied &&
                    opened.error().operation() == "open" && !made &&
                    made.error().kind() == ErrorKind::permission_denied;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(ErrorKinds, EachHasItsOwnSpelling) {
  std::set<std::string_view> seen;
  for (const ErrorKind kind : every_kind) EXPECT_TRUE(seen.insert(to_string(kind)).second);
  std::set<std::string_view> seen_in_fleet;
  for (const auto kind : every_fleet_kind) {
    EXPECT_TRUE(seen_in_fleet.insert(to_string(kind)).second);
  }
}

// "for T" is how long the holder has held the lock where the record dates it; otherwise the
// holder's age, and the message says so.
TEST(Describe, SaysWhetherTheTimeIsTheLocksOrTheProcesss) {
  timespec now{};
  ASSERT_EQ(::clock_gettime(CLOCK_BOOTTIME, &now), 0);
  Holder holder;
  holder.pid = 4242;
  holder.command = "app-installer";
  holder.inspectable = true;
  holder.started_since_boot = std::chrono::seconds(now.tv_sec) - std::chrono::hours(1);
  holder.held_for = std::chrono::minutes(5);
  holder.record_agrees = true;  // the record, written right after locking, dates the lock
  EXPECT_EQ(describe(holder), "pid 4242, app-installer, for 5m00s");
  holder.record_agrees = false;  // a flock(1) holder, a reader, a stale record: its age
  holder.held_for = std::chrono::hours(1);
  EXPECT_EQ(describe(holder), "pid 4242, app-installer, for 1h00m since it started");
  holder.record_agrees = true;  // a record older than the process cannot date the lock
  EXPECT_EQ(describe(holder), "pid 4242, app-installer, for 1h00m since it started");
  // A fleet holder's record says when it took its slot: fleet::describe (etcd_client_test.cpp).
}

// The man page's EXIT STATUS names every kind beside the code the table gives it.
TEST(ExitStatus, TheManPageDocumentsTheTable) {
  std::ifstream page(PIDLOCK_SOURCE_DIR "/docs/pidlock.1");
  ASSERT_TRUE(page);
  std::stringstream text;
  text << page.rdbuf();
  const std::string man = text.str();
  const auto section = man.find(".SH EXIT STATUS");
  ASSERT_NE(section, std::string::npos);
  const std::string exit_status = man.substr(section, man.find(".SH ", section + 1) - section);
  const auto documents = [&exit_status](int exit_code, std::string_view kind) {
    const std::string code = std::to_string(exit_code);
    const auto row = exit_status.find(".B " + code + "\n");
    ASSERT_NE(row, std::string::npos) << "no entry for exit " << code << " (" << kind << ")";
    const auto next = exit_status.find(".TP", row);
    EXPECT_NE(exit_status.substr(row, next - row).find(std::string(kind)), std::string::npos)
        << "exit " << code << " does not name " << kind;
  };
  for (const ErrorKind kind : every_kind) {
    for (const auto use : {cli::FileUse::lock, cli::FileUse::read}) {
      documents(cli::exit_code_for(kind, use), to_string(kind));
    }
  }
  for (const auto kind : every_fleet_kind) documents(cli::exit_code_for(kind), to_string(kind));
}

// A kind the fleet shares with the local lock is spelt the same and has the same exit code.
TEST(ExitStatus, FleetKindsTheLocalLockHasTooShareItsCodes) {
  for (const ErrorKind local : every_kind) {
    for (const auto kind : every_fleet_kind) {
      if (to_string(kind) != to_string(local)) continue;
      EXPECT_EQ(cli::exit_code_for(kind), cli::exit_code_for(local, cli::FileUse::lock))
          << to_string(kind);
    }
  }
}

}  // namespace
}  // namespace pidlock
