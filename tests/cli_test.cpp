// The pidlock command, run as a user would run it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::pidlock_binary;
using test::run;
using test::TempDir;

// `pidlock run FILE -- sh -c 'echo $$; read _'`: holds until its stdin closes. Returns once the
// command runs, with the command's PID as its first line.
struct Held {
  Child child;
  pid_t command_pid;
};

Held hold(const std::filesystem::path& path, std::vector<std::string> options = {}) {
  std::vector<std::string> argv{pidlock_binary(), "run"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {path.string(), "--", "sh", "-c", "echo $$; read _ || :"});
  Child child = Child::spawn(argv);
  const std::string line = child.read_line();
  return {std::move(child), line.empty() ? -1 : std::stoi(line)};
}

bool flock_free(const std::filesystem::path& path) {
  return run({"flock", "-n", path.string(), "true"}).code == 0;
}

TEST(Cli, BusyExits75NamingTheHolder) {
  TempDir dir;
  Held held = hold(dir / "l");
  const auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  // pidlock became its command, which holds the lock under pidlock's PID.
  EXPECT_EQ(r.err.rfind("another installer is running (pid " + std::to_string(held.child.pid()) +
                            ", sh, for ",
                        0),
            0u)
      << r.err;
  EXPECT_NE(r.err.find("— lock file: " + (dir / "l").string() + "\n"), std::string::npos);
  EXPECT_EQ(r.out, "");
}

TEST(Cli, BusyNamesASupervisingPidlockWithTheCommandItRuns) {
  TempDir dir;
  Held held = hold(dir / "l", {"-o"});
  const auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.err.rfind("another installer is running (pid " + std::to_string(held.child.pid()) +
                            ", pidlock running sh -c echo $$; read _ || :, for ",
                        0),
            0u)
      << r.err;
}

TEST(Cli, RunsTheCommandAndReturnsItsStatus) {
  TempDir dir;
  EXPECT_EQ(run({pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c", "exit 7"}).code,
            7);
  const auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "echo", "-n", "hi"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "hi");  // "-n" belongs to echo, not to pidlock
}

// The command learns which lock it runs under, as an absolute path: it may change directory.
TEST(Cli, TheCommandGetsPidlockFile) {
  TempDir dir;
  auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
                "cd / && printf %s \"$PIDLOCK_FILE\""});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, (dir / "l").string());
  r = run({"sh", "-c", "cd \"$1\" && exec \"$2\" run l -- sh -c 'printf %s \"$PIDLOCK_FILE\"'",
           "sh", dir.path().string(), pidlock_binary()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, (dir / "l").string());
}

// pidlock-fleet's password, set for a fleet's hosts alike, and an outer fleet lock's fence are
// not the local command's.
TEST(Cli, TheCommandGetsNoPasswordAndNoStaleFence) {
  TempDir dir;
  const auto r =
      run({"env", "PIDLOCK_ETCD_PASSWORD=secret", "PIDLOCK_FENCE=7", "PIDLOCK_NAME=n",
           "PIDLOCK_SLOT=0", pidlock_binary(), "run", (dir / "l").string(), "--", "env"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("secret"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("PIDLOCK_FENCE"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("PIDLOCK_NAME"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PIDLOCK_FILE=" + (dir / "l").string() + "\n"), std::string::npos) << r.out;
}

TEST(Cli, CommandKilledBySignalGives128PlusN) {
  TempDir dir;
  EXPECT_EQ(
      run({pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c", "kill -TERM $$"}).code,
      128 + SIGTERM);
}

TEST(Cli, CommandNotFoundIs127AndNotExecutableIs126) {
  TempDir dir;
  const auto missing =
      run({pidlock_binary(), "run", (dir / "l").string(), "--", "no-such-command-xyz"});
  EXPECT_EQ(missing.code, 127);
  EXPECT_NE(missing.err.find("no-such-command-xyz"), std::string::npos);
  test::write_text(dir / "script", "#!/bin/sh\n");
  ::chmod((dir / "script").c_str(), 0644);
  EXPECT_EQ(
      run({pidlock_binary(), "run", (dir / "l").string(), "--", (dir / "script").string()}).code,
      126);
  for (const char* mode : {"--exec", "-o"}) {
    EXPECT_EQ(
        run({pidlock_binary(), "run", mode, (dir / "l").string(), "--", "no-such-command-xyz"})
            .code,
        127)
        << mode;
  }
}

TEST(Cli, ConflictExitCodeIsSettable) {
  TempDir dir;
  Held held = hold(dir / "l");
  EXPECT_EQ(run({pidlock_binary(), "run", "-E", "3", (dir / "l").string(), "--", "true"}).code, 3);
  EXPECT_EQ(run({pidlock_binary(), "run", "-n", (dir / "l").string(), "--", "true"}).code, 75);
}

TEST(Cli, RoleNamesTheKindOfProcess) {
  TempDir dir;
  Held held = hold(dir / "l");
  const auto r =
      run({pidlock_binary(), "run", "--role", "updater", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.err.rfind("another updater is running (pid ", 0), 0u) << r.err;
}

TEST(Cli, WaitTimesOutWith75) {
  TempDir dir;
  Held held = hold(dir / "l");
  const auto r = run({pidlock_binary(), "run", "-w", "0.2", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_NE(r.err.find("another installer is running"), std::string::npos);
  EXPECT_EQ(r.err.find("waiting for"), std::string::npos);  // no progress line off a terminal
}

TEST(Cli, WaitZeroIsNonBlocking) {
  TempDir dir;
  Held held = hold(dir / "l");
  EXPECT_EQ(run({pidlock_binary(), "run", "-w", "0", (dir / "l").string(), "--", "true"}).code, 75);
}

TEST(Cli, WaitIsHandedTheLockWhenTheHolderFinishes) {
  TempDir dir;
  Held held = hold(dir / "l");
  Child waiter = Child::spawn(
      {pidlock_binary(), "run", "-w", "60", (dir / "l").string(), "--", "echo", "mine"});
  waiter.close_stdin();
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--json", (dir / "l").string()})
               .out.find("\"waiters\":[{") != std::string::npos;
  }));
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
  EXPECT_EQ(waiter.wait(), 0);
  EXPECT_EQ(waiter.drain_stdout(), "mine\n");
}

TEST(Cli, InteropFlockHolderMakesPidlockBusy) {
  TempDir dir;
  Child flock = Child::spawn({"flock", (dir / "l").string(), "sh", "-c", "echo ready; read _"});
  ASSERT_EQ(flock.read_line(), "ready");
  const auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.err.rfind(
                "another installer is running (pid " + std::to_string(flock.pid()) + ", flock", 0),
            0u)
      << r.err;
}

TEST(Cli, InteropPidlockHolderMakesFlockBusy) {
  TempDir dir;
  Held held = hold(dir / "l");
  EXPECT_FALSE(flock_free(dir / "l"));
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
  EXPECT_TRUE(flock_free(dir / "l"));
}

// As with flock(1): whatever the command started inherits the lock, and keeps it held after the
// command itself is gone.
TEST(Cli, TheCommandsChildrenInheritTheLockAndKeepItAfterTheCommandIsKilled) {
  TempDir dir;
  Child child = Child::spawn({pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
                              "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; read _ || :"});
  const pid_t sleeper = std::stoi(child.read_line());
  child.signal(SIGKILL);
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_FALSE(flock_free(dir / "l"));  // sleep still runs, and still holds it
  const auto status = run({pidlock_binary(), "status", "--json", (dir / "l").string()});
  const auto json = nlohmann::json::parse(status.out);
  EXPECT_EQ(json["holder"]["pid"], sleeper);
  EXPECT_EQ(json["record"], "stale");  // the record names the killed command
  ::kill(sleeper, SIGKILL);
  EXPECT_TRUE(test::eventually([&] { return flock_free(dir / "l"); }));
}

TEST(Cli, CloseKeepsTheLockInPidlockAlone) {
  TempDir dir;
  Held held = hold(dir / "l", {"-o"});
  EXPECT_FALSE(flock_free(dir / "l"));
  EXPECT_NE(held.command_pid, held.child.pid());
  EXPECT_EQ(test::read_text(dir / "l"), std::to_string(held.child.pid()) + "\n");
  held.child.close_stdin();  // the command ends; pidlock lets go
  EXPECT_EQ(held.child.wait(), 0);
  EXPECT_TRUE(flock_free(dir / "l"));
}

// The default since 0.4; --exec is kept for the command lines that say it.
TEST(Cli, PidlockBecomesTheCommandSoTheRecordIsTheCommandsPid) {
  TempDir dir;
  for (const auto& options : {std::vector<std::string>{}, std::vector<std::string>{"--exec"}}) {
    Held held = hold(dir / "l", options);
    EXPECT_EQ(held.command_pid, held.child.pid());
    EXPECT_EQ(test::read_text(dir / "l"), std::to_string(held.command_pid) + "\n");
    EXPECT_FALSE(flock_free(dir / "l"));
    held.child.close_stdin();
    EXPECT_EQ(held.child.wait(), 0);
  }
}

class ForwardedSignal : public testing::TestWithParam<int> {};

TEST_P(ForwardedSignal, ReachesTheCommand) {
  TempDir dir;
  Child child = Child::spawn({pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
                              "echo ready; exec sleep 60"});
  ASSERT_EQ(child.read_line(), "ready");
  // sh has exec'd sleep once /proc shows it; a signal before that would hit sh instead.
  ASSERT_TRUE(test::eventually([&] {
    auto r = run({pidlock_binary(), "status", "--json", (dir / "l").string()});
    return r.out.find("\"sleep\"") != std::string::npos ||
           r.out.find("sleep 60") != std::string::npos ||
           run({"pgrep", "-P", std::to_string(child.pid()), "-x", "sleep"}).code == 0;
  }));
  child.signal(GetParam());
  EXPECT_EQ(child.wait(), 128 + GetParam());
}

INSTANTIATE_TEST_SUITE_P(Signals, ForwardedSignal,
                         testing::Values(SIGINT, SIGTERM, SIGHUP, SIGQUIT));

TEST(Cli, StatusOfAFreeOrMissingFile) {
  TempDir dir;
  const auto missing = run({pidlock_binary(), "status", (dir / "l").string()});
  EXPECT_EQ(missing.code, 0);
  EXPECT_NE(missing.out.find("free"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "l"));
  const auto json =
      nlohmann::json::parse(run({pidlock_binary(), "status", "--json", (dir / "l").string()}).out);
  EXPECT_EQ(json["path"], (dir / "l").string());
  EXPECT_EQ(json["held"], false);
  EXPECT_TRUE(json["holder"].is_null());
  EXPECT_TRUE(json["recorded_pid"].is_null());
}

TEST(Cli, StatusOfAHeldFile) {
  TempDir dir;
  Held held = hold(dir / "l", {"-o"});  // a supervising pidlock: named with its command
  const auto human = run({pidlock_binary(), "status", (dir / "l").string()});
  EXPECT_EQ(human.code, 75);
  EXPECT_NE(
      human.out.find("held by pid " + std::to_string(held.child.pid()) + ", pidlock running sh"),
      std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("record: pid " + std::to_string(held.child.pid()) + " (agrees)"),
            std::string::npos);
  const auto r = run({pidlock_binary(), "status", "--json", (dir / "l").string()});
  EXPECT_EQ(r.code, 75);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["path"], (dir / "l").string());
  EXPECT_EQ(json["held"], true);
  EXPECT_EQ(json["holder"]["pid"], held.child.pid());
  EXPECT_EQ(json["holder"]["command"], "pidlock");
  EXPECT_EQ(json["holder"]["record_agrees"], true);
  EXPECT_EQ(json["holder"]["user"], "root");
  EXPECT_EQ(json["recorded_pid"], held.child.pid());
  EXPECT_EQ(json["record"], "agrees");
  EXPECT_TRUE(json["waiters"].is_array());
}

TEST(Cli, StatusNeverCreatesWritesOrLocks) {
  TempDir dir;
  test::write_text(dir / "l", "12345\n");
  struct stat before {};
  ::stat((dir / "l").c_str(), &before);
  EXPECT_EQ(run({pidlock_binary(), "status", (dir / "l").string()}).code, 0);
  struct stat after {};
  ::stat((dir / "l").c_str(), &after);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  EXPECT_EQ(test::read_text(dir / "l"), "12345\n");
  EXPECT_EQ(run({pidlock_binary(), "status", (dir.path() / "a" / "b").string()}).code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "a"));
}

TEST(Cli, UsageErrorsExit64) {
  TempDir dir;
  const auto f = (dir / "l").string();
  const std::vector<std::vector<std::string>> bad{
      {},
      {"run"},
      {"run", f},
      {"run", f, "--"},
      {"run", "-n", "-w", "1", f, "--", "true"},
      {"run", "-o", "--exec", f, "--", "true"},
      {"run", "-w", "-1", f, "--", "true"},
      {"run", "-w", "soon", f, "--", "true"},
      {"run", "--bogus", f, "--", "true"},
      {"status"},
      {"status", f, "--", "true"},
      {"frobnicate"},
  };
  for (auto args : bad) {
    args.insert(args.begin(), pidlock_binary());
    const auto r = run(args);
    EXPECT_EQ(r.code, 64) << testing::PrintToString(args);
    EXPECT_NE(r.err.find("usage: pidlock"), std::string::npos) << r.err;
  }
}

TEST(Cli, HelpAndVersion) {
  const auto help = run({pidlock_binary(), "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("Usage: pidlock"), std::string::npos) << help.out;
  const auto run_help = run({pidlock_binary(), "run", "--help"});
  EXPECT_EQ(run_help.code, 0);
  EXPECT_NE(run_help.out.find("--wait"), std::string::npos) << run_help.out;
  const auto v = run({pidlock_binary(), "--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, "pidlock " + std::string(version()) + "\n");
}

TEST(Cli, HostilePathsFailClearlyAndNotAs75) {
  TempDir dir;
  test::write_text(dir / "precious", "keep\n");
  std::filesystem::create_symlink(dir / "precious", dir / "link");
  auto r = run({pidlock_binary(), "run", (dir / "link").string(), "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_EQ(r.err, "pidlock: open " + (dir / "link").string() +
                       ": is a symbolic link; refusing to follow it\n");
  EXPECT_EQ(test::read_text(dir / "precious"), "keep\n");

  std::filesystem::create_directory(dir / "d");
  r = run({pidlock_binary(), "run", (dir / "d").string(), "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_EQ(r.err, "pidlock: open " + (dir / "d").string() +
                       ": refusing a lock file that is a directory\n");
  EXPECT_EQ(run({pidlock_binary(), "status", (dir / "d").string()}).err, r.err);

  r = run({pidlock_binary(), "run", "--no-mkdir", (dir.path() / "x" / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x"));
}

TEST(Cli, ProgressLineOnATerminalWhileWaiting) {
  TempDir dir;
  Held held = hold(dir / "l");
  int master = -1;
  int slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  Child waiter = Child::fork([&] {
    ::dup2(slave, STDERR_FILENO);
    ::execl(pidlock_binary().c_str(), "pidlock", "run", "-w", "1.5", (dir / "l").c_str(), "--",
            "true", nullptr);
    return 127;
  });
  ::close(slave);
  EXPECT_EQ(waiter.wait(), 75);
  std::string screen;
  char buf[4096];
  ssize_t n = 0;
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  while ((n = ::read(master, buf, sizeof buf)) > 0) screen.append(buf, static_cast<std::size_t>(n));
  ::close(master);
  EXPECT_NE(screen.find("waiting for pid " + std::to_string(held.child.pid()) +
                        " (sh) to release " + (dir / "l").string() + " — "),
            std::string::npos)
      << screen;
  EXPECT_NE(screen.find("another installer is running"), std::string::npos);
}

// --- Files that are not lock files: locked as flock(1) locks them, never rewritten ------------

struct FileState {
  std::string content;
  struct timespec mtime;
  mode_t mode;
};

FileState state_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return {test::read_text(path), st.st_mtim, st.st_mode};
}

void expect_untouched(const std::filesystem::path& path, const FileState& before) {
  const auto after = state_of(path);
  EXPECT_EQ(after.content, before.content) << path;
  EXPECT_EQ(after.mtime.tv_sec, before.mtime.tv_sec) << path;
  EXPECT_EQ(after.mtime.tv_nsec, before.mtime.tv_nsec) << path;
  EXPECT_EQ(after.mode, before.mode) << path;
}

// The command tells whether the lock is held while it runs: flock -n refused is 1.
std::vector<std::string> run_asking_flock(const std::filesystem::path& path,
                                          std::vector<std::string> options = {}) {
  std::vector<std::string> argv{pidlock_binary(), "run"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(),
              {path.string(), "--", "sh", "-c", "flock -n \"$0\" true; echo $?", path.string()});
  return argv;
}

TEST(CliData, AConfigurationFileIsLockedButNeverRewritten) {
  TempDir dir;
  test::write_text(dir / "app.conf", "listen 8080\n");
  const auto before = state_of(dir / "app.conf");
  const auto r = run(run_asking_flock(dir / "app.conf"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n") << "held while the command ran";
  expect_untouched(dir / "app.conf", before);
  const auto st = nlohmann::json::parse(
      run({pidlock_binary(), "status", "--json", (dir / "app.conf").string()}).out);
  EXPECT_EQ(st["record"], "not_a_lock_file");
  EXPECT_TRUE(st["recorded_pid"].is_null());
  const auto human = run({pidlock_binary(), "status", (dir / "app.conf").string()});
  EXPECT_NE(human.out.find("  record: none: not a lock file"), std::string::npos) << human.out;
}

TEST(CliData, AnExecutableIsNeverRewrittenAndRunsAsTheCommandItLocks) {
  TempDir dir;
  test::write_text(dir / "tool", "#!/bin/sh\nexit 7\n");
  ::chmod((dir / "tool").c_str(), 0755);
  const auto before = state_of(dir / "tool");
  const auto r = run({pidlock_binary(), "run", (dir / "tool").string(), (dir / "tool").string()});
  EXPECT_EQ(r.code, 7) << r.err;
  expect_untouched(dir / "tool", before);
}

// flock(1)'s own idiom for a script that locks itself, with pidlock in flock's place: it runs
// once, holds the lock while it runs (a second start is refused), and stays byte for byte the
// same.
TEST(CliData, TheSelfLockingScriptIdiomRunsOnceHoldsTheLockAndLeavesTheScriptIntact) {
  TempDir dir;
  const auto script = dir / "job.sh";
  test::write_text(script,
                   "#!/bin/sh\n"
                   "[ \"$FLOCKER\" != \"$0\" ] && exec env FLOCKER=\"$0\" " +
                       pidlock_binary() +
                       " run \"$0\" \"$0\" \"$@\" || :\n"
                       "echo \"run $*\" >> \"$0.runs\"\n"
                       "echo running\n"
                       "read _ || :\n");
  ::chmod(script.c_str(), 0755);
  const auto before = state_of(script);
  Child job = Child::spawn({script.string(), "first"});
  ASSERT_EQ(job.read_line(), "running");
  EXPECT_FALSE(flock_free(script)) << "the script holds the lock on itself while it runs";
  const auto second = run({script.string(), "second"});
  EXPECT_EQ(second.code, 75) << second.err;
  job.close_stdin();
  EXPECT_EQ(job.wait(), 0);
  EXPECT_EQ(test::read_text(dir / "job.sh.runs"), "run first\n");
  expect_untouched(script, before);
  EXPECT_TRUE(flock_free(script));
}

// Needs cli/run.cpp to print Lock::note() once after acquiring (see pidlock(1), THE LOCK FILE):
// enable it with that change.
TEST(CliData, RunSaysOnceThatItLeftTheFileAlone) {
  TempDir dir;
  test::write_text(dir / "app.conf", "listen 8080\n");
  const auto r = run({pidlock_binary(), "run", (dir / "app.conf").string(), "--", "true"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "pidlock: note: " + (dir / "app.conf").string() +
                       " is not a lock file (it holds other data, or is executable): locked as "
                       "flock(1) locks it, through a read-only descriptor; its content is left as "
                       "it was and no PID is recorded\n");
}

// --- Writers that may only read the file: locked as flock(1) locks it, no record --------------

TEST(CliNoWriteAccess, AWriterOnAReadOnlyMountLocksWithoutARecord) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir dir;
  Child child = Child::fork([&] {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=64k") != 0) {
      return 2;
    }
    test::write_text(dir / "l", "4242\n");
    if (::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
      return 3;
    }
    const auto r = run(run_asking_flock(dir / "l"));
    std::printf("%d %s\n", r.code, r.out.substr(0, r.out.find('\n')).c_str());
    return test::read_text(dir / "l") == "4242\n" ? 0 : 4;
  });
  EXPECT_EQ(child.read_line(), "0 1") << "exit 0, and held while the command ran";
  EXPECT_EQ(child.wait(), 0);
}

TEST(CliNoWriteAccess, AWriterWhoMayOnlyReadTheFileLocksWithoutARecord) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  test::write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0644);
  std::vector<std::string> argv{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  const auto writer = run_asking_flock(dir / "l");
  argv.insert(argv.end(), writer.begin(), writer.end());
  const auto r = run(argv);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(test::read_text(dir / "l"), "4242\n");
}

// --- What is true about the path, the record and the holder -----------------------------------

TEST(CliPaths, ATrailingSlashOrAMissingDirectoryIsNotCalledADirectory) {
  TempDir dir;
  test::write_text(dir / "file", "x");
  const std::string file_slash = (dir / "file").string() + "/";
  auto r = run({pidlock_binary(), "run", file_slash, "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_EQ(r.err, "pidlock: open " + file_slash + ": Not a directory\n");
  const auto status = run({pidlock_binary(), "status", file_slash});
  EXPECT_EQ(status.code, 66);
  EXPECT_EQ(status.err, r.err);
  const std::string missing_slash = (dir / "nodir").string() + "/";
  r = run({pidlock_binary(), "run", missing_slash, "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_EQ(r.err, "pidlock: open " + missing_slash + ": No such file or directory\n");
  const std::string under_file = (dir / "file" / "x").string();
  r = run({pidlock_binary(), "run", under_file, "--", "true"});
  EXPECT_EQ(r.code, 73);
  EXPECT_EQ(r.err, "pidlock: open " + under_file + ": Not a directory\n");
  EXPECT_EQ(test::read_text(dir / "file"), "x");
  EXPECT_FALSE(std::filesystem::exists(dir / "nodir"));
}

TEST(CliPaths, AFileThatCannotBeCreatedInSysfsIsAKernelInterfaceAndExits73) {
  const std::string path = "/sys/kernel/pidlock-test-no-such-file";
  if (!std::filesystem::is_directory("/sys/kernel")) GTEST_SKIP() << "needs sysfs";
  const auto r = run({pidlock_binary(), "run", path, "--", "true"});
  EXPECT_EQ(r.code, 73) << r.err;
  EXPECT_EQ(r.err.rfind("pidlock: open " + path + ": refusing a lock file on sysfs", 0), 0u)
      << r.err;
}

TEST(CliStatus, ARecordTheViewerMayNotReadIsSaidToBeSo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  test::write_text(dir / "l", "4242\n");
  ::chmod((dir / "l").c_str(), 0600);
  const std::vector<std::string> nobody{"setpriv", "--reuid=65534", "--regid=65534",
                                        "--clear-groups"};
  auto human_argv = nobody;
  human_argv.insert(human_argv.end(), {pidlock_binary(), "status", (dir / "l").string()});
  const auto human = run(human_argv);
  EXPECT_NE(human.out.find("  record: not readable by this user\n"), std::string::npos)
      << human.out << human.err;
  auto json_argv = nobody;
  json_argv.insert(json_argv.end(), {pidlock_binary(), "status", "--json", (dir / "l").string()});
  const auto json = nlohmann::json::parse(run(json_argv).out);
  EXPECT_EQ(json["record"], "not_readable");
  // Root may read it: a record, not a PID-less file.
  const auto root = run({pidlock_binary(), "status", (dir / "l").string()});
  EXPECT_NE(root.out.find("  record: pid 4242 (the last holder)\n"), std::string::npos) << root.out;
}

TEST(CliStatus, AHolderWhoseLockNoRecordDatesIsGivenItsProcesssAgeAsSuch) {
  TempDir dir;
  Child flock_holder =
      Child::spawn({"flock", (dir / "l").string(), "sh", "-c", "echo ready; read _ || :"});
  ASSERT_EQ(flock_holder.read_line(), "ready");
  const auto r = run({pidlock_binary(), "run", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_NE(r.err.find("s since it started) — lock file: "), std::string::npos) << r.err;
  flock_holder.close_stdin();
  EXPECT_EQ(flock_holder.wait(), 0);
}

}  // namespace
}  // namespace pidlock
