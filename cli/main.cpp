// pidlock: argument parsing and dispatch. The work is in run.cpp and status.cpp.
#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <cstdio>
#include <string_view>

#include "commands.hpp"

namespace {

using namespace pidlock::cli;

constexpr const char* usage_line =
    "usage: pidlock run [-n | -w SECONDS] [-E CODE] [-o | --exec] [--role NAME] [--no-mkdir] "
    "FILE -- COMMAND [ARG...]\n"
    "       pidlock run --etcd URL[,URL...] [--slots N] [--ttl SECONDS] [--on-lease-loss "
    "terminate|warn] [-n | -w SECONDS] [-E CODE] [--role NAME] NAME -- COMMAND [ARG...]\n"
    "       pidlock status [--json] FILE\n"
    "       pidlock status --etcd URL[,URL...] [--slots N] [--json] NAME\n"
    "       pidlock --help | --version\n";

#ifndef PIDLOCK_WITH_FLEET
// Fleet mode lives in pidlock-fleet, installed beside pidlock: only it links libcurl, whose
// dependencies would otherwise cost every plain `pidlock run` several milliseconds of dynamic
// linking (git keeps its HTTP transport in git-remote-http for the same reason).
bool wants_fleet(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& arg) {
    return arg == "--etcd" || arg.starts_with("--etcd=");
  });
}

int exec_fleet(char** argv) {
  std::array<char, 4096> self{};
  const ssize_t length = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (length > 0) {
    const std::string beside = std::filesystem::path(std::string(self.data(), static_cast<std::size_t>(length)))
                                   .replace_filename("pidlock-fleet");
    ::execv(beside.c_str(), argv);
  }
  ::execvp("pidlock-fleet", argv);
  fmt::print(stderr, "pidlock: fleet mode needs pidlock-fleet beside pidlock or on the PATH: {}\n",
             std::generic_category().message(errno));
  return exit_code::unavailable;
}
#endif

// Everything after the first "--" is the command, taken verbatim: its own options must never be
// read as ours.
std::vector<std::string> split_command(std::vector<std::string>& args) {
  const auto separator = std::find(args.begin(), args.end(), "--");
  if (separator == args.end()) return {};
  std::vector<std::string> command(separator + 1, args.end());
  args.erase(separator, args.end());
  return command;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> command = split_command(args);
  const bool had_separator = static_cast<int>(args.size()) != argc - 1;
#ifndef PIDLOCK_WITH_FLEET
  if (wants_fleet(args)) return exec_fleet(argv);
#endif

  CLI::App app{"pidlock: the exclusive PID lock for Linux. See pidlock(1).", "pidlock"};
  app.set_version_flag("-V,--version", "pidlock " + std::string(pidlock::version()));
  app.require_subcommand(1);

  RunRequest run_request;
  bool nonblock = false;
  bool close_mode = false;
  bool exec_mode = false;
  bool no_mkdir = false;
  std::vector<std::string> trailing;
  auto* run = app.add_subcommand("run", "Hold the lock on FILE while COMMAND runs");
  run->add_flag("-n,--nonblock", nonblock, "Fail at once if the lock is busy (the default)");
  auto* wait = run->add_option("-w,--wait,--timeout", run_request.wait_seconds,
                               "Wait up to SECONDS (fractions allowed) for a busy lock")
                   ->check(CLI::NonNegativeNumber);
  run->add_option("-E,--conflict-exit-code", run_request.busy_exit_code,
                  "Exit code when the lock is busy (default 75)")
      ->check(CLI::Range(0, 255));
  auto* close = run->add_flag("-o,--close", close_mode,
                              "Do not pass the lock on to COMMAND; only pidlock holds it");
  auto* exec = run->add_flag("--exec", exec_mode,
                             "Replace pidlock with COMMAND, which then holds the lock");
  run->add_option("--role", run_request.role, "Noun in the busy message (default: installer)");
  run->add_flag("--no-mkdir", no_mkdir, "Do not create missing parent directories");
  auto* run_etcd = run->add_option("--etcd", run_request.etcd,
                                   "Fleet mode: etcd endpoints (comma-separated); FILE is the lock's name")
                       ->delimiter(',');
  run->add_option("--slots", run_request.slots, "Fleet mode: how many holders at once (default 1)")
      ->check(CLI::Range(1, 1000000))
      ->needs(run_etcd);
  run->add_option("--ttl", run_request.ttl_seconds, "Fleet mode: lease TTL in seconds (default 5)")
      ->check(CLI::Range(1, 3600))
      ->needs(run_etcd);
  std::string lease_loss = "terminate";
  run->add_option("--on-lease-loss", lease_loss,
                  "Fleet mode: terminate (SIGTERM the command, exit 76) or warn")
      ->check(CLI::IsMember({"terminate", "warn"}))
      ->needs(run_etcd);
  run->add_option("FILE", run_request.file, "The lock file (the lock's name with --etcd)")->required();
  run->add_option("COMMAND", trailing, "The command to run, after --");
  wait->excludes(run->get_option("--nonblock"));
  close->excludes(exec);
  exec->excludes(run_etcd);  // the lease needs pidlock alive to keep it

  StatusRequest status_request;
  auto* status = app.add_subcommand("status", "Report who holds the lock on FILE");
  status->add_flag("--json", status_request.json, "Print one JSON object");
  auto* status_etcd = status->add_option("--etcd", status_request.etcd,
                                         "Fleet mode: etcd endpoints; FILE is the lock's name")
                          ->delimiter(',');
  status->add_option("--slots", status_request.slots, "Fleet mode: the lock's slot count")
      ->check(CLI::Range(1, 1000000))
      ->needs(status_etcd);
  status->add_option("FILE", status_request.file, "The lock file (the lock's name with --etcd)")->required();

  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "pidlock: {}\n{}", e.what(), usage_line);
    return exit_code::usage;
  }

  if (run->parsed()) {
    if (had_separator && !trailing.empty()) {
      fmt::print(stderr, "pidlock: unexpected arguments before --\n{}", usage_line);
      return exit_code::usage;
    }
    run_request.command = had_separator ? command : trailing;
    if (run_request.command.empty()) {
      fmt::print(stderr, "pidlock: run needs a COMMAND\n{}", usage_line);
      return exit_code::usage;
    }
    run_request.create_parents = !no_mkdir;
    run_request.warn_on_lease_loss = lease_loss == "warn";
    run_request.inheritance = exec_mode    ? Inheritance::exec
                              : close_mode ? Inheritance::close
                                           : Inheritance::inherit;
#ifdef PIDLOCK_WITH_FLEET
    if (!run_request.etcd.empty()) return pidlock::cli::run_fleet(run_request);
#endif
    return pidlock::cli::run(run_request);
  }
  if (had_separator) {
    fmt::print(stderr, "pidlock: status takes no command\n{}", usage_line);
    return exit_code::usage;
  }
#ifdef PIDLOCK_WITH_FLEET
  if (!status_request.etcd.empty()) return pidlock::cli::status_fleet(status_request);
#endif
  return pidlock::cli::status(status_request);
}
