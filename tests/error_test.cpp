// The error vocabulary: each way the library fails carries its kind, and the command's one table
// turns each kind into the exit code pidlock(1) documents.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "../cli/exit_status.hpp"
#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::TempDir;

constexpr ErrorKind every_kind[] = {
    ErrorKind::busy,           ErrorKind::invalid_argument,    ErrorKind::not_found,
    ErrorKind::symlink,        ErrorKind::not_regular_file,    ErrorKind::kernel_interface,
    ErrorKind::cannot_open,    ErrorKind::permission_denied,   ErrorKind::io,
    ErrorKind::system,         ErrorKind::cancelled,           ErrorKind::unreachable,
    ErrorKind::etcd_error,     ErrorKind::lease_lost,          ErrorKind::tls,
    ErrorKind::authentication, ErrorKind::slot_count_mismatch,
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

TEST(ErrorKinds, BusyIsHeldAndNothingElseIs) {
  TempDir dir;
  auto first = Lock::acquire(dir / "l");
  ASSERT_TRUE(first) << first.error().message();
  auto second = Lock::acquire(dir / "l");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().kind(), ErrorKind::busy);
  EXPECT_TRUE(second.error().held());
  EXPECT_EQ(second.error().path(), dir / "l");
  EXPECT_TRUE(second.error().place().empty());

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

TEST(ErrorKinds, FleetFailuresNameTheirPlaceNotAPath) {
  const auto e = Error::fleet_failure(ErrorKind::unreachable, "lease grant", "http://127.0.0.1:1",
                                      std::make_error_code(std::errc::host_unreachable),
                                      "etcd: Couldn't connect to server");
  EXPECT_EQ(e.kind(), ErrorKind::unreachable);
  EXPECT_EQ(e.place(), "http://127.0.0.1:1");
  EXPECT_TRUE(e.path().empty());
  EXPECT_EQ(e.message(),
            "pidlock: lease grant http://127.0.0.1:1: etcd: Couldn't connect to server");
}

TEST(ErrorKinds, EachHasItsOwnSpelling) {
  std::set<std::string_view> seen;
  for (const ErrorKind kind : every_kind) EXPECT_TRUE(seen.insert(to_string(kind)).second);
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
  for (const ErrorKind kind : every_kind) {
    for (const auto use : {cli::FileUse::lock, cli::FileUse::read}) {
      const std::string code = std::to_string(cli::exit_code_for(kind, use));
      const auto row = exit_status.find(".B " + code + "\n");
      ASSERT_NE(row, std::string::npos)
          << "no entry for exit " << code << " (" << to_string(kind) << ")";
      const auto next = exit_status.find(".TP", row);
      EXPECT_NE(exit_status.substr(row, next - row).find(std::string(to_string(kind))),
                std::string::npos)
          << "exit " << code << " does not name " << to_string(kind);
    }
  }
}

}  // namespace
}  // namespace pidlock
