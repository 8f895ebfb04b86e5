// The pidlock command's front: where options end and the command begins, numeric options, and
// closed or broken standard descriptors.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "support.hpp"

namespace pidlock {
namespace {

using test::c_argv;
using test::Child;
using test::pidlock_binary;
using test::read_text;
using test::run;
using test::TempDir;

// --- Options end at FILE ----------------------------------------------------------------------

TEST(CliArguments, OptionsAfterFileBelongToTheCommand) {
  TempDir dir;
  const auto f = (dir / "l").string();
  auto r = run({pidlock_binary(), "run", f, "echo", "-n", "hello"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hello");
  r = run({pidlock_binary(), "run", f, "--", "echo", "-n", "hello"});
  EXPECT_EQ(r.out, "hello");
  r = run({pidlock_binary(), "run", "-w", "0", f, "sh", "-c", "printf '[%s]' \"$@\"", "sh", "-n",
           "--", "--etcd", "x", "-w", "5", "--help"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "[-n][--][--etcd][x][-w][5][--help]");
}

TEST(CliArguments, OptionsBeforeFileTakeTheirValuesInEveryForm) {
  TempDir dir;
  const auto f = (dir / "l").string();
  Child holder = test::lock_holder(dir / "l");
  for (const std::vector<std::string>& options :
       {std::vector<std::string>{"-E", "3", "--role", "updater"},
        {"-E3", "--role=updater"},
        {"--conflict-exit-code=3", "--role", "updater"},
        {"-nE3", "--role", "updater"},
        {"-w", "0", "-E", "3", "--role", "updater"},
        {"--wait=0", "-E", "3", "--role", "updater"}}) {
    std::vector<std::string> argv{pidlock_binary(), "run"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {f, "true"});
    const auto r = run(argv);
    EXPECT_EQ(r.code, 3) << testing::PrintToString(options) << r.err;
    EXPECT_EQ(r.err.rfind("another updater is running", 0), 0u) << r.err;
  }
}

TEST(CliArguments, ADoubleDashBeforeFileEndsTheOptions) {
  TempDir dir;
  for (const bool second_separator : {false, true}) {
    std::vector<std::string> argv{pidlock_binary(), "run", "--", "-weird.lock"};
    if (second_separator) argv.push_back("--");
    argv.insert(argv.end(), {"echo", "ran"});
    Child child = Child::fork([&] {
      if (::chdir(dir.path().c_str()) != 0) return 2;
      ::execv(argv[0].c_str(), c_argv(argv).data());
      return 127;
    });
    child.close_stdin();
    EXPECT_EQ(child.drain_stdout(), "ran\n");
    EXPECT_EQ(child.wait(), 0) << child.drain_stderr();
    EXPECT_EQ(read_text(dir / "-weird.lock"), std::to_string(child.pid()) + "\n");
  }
}

TEST(CliArguments, TheCommandsEtcdDoesNotMeanFleetMode) {
  TempDir dir;
  for (const bool separator : {false, true}) {
    std::vector<std::string> argv{pidlock_binary(), "run", (dir / "l").string()};
    if (separator) argv.push_back("--");
    argv.insert(argv.end(), {"echo", "--etcd", "http://127.0.0.1:1"});
    const auto r = run(argv);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "--etcd http://127.0.0.1:1\n");
  }
}

TEST(CliArguments, StatusTakesFileLast) {
  TempDir dir;
  const auto f = (dir / "l").string();
  EXPECT_EQ(run({pidlock_binary(), "status", "--json", f}).code, 0);
  const auto r = run({pidlock_binary(), "status", f, "--json"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(
      r.err.rfind("pidlock: status takes nothing after FILE (options go before it): '--json'\n", 0),
      0u)
      << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(CliArguments, HelpAndUsageShowWhereTheCommandStarts) {
  const auto help = run({pidlock_binary(), "run", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("Usage: pidlock run [OPTIONS] FILE [--] COMMAND [ARG...]"),
            std::string::npos)
      << help.out;
  const auto usage = run({pidlock_binary(), "run"});
  EXPECT_EQ(usage.code, 64);
  EXPECT_NE(usage.err.find("FILE [--] COMMAND [ARG...]"), std::string::npos) << usage.err;
  const auto unknown = run({pidlock_binary(), "frobnicate", "x"});
  EXPECT_EQ(unknown.code, 64);
  EXPECT_EQ(unknown.err.rfind("pidlock: unknown command 'frobnicate'\n", 0), 0u) << unknown.err;
}

// --- Numbers ----------------------------------------------------------------------------------

TEST(CliNumbers, WaitTakesFiniteSecondsUpToAYear) {
  TempDir dir;
  const auto f = (dir / "l").string();
  for (const std::string bad : {"nan", "-nan", "inf", "-inf", "infinity", "-1", "-0.5", "1e400",
                                "31536000.5", "31536001", "", "5s", " 5", "0x10", "1,5"}) {
    const auto r = run({pidlock_binary(), "run", "-w", bad, f, "true"});
    EXPECT_EQ(r.code, 64) << bad;
    EXPECT_EQ(
        r.err.rfind(
            "pidlock: -w: expected seconds from 0 to 31536000 (a year), got '" + bad + "'\n", 0),
        0u)
        << r.err;
  }
  for (const std::string good : {"0", "0.25", "1e-3", "31536000", "3.1536e7"}) {
    const auto r = run({pidlock_binary(), "run", "--wait=" + good, f, "true"});
    EXPECT_EQ(r.code, 0) << good << ": " << r.err;
  }
}

TEST(CliNumbers, RangeErrorsNameTheOptionTheRangeAndTheText) {
  TempDir dir;
  const auto f = (dir / "l").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"run", "-E", "256", f, "true"}, "-E: expected an exit code from 0 to 255, got '256'"},
      {{"run", "-E", "1e400", f, "true"}, "-E: expected an exit code from 0 to 255, got '1e400'"},
      {{"run", "-E", "-1", f, "true"}, "-E: expected an exit code from 0 to 255, got '-1'"},
      {{"run", "-E", "99999999999999999999999", f, "true"},
       "-E: expected an exit code from 0 to 255, got '99999999999999999999999'"},
      {{"run", "--slots", "0", f, "true"},
       "--slots: expected a slot count from 1 to 1000000, got '0'"},
      {{"status", "--slots", "2.5", f},
       "--slots: expected a slot count from 1 to 1000000, got '2.5'"},
      {{"run", "--ttl", "1e308", f, "true"},
       "--ttl: expected whole seconds from 1 to 3600, got '1e308'"},
  };
  for (auto [args, message] : cases) {
    args.insert(args.begin(), pidlock_binary());
    const auto r = run(args);
    EXPECT_EQ(r.code, 64) << testing::PrintToString(args);
    EXPECT_EQ(r.err.rfind("pidlock: " + message + "\n", 0), 0u) << r.err;
  }
}

// --- Standard descriptors ---------------------------------------------------------------------

// pidlock run with some of its standard descriptors closed (as `>&-` leaves them).
Child with_closed(std::initializer_list<int> closed, const std::vector<std::string>& argv) {
  return Child::fork([closed, argv] {
    for (const int fd : closed) ::close(fd);
    ::execv(argv[0].c_str(), c_argv(argv).data());
    return 127;
  });
}

TEST(CliDescriptors, BusyWithStderrClosedStillExits75) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  Child busy =
      with_closed({STDERR_FILENO}, {pidlock_binary(), "run", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(busy.wait(), 75);
}

TEST(CliDescriptors, BusyWithStderrOnABrokenPipeStillExits75) {
  TempDir dir;
  Child holder = test::lock_holder(dir / "l");
  const std::string file = (dir / "l").string();
  Child busy = Child::fork([&] {
    int unread[2];
    if (::pipe(unread) != 0) return 2;
    ::close(unread[0]);  // nobody will read: a write raises SIGPIPE and fails with EPIPE
    ::dup2(unread[1], STDERR_FILENO);
    ::execl(pidlock_binary().c_str(), "pidlock", "run", file.c_str(), "--", "true", nullptr);
    return 127;
  });
  EXPECT_EQ(busy.wait(), 75);
}

TEST(CliDescriptors, AClosedStdoutIsNeitherTheRecordNorTheCommandsStdout) {
  TempDir dir;
  Child child =
      with_closed({STDOUT_FILENO}, {pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
                                    "echo hi; fd1=$(readlink /proc/$$/fd/1); echo \"$fd1\" >&2"});
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(child.drain_stderr(), "/dev/null\n");
  EXPECT_EQ(read_text(dir / "l"), std::to_string(child.pid()) + "\n");
}

TEST(CliDescriptors, AClosedStdinIsNeitherTheRecordNorTheCommandsStdin) {
  TempDir dir;
  Child child = with_closed({STDIN_FILENO}, {pidlock_binary(), "run", (dir / "l").string(), "--",
                                             "sh", "-c", "readlink /proc/$$/fd/0; cat"});
  EXPECT_EQ(child.drain_stdout(), "/dev/null\n");  // and cat read nothing: not the record
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(read_text(dir / "l"), std::to_string(child.pid()) + "\n");
}

TEST(CliDescriptors, AllThreeClosedGiveTheCommandDevNullThrice) {
  TempDir dir;
  const std::string out = (dir / "fds").string();
  Child child = with_closed(
      {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO},
      {pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
       "fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2); echo \"$fds\" > " + out});
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(read_text(out), "/dev/null\n/dev/null\n/dev/null\n");
  EXPECT_EQ(read_text(dir / "l"), std::to_string(child.pid()) + "\n");
}

}  // namespace
}  // namespace pidlock
