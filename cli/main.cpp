// pidlock: argument parsing and dispatch. The work is in run.cpp and status.cpp.
#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>

#include "commands.hpp"
#include "process.hpp"

namespace {

using namespace pidlock::cli;

constexpr const char* usage_line =
    "usage: pidlock run [-n | -w SECONDS] [-E CODE] [-o | --exec] [--role NAME] [--no-mkdir] "
    "FILE [--] COMMAND [ARG...]\n"
    "       pidlock run --etcd URL[,URL...] [--slots N] [--ttl SECONDS] [--on-lease-loss "
    "terminate|warn] [-n | -w SECONDS] [-E CODE] [--role NAME] NAME [--] COMMAND [ARG...]\n"
    "       pidlock status [--json] FILE\n"
    "       pidlock status --etcd URL[,URL...] [--slots N] [--json] NAME\n"
    "       pidlock --help | --version\n";

int usage_error(std::string_view message) {
  say(stderr, "pidlock: {}\n{}", message, usage_line);
  return exit_code::usage;
}

// Numbers are read here rather than by CLI11, so that a bad one is reported with the option's
// name, its range and the text as given: CLI11 takes "nan" for a number and prints DBL_MAX in
// full when it reports a range.
[[noreturn]] void refuse(const std::string& label, const std::string& expected,
                         const std::string& text) {
  throw CLI::ValidationError(label, fmt::format("expected {}, got '{}'", expected, text));
}

double read_seconds(const std::string& label, const std::string& text) {
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc{} || stop != end || !std::isfinite(value) || value < 0 ||
      value > max_wait_seconds) {
    refuse(label, fmt::format("seconds from 0 to {} (a year)", static_cast<long>(max_wait_seconds)),
           text);
  }
  return value;
}

int read_whole(const std::string& label, const std::string& text, int low, int high,
               std::string_view what) {
  long long value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc{} || stop != end || value < low || value > high) {
    refuse(label, fmt::format("{} from {} to {}", what, low, high), text);
  }
  return static_cast<int>(value);
}

CLI::Option* add_seconds(CLI::App& app, const std::string& names, const std::string& label,
                         double& target, const std::string& description) {
  return app
      .add_option_function<std::string>(
          names, [&target, label](const std::string& text) { target = read_seconds(label, text); },
          description)
      ->type_name("SECONDS");
}

CLI::Option* add_whole(CLI::App& app, const std::string& names, const std::string& label,
                       int& target, int low, int high, std::string_view what,
                       const std::string& description, const std::string& type_name = "N") {
  return app
      .add_option_function<std::string>(
          names,
          [&target, label, low, high, what](const std::string& text) {
            target = read_whole(label, text, low, high, what);
          },
          description)
      ->type_name(type_name);
}

// Help names the operands as the synopsis does: FILE [--] COMMAND [ARG...].
class OperandFormatter : public CLI::Formatter {
 public:
  std::string make_option_usage(const CLI::Option* operand) const override {
    const bool repeats = operand->get_expected_max() >= CLI::detail::expected_max_vector_size;
    return repeats ? "[--] " + operand->get_name() + " [ARG...]" : operand->get_name();
  }
};

// The command line of pidlock and of pidlock-fleet. The operands (FILE and COMMAND) are declared
// for --help only: CLI11 sees the options, split_words() finds the operands.
class CommandLine {
 public:
  CommandLine() {
    app.formatter(std::make_shared<OperandFormatter>());
    app.set_version_flag("-V,--version", "pidlock " + std::string(pidlock::version()));
    app.require_subcommand(1);
    add_run();
    add_status();
  }
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  CLI::App app{"pidlock: the exclusive PID lock for Linux. See pidlock(1).", "pidlock"};
  CLI::App* run = nullptr;
  CLI::App* status = nullptr;
  std::array<const CLI::Option*, 2> etcd{};  // run's and status's
  RunRequest run_request;
  StatusRequest status_request;
  bool close_mode = false;
  bool exec_mode = false;
  bool no_mkdir = false;
  std::string lease_loss = "terminate";

 private:
  bool nonblock_ = false;  // the default anyway; given only to be refused with -w
  bool exclusive_ = false;  // the default anyway; given only to be refused with -s

  void add_run() {
    run = app.add_subcommand("run", "Hold the lock on FILE while COMMAND runs");
    auto* nonblock =
        run->add_flag("-n,--nonblock", nonblock_, "Fail at once if the lock is busy (the default)");
    auto* wait =
        add_seconds(*run, "-w,--wait,--timeout", "-w", run_request.wait_seconds,
                    "Wait up to SECONDS (fractions allowed, at most a year) for a busy lock");
    add_whole(*run, "-E,--conflict-exit-code", "-E", run_request.busy_exit_code, 0, 255,
              "an exit code", "Exit code when the lock is busy (default 75)", "CODE");
    auto* shared = run->add_flag("-s,--shared", run_request.shared,
                                 "Take a shared (reader) lock: readers share, a writer excludes all");
    run->add_flag("--defer-to-writers", run_request.defer_to_writers,
                  "With -s: wait behind a writer that waits, instead of keeping it out")
        ->needs(shared);
    auto* exclusive = run->add_flag("-x,-e,--exclusive", exclusive_,
                                    "Take the exclusive (writer) lock (the default)");
    auto* close = run->add_flag("-o,--close", close_mode,
                                "Do not pass the lock on to COMMAND; only pidlock holds it");
    auto* exec = run->add_flag("--exec", exec_mode,
                               "Replace pidlock with COMMAND, which then holds the lock");
    run->add_option("--role", run_request.role, "Noun in the busy message (default: installer)");
    run->add_flag("--no-mkdir", no_mkdir, "Do not create missing parent directories");
    auto* run_etcd =
        run->add_option("--etcd", run_request.etcd,
                        "Fleet mode: etcd endpoints (comma-separated); FILE is the lock's name")
            ->delimiter(',');
    etcd[0] = run_etcd;
    add_whole(*run, "--slots", "--slots", run_request.slots, 1, 1000000, "a slot count",
              "Fleet mode: how many holders at once (default 1)")
        ->needs(run_etcd);
    add_whole(*run, "--ttl", "--ttl", run_request.ttl_seconds, 1, 3600, "whole seconds",
              "Fleet mode: lease TTL in seconds (default 5)")
        ->needs(run_etcd);
    add_seconds(*run, "--kill-after", "--kill-after", run_request.kill_after_seconds,
                "Fleet mode: after SIGTERM on lease loss, SIGKILL the command this much later "
                "(default: just before etcd could expire the lease)")
        ->needs(run_etcd);
    run->add_option("--on-lease-loss", lease_loss,
                    "Fleet mode: terminate (SIGTERM the command, exit 76) or warn")
        ->check(CLI::IsMember({"terminate", "warn"}))
        ->needs(run_etcd);
    run->add_option("FILE", run_request.file, "The lock file (the lock's name with --etcd)")
        ->type_name("");
    run->add_option("COMMAND", run_request.command,
                    "The command and its arguments: everything after FILE, verbatim")
        ->type_name("");
    wait->excludes(nonblock);
    shared->excludes(exclusive);
    shared->excludes(run_etcd);  // fleet slots have no readers
    close->excludes(exec);
    exec->excludes(run_etcd);  // the lease needs pidlock alive to keep it
  }

  void add_status() {
    status = app.add_subcommand("status", "Report who holds the lock on FILE");
    status->add_flag("--json", status_request.json, "Print one JSON object");
    auto* status_etcd = status
                            ->add_option("--etcd", status_request.etcd,
                                         "Fleet mode: etcd endpoints; FILE is the lock's name")
                            ->delimiter(',');
    etcd[1] = status_etcd;
    add_whole(*status, "--slots", "--slots", status_request.slots, 1, 1000000, "a slot count",
              "Fleet mode: the lock's slot count")
        ->needs(status_etcd);
    status->add_option("FILE", status_request.file, "The lock file (the lock's name with --etcd)")
        ->type_name("");
  }
};

// The command line cut where flock(1) and getopt's "+" cut it: options up to the first operand
// (FILE, or NAME in fleet mode), then everything verbatim as the command. A "--" before the
// operand ends the options (the operand may then start with '-'); one right after it is the
// customary separator and is dropped; any other belongs to the command.
struct Words {
  std::vector<std::string> for_cli11;       // the subcommand, and the options with their values
  std::vector<const CLI::Option*> options;  // the options named in them
  std::optional<std::string> operand;
  std::vector<std::string> command;
  std::optional<std::string> unknown_subcommand;
};

bool looks_like_option(const std::string& word) { return word.size() > 1 && word.front() == '-'; }

bool takes_operand(const CLI::App& app) {
  return !app.get_options([](const CLI::Option* option) { return option->get_positional(); })
              .empty();
}

const CLI::App* subcommand_named(const CLI::App& app, const std::string& word) {
  const auto found =
      app.get_subcommands([&word](const CLI::App* sub) { return sub->check_name(word); });
  return found.empty() ? nullptr : found.front();
}

// How many of the words after `word` are its values, by CLI11's own count of the values each
// option expects, less one given in the word itself (--wait=5, -w5). A cluster of short options
// (-no) ends with the first that takes a value. An unknown option takes none: CLI11 reports it.
std::size_t values_after(const CLI::App& app, const std::string& word,
                         std::vector<const CLI::Option*>& named) {
  const auto expected = [](const CLI::Option* option) {
    return static_cast<std::size_t>(std::max(0, option->get_items_expected_min()));
  };
  if (word.starts_with("--")) {
    const auto equals = word.find('=');
    const CLI::Option* option = app.get_option_no_throw(word.substr(0, equals));
    if (option == nullptr) return 0;
    named.push_back(option);
    const std::size_t inline_values = equals == std::string::npos ? 0 : 1;
    return expected(option) - std::min(expected(option), inline_values);
  }
  for (std::size_t at = 1; at < word.size(); ++at) {
    const CLI::Option* option = app.get_option_no_throw(std::string{'-', word[at]});
    if (option == nullptr) return 0;
    named.push_back(option);
    if (expected(option) > 0) {
      const std::size_t inline_values = at + 1 < word.size() ? 1 : 0;
      return expected(option) - std::min(expected(option), inline_values);
    }
  }
  return 0;
}

Words split_words(const CLI::App& root, const std::vector<std::string>& args) {
  Words words;
  const CLI::App* app = &root;
  std::size_t at = 0;
  while (at < args.size()) {
    const std::string& word = args[at];
    if (word == "--" && takes_operand(*app)) {
      if (++at < args.size()) words.operand = args[at++];
      break;
    }
    if (looks_like_option(word)) {
      const std::size_t end =
          std::min(args.size(), at + 1 + values_after(*app, word, words.options));
      words.for_cli11.insert(words.for_cli11.end(), args.begin() + static_cast<std::ptrdiff_t>(at),
                             args.begin() + static_cast<std::ptrdiff_t>(end));
      at = end;
      continue;
    }
    if (takes_operand(*app)) {
      words.operand = word;
      ++at;
      break;
    }
    const CLI::App* sub = subcommand_named(*app, word);
    if (sub == nullptr) {
      words.unknown_subcommand = word;
      return words;
    }
    words.for_cli11.push_back(word);
    app = sub;
    ++at;
  }
  if (words.operand && at < args.size() && args[at] == "--") ++at;
  words.command.assign(args.begin() + static_cast<std::ptrdiff_t>(at), args.end());
  return words;
}

// Help, the version, or a usage error: the exit code once it has been said; nothing otherwise.
std::optional<int> parse(CLI::App& app, std::vector<std::string> words) {
  std::reverse(words.begin(), words.end());  // CLI11 takes them reversed
  try {
    app.parse(words);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != static_cast<int>(CLI::ExitCodes::Success))
      return usage_error(e.what());
    std::ostringstream out;
    std::ostringstream err;
    const int code = app.exit(e, out, err);
    say(stdout, "{}", out.str());
    say(stderr, "{}", err.str());
    return code;
  }
  return std::nullopt;
}

#ifndef PIDLOCK_WITH_FLEET
// Fleet mode lives in pidlock-fleet, installed beside pidlock: only it links libcurl, whose
// dependencies would otherwise cost every plain `pidlock run` several milliseconds of dynamic
// linking (git keeps its HTTP transport in git-remote-http for the same reason). Only pidlock's
// own options count: a command's --etcd is the command's.
bool wants_fleet(const CommandLine& cli, const Words& words) {
  return std::any_of(words.options.begin(), words.options.end(), [&cli](const CLI::Option* option) {
    return std::find(cli.etcd.begin(), cli.etcd.end(), option) != cli.etcd.end();
  });
}

int exec_fleet(char** argv) {
  std::array<char, 4096> self{};
  const ssize_t length = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (length > 0) {
    const std::string beside =
        std::filesystem::path(std::string(self.data(), static_cast<std::size_t>(length)))
            .replace_filename("pidlock-fleet");
    ::execv(beside.c_str(), argv);
  }
  ::execvp("pidlock-fleet", argv);
  say(stderr,
      "pidlock: fleet mode needs the pidlock-fleet package: apt-get install pidlock-fleet ({})\n",
      errno_text(errno));
  return exit_code::unavailable;
}
#endif

int start_run(CommandLine& cli, Words& words) {
  if (!words.operand) return usage_error("run needs FILE and a COMMAND");
  if (words.command.empty()) return usage_error("run needs a COMMAND after FILE");
  RunRequest& request = cli.run_request;
  request.file = std::move(*words.operand);
  request.command = std::move(words.command);
  request.create_parents = !cli.no_mkdir;
  request.warn_on_lease_loss = cli.lease_loss == "warn";
  request.inheritance = cli.exec_mode    ? Inheritance::exec
                        : cli.close_mode ? Inheritance::close
                                         : Inheritance::inherit;
#ifdef PIDLOCK_WITH_FLEET
  if (!request.etcd.empty()) return run_fleet(request);
#endif
  return run(request);
}

int start_status(CommandLine& cli, Words& words) {
  if (!words.operand) return usage_error("status needs FILE");
  if (!words.command.empty()) {
    return usage_error(fmt::format("status takes nothing after FILE (options go before it): '{}'",
                                   words.command.front()));
  }
  StatusRequest& request = cli.status_request;
  request.file = std::move(*words.operand);
#ifdef PIDLOCK_WITH_FLEET
  if (!request.etcd.empty()) return status_fleet(request);
#endif
  return status(request);
}

int dispatch(int argc, char** argv) {
  CommandLine cli;
  Words words = split_words(cli.app, std::vector<std::string>(argv + 1, argv + argc));
#ifndef PIDLOCK_WITH_FLEET
  if (wants_fleet(cli, words)) return exec_fleet(argv);
#endif
  if (words.unknown_subcommand) {
    return usage_error(fmt::format("unknown command '{}'", *words.unknown_subcommand));
  }
  if (const auto said = parse(cli.app, words.for_cli11)) return *said;
  return cli.run->parsed() ? start_run(cli, words) : start_status(cli, words);
}

}  // namespace

int main(int argc, char** argv) {
  // First of all: a closed stdin, stdout or stderr would be the next file opened.
  if (!fill_closed_standard_descriptors()) return exit_code::os_error;
  try {
    return dispatch(argc, argv);
  } catch (const std::system_error& e) {
    // Every print goes through say(), which never throws; this only keeps a stray library
    // exception from becoming an abort. Output that cannot be written is an I/O error.
    say(stderr, "pidlock: {}\n", e.what());
    return exit_code::io_error;
  }
}
