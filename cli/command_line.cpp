// pidlock's command line. Numbers and the operands are read here, not by CLI11: see below.
#include "command_line.hpp"

#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "process.hpp"

namespace pidlock::cli {
namespace {

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

// The command line cut where flock(1) and getopt's "+" cut it: options up to the first operand
// (FILE, or NAME in fleet mode), then everything verbatim as the command. A "--" before the
// operand ends the options (the operand may then start with '-'); one right after it is the
// customary separator and is dropped; any other belongs to the command.
struct Words {
  std::vector<std::string> for_cli11;  // the subcommand, and the options with their values
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
std::size_t values_after(const CLI::App& app, const std::string& word) {
  const auto expected = [](const CLI::Option* option) {
    return static_cast<std::size_t>(std::max(0, option->get_items_expected_min()));
  };
  if (word.starts_with("--")) {
    const auto equals = word.find('=');
    const CLI::Option* option = app.get_option_no_throw(word.substr(0, equals));
    if (option == nullptr) return 0;
    const std::size_t inline_values = equals == std::string::npos ? 0 : 1;
    return expected(option) - std::min(expected(option), inline_values);
  }
  for (std::size_t at = 1; at < word.size(); ++at) {
    const CLI::Option* option = app.get_option_no_throw(std::string{'-', word[at]});
    if (option == nullptr) return 0;
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
      const std::size_t end = std::min(args.size(), at + 1 + values_after(*app, word));
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

// The command line of pidlock and of pidlock-fleet, one setup per subcommand. The operands
// (FILE and COMMAND) are declared for --help only: CLI11 sees the options, split_words() finds
// the operands.
class CommandLine {
 public:
  // Everything: both subcommands with all their options, fleet mode's included.
  CommandLine() {
    set_up_app();
    add_run(true);
    add_status(true);
  }

  // One subcommand and its local options only. CLI11 builds every option declared before it
  // parses, and declaring all of them was a fifth of a whole `pidlock run F -- true`; this is
  // what most runs need. Whatever it cannot parse (an option it lacks: every fleet option, a
  // mistake) is parsed again with everything declared, and checked there, in one place.
  explicit CommandLine(Subcommand only) {
    set_up_app();
    if (only == Subcommand::run) {
      add_run(false);
    } else {
      add_status(false);
    }
  }
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // The usage lines, from the subcommands' own declarations.
  std::string synopsis() const {
    std::string text;
    for (const CLI::App* sub : {run, status}) {
      if (sub == nullptr) continue;
      text += text.empty() ? "usage: " : "       ";
      text += "pidlock " + sub->get_name() + " [OPTIONS]";
      for (const CLI::Option* operand : operands(*sub)) {
        text += " " + formatter_->make_option_usage(operand);
      }
      text += "\n";
    }
    return text + "       pidlock --help | --version\n";
  }

  // Completes the invocation with what split_words() found and the flags imply.
  Invocation invocation(Subcommand subcommand, Words& words) {
    invocation_.subcommand = subcommand;
    invocation_.run.create_parents = !no_mkdir_;
    invocation_.run.inheritance = exec_mode_    ? Inheritance::exec
                                  : close_mode_ ? Inheritance::close
                                                : Inheritance::inherit;
    invocation_.fleet.warn_on_lease_loss = lease_loss_ == "warn";
    invocation_.fleet.enabled = fleet_asked();
    if (words.operand) {
      invocation_.run.file = *words.operand;
      invocation_.status.file = *words.operand;
    }
    invocation_.run.command = std::move(words.command);
    return invocation_;
  }

  // Whether the option named `name` (of the subcommand parsed) was given on the command line.
  bool given(const std::string& name) const {
    const CLI::App* sub = run != nullptr && run->parsed() ? run : status;
    const CLI::Option* option = sub->get_option_no_throw(name);
    return option != nullptr && option->count() > 0;
  }

  bool fleet_asked() const {
    return std::any_of(fleet_options_.begin(), fleet_options_.end(),
                       [](const CLI::Option* option) { return option->count() > 0; });
  }

  // What the options say that CLI11 cannot: combinations with fleet mode.
  std::optional<std::string> fleet_problem(Subcommand subcommand) const {
    if (!fleet_asked() || subcommand != Subcommand::run) return std::nullopt;
    if (shared_->count() > 0) return "-s: fleet locks have no readers (a slot is exclusive)";
    if (exec_->count() > 0) return "--exec: in fleet mode pidlock must stay to renew the lease";
    return std::nullopt;
  }

  CLI::App app{"pidlock: the exclusive PID lock for Linux. See pidlock(1).", "pidlock"};
  CLI::App* run = nullptr;
  CLI::App* status = nullptr;

 private:
  std::shared_ptr<OperandFormatter> formatter_ = std::make_shared<OperandFormatter>();
  Invocation invocation_;
  bool close_mode_ = false;
  bool exec_mode_ = false;
  bool no_mkdir_ = false;
  std::string lease_loss_ = "terminate";
  std::vector<CLI::Option*> fleet_options_;
  bool fleet_flag_ = false;  // counted, like every fleet option
  const CLI::Option* shared_ = nullptr;
  const CLI::Option* exec_ = nullptr;
  bool nonblock_ = false;   // the default anyway; given only to be refused with -w
  bool exclusive_ = false;  // the default anyway; given only to be refused with -s

  void set_up_app() {
    app.formatter(formatter_);
    app.set_version_flag("-V,--version", "pidlock " + std::string(pidlock::version()));
    app.require_subcommand(1);
    // An option given twice means its last value, as in most commands (and in flock(1)).
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }

  static std::vector<const CLI::Option*> operands(const CLI::App& sub) {
    return sub.get_options([](const CLI::Option* option) { return option->get_positional(); });
  }

  // Fleet mode's options, for run and status alike. Any of them asks for fleet mode.
  void add_fleet_options(CLI::App& sub, std::string_view slots_help) {
    FleetRequest& fleet = invocation_.fleet;
    auto fleet_option = [this](CLI::Option* option) {
      fleet_options_.push_back(option);
      return option->group("Fleet mode (FILE is the fleet lock's name)");
    };
    fleet_option(sub.add_option("--etcd", fleet.endpoints,
                                "etcd endpoints, comma-separated (default: PIDLOCK_ETCD_ENDPOINTS)")
                     ->delimiter(',')
                     ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
                     ->type_name("URL[,URL...]"));
    fleet_option(sub.add_flag("--fleet", fleet_flag_,
                              "Fleet mode with the endpoints in PIDLOCK_ETCD_ENDPOINTS"));
    fleet_option(add_whole(sub, "--slots", "--slots", fleet.slots, 1, 1000000, "a slot count",
                           std::string(slots_help)));
    fleet_option(sub.add_option("--prefix", fleet.prefix,
                                "Where fleet locks live in etcd's key space (default: "
                                "PIDLOCK_ETCD_PREFIX, or pidlock/)")
                     ->type_name("PREFIX"));
    fleet_option(
        sub.add_option("--cacert", fleet.cacert,
                       "Verify etcd's certificate with this CA bundle (PIDLOCK_ETCD_CACERT)")
            ->type_name("FILE"));
    fleet_option(
        sub.add_option("--cert", fleet.cert, "Client certificate for etcd (PIDLOCK_ETCD_CERT)")
            ->type_name("FILE"));
    fleet_option(sub.add_option("--key", fleet.key, "Client certificate's key (PIDLOCK_ETCD_KEY)")
                     ->type_name("FILE"));
    fleet_option(sub.add_flag("--insecure-skip-verify", fleet.insecure_skip_verify,
                              "Do not verify etcd's certificate or host name (warns; tests only)"));
    fleet_option(sub.add_option("--user", fleet.user,
                                "etcd user name (PIDLOCK_ETCD_USER); the password comes from "
                                "--password-file or PIDLOCK_ETCD_PASSWORD, never from here")
                     ->type_name("NAME"));
    fleet_option(sub.add_option("--password-file", fleet.password_file,
                                "Read the etcd password from the first line of FILE")
                     ->type_name("FILE"));
  }

  // How a fleet slot's holder keeps it: run's own fleet options.
  void add_holder_options(CLI::App& sub) {
    FleetRequest& fleet = invocation_.fleet;
    auto fleet_option = [this](CLI::Option* option) {
      fleet_options_.push_back(option);
      return option->group("Fleet mode (FILE is the fleet lock's name)");
    };
    fleet_option(add_whole(sub, "--ttl", "--ttl", fleet.ttl_seconds, 1, 3600, "whole seconds",
                           "Lease TTL in seconds (default 5)", "SECONDS"));
    fleet_option(add_seconds(sub, "--kill-after", "--kill-after", fleet.kill_after_seconds,
                             "After SIGTERM on lease loss, SIGKILL the command this much later "
                             "(default: just before etcd could expire the lease)"));
    fleet_option(sub.add_option("--on-lease-loss", lease_loss_,
                                "terminate (SIGTERM the command, exit 76) or warn")
                     ->check(
                         [](const std::string& value) -> std::string {
                           return value == "terminate" || value == "warn"
                                      ? ""
                                      : "expected terminate or warn, got '" + value + "'";
                         },
                         "")
                     ->type_name("terminate|warn"));
  }

  void add_run(bool with_fleet_options) {
    RunRequest& request = invocation_.run;
    run = app.add_subcommand("run", "Hold the lock on FILE while COMMAND runs");
    auto* nonblock =
        run->add_flag("-n,--nonblock", nonblock_, "Fail at once if the lock is busy (the default)");
    auto* wait =
        add_seconds(*run, "-w,--wait,--timeout", "-w", request.wait_seconds,
                    "Wait up to SECONDS (fractions allowed, at most a year) for a busy lock");
    add_whole(*run, "-E,--conflict-exit-code", "-E", request.busy_exit_code, 0, 255, "an exit code",
              "Exit code when the lock is busy (default 75)", "CODE");
    auto* shared =
        run->add_flag("-s,--shared", request.shared,
                      "Take a shared (reader) lock: readers share, a writer excludes all");
    run->add_flag("--defer-to-writers", request.defer_to_writers,
                  "With -s: wait behind a writer that waits, instead of keeping it out")
        ->needs(shared);
    auto* exclusive = run->add_flag("-x,-e,--exclusive", exclusive_,
                                    "Take the exclusive (writer) lock (the default)");
    auto* close = run->add_flag("-o,--close", close_mode_,
                                "Do not pass the lock on to COMMAND: pidlock stays and holds it");
    auto* exec = run->add_flag("--exec", exec_mode_,
                               "pidlock becomes COMMAND, which holds the lock (the default)");
    run->add_option("--role", request.role, "Noun in the busy message (default: installer)")
        ->type_name("NAME");
    run->add_flag("--no-mkdir", no_mkdir_, "Do not create missing parent directories");
    if (with_fleet_options) {
      add_fleet_options(*run, "How many holders at once (default 1)");
      add_holder_options(*run);
    }
    run->add_option("FILE", request.file, "The lock file (the lock's name with --etcd)")
        ->type_name("");
    run->add_option("COMMAND", request.command,
                    "The command and its arguments: everything after FILE, verbatim")
        ->type_name("");
    wait->excludes(nonblock);
    shared->excludes(exclusive);
    close->excludes(exec);
    shared_ = shared;
    exec_ = exec;
  }

  void add_status(bool with_fleet_options) {
    status = app.add_subcommand("status", "Report who holds the lock on FILE");
    status->add_flag("--json", invocation_.status.json, "Print one JSON object");
    if (with_fleet_options) {
      add_fleet_options(*status, "The lock's slot count (default: as its holders recorded)");
    }
    status
        ->add_option("FILE", invocation_.status.file, "The lock file (the lock's name with --etcd)")
        ->type_name("");
  }
};

int usage_error(const CommandLine& cli, std::string_view message) {
  say(stderr, "pidlock: {}\n{}", message, cli.synopsis());
  return exit_code::usage;
}

// Help, the version, or a usage error: the exit code once it has been said; nothing otherwise.
std::optional<int> parse(CommandLine& cli, std::vector<std::string> words) {
  std::reverse(words.begin(), words.end());  // CLI11 takes them reversed
  try {
    cli.app.parse(words);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != static_cast<int>(CLI::ExitCodes::Success)) {
      return usage_error(cli, e.what());
    }
    std::ostringstream out;
    std::ostringstream err;
    const int code = cli.app.exit(e, out, err);
    say(stdout, "{}", out.str());
    say(stderr, "{}", err.str());
    return code;
  }
  return std::nullopt;
}

// What is missing or left over once the options are parsed.
std::optional<std::string> operand_problem(Subcommand subcommand, const Words& words) {
  if (subcommand == Subcommand::run) {
    if (!words.operand) return "run needs FILE and a COMMAND";
    if (words.command.empty()) return "run needs a COMMAND after FILE";
    return std::nullopt;
  }
  if (!words.operand) return "status needs FILE";
  if (!words.command.empty()) {
    return fmt::format("status takes nothing after FILE (options go before it): '{}'",
                       words.command.front());
  }
  return std::nullopt;
}

const char* environment(const char* name) {
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): one thread here
  return value != nullptr && *value != '\0' ? value : nullptr;
}

// Fleet settings that the command line left unset, from the environment, as etcdctl takes
// ETCDCTL_*: so that a fleet's hosts can share one configuration. The password is not read here
// but where it is used (fleet.cpp), and --insecure-skip-verify has no variable: turning off
// verification must be visible on the command line.
std::optional<std::string> take_environment(const CommandLine& cli, FleetRequest& fleet) {
  if (fleet.endpoints.empty()) {
    if (const char* endpoints = environment("PIDLOCK_ETCD_ENDPOINTS")) {
      std::string_view rest = endpoints;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        if (comma != 0) fleet.endpoints.push_back(std::string(rest.substr(0, comma)));
        rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 1);
      }
    }
    if (fleet.endpoints.empty()) {
      return "fleet mode needs etcd endpoints: --etcd URL[,URL...] or PIDLOCK_ETCD_ENDPOINTS";
    }
  }
  const auto take = [&cli](const std::string& option, const char* variable, std::string& value) {
    if (cli.given(option)) return;
    if (const char* from_environment = environment(variable)) value = from_environment;
  };
  take("--prefix", "PIDLOCK_ETCD_PREFIX", fleet.prefix);
  take("--cacert", "PIDLOCK_ETCD_CACERT", fleet.cacert);
  take("--cert", "PIDLOCK_ETCD_CERT", fleet.cert);
  take("--key", "PIDLOCK_ETCD_KEY", fleet.key);
  take("--user", "PIDLOCK_ETCD_USER", fleet.user);
  if (fleet.user.find(':') != std::string::npos) {
    return std::string(cli.given("--user") ? "--user" : "PIDLOCK_ETCD_USER") +
           " takes a name only: a password on the command line is readable by every user (ps); "
           "use --password-file FILE or PIDLOCK_ETCD_PASSWORD";
  }
  return std::nullopt;
}

}  // namespace

// The invoked subcommand's local options only, saying nothing: an invocation of the local lock
// when that is all the command line asks for, nothing when it needs more (a fleet option, which
// this parser does not declare; help; a mistake), to be parsed and checked in full.
std::optional<Invocation> parse_locally(const std::vector<std::string>& args) {
  if (args.empty() || (args.front() != "run" && args.front() != "status")) return std::nullopt;
  const Subcommand subcommand = args.front() == "run" ? Subcommand::run : Subcommand::status;
  CommandLine cli(subcommand);
  Words words = split_words(cli.app, args);
  if (words.unknown_subcommand || operand_problem(subcommand, words)) return std::nullopt;
  std::reverse(words.for_cli11.begin(), words.for_cli11.end());  // CLI11 takes them reversed
  try {
    cli.app.parse(words.for_cli11);
  } catch (const CLI::ParseError&) {  // help and the version too: they list everything
    return std::nullopt;
  }
  // This parser declares no fleet option; should one ever be, fleet mode is still checked in full.
  if (cli.fleet_asked()) return std::nullopt;
  return cli.invocation(subcommand, words);
}

// What the parsed options cannot say alone: for fleet mode, the options that do not go with it,
// and the environment's settings. The one check of a fleet command line.
std::optional<std::string> fleet_mode_problem(const CommandLine& cli, Subcommand subcommand,
                                              Invocation& invocation) {
  if (!invocation.fleet.enabled) return std::nullopt;
  if (auto problem = cli.fleet_problem(subcommand)) return problem;
  return take_environment(cli, invocation.fleet);
}

std::variant<Invocation, int> parse_command_line(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (auto invocation = parse_locally(args)) {
    invocation->fleet.argv.assign(argv, argv + argc);
    return std::move(*invocation);
  }
  CommandLine cli;
  Words words = split_words(cli.app, args);
  if (words.unknown_subcommand) {
    return usage_error(cli, fmt::format("unknown command '{}'", *words.unknown_subcommand));
  }
  if (const auto said = parse(cli, words.for_cli11)) return *said;
  const Subcommand subcommand = cli.run->parsed() ? Subcommand::run : Subcommand::status;
  if (auto problem = operand_problem(subcommand, words)) return usage_error(cli, *problem);
  Invocation invocation = cli.invocation(subcommand, words);
  if (auto problem = fleet_mode_problem(cli, subcommand, invocation)) {
    return usage_error(cli, *problem);
  }
  invocation.fleet.argv.assign(argv, argv + argc);
  return invocation;
}

}  // namespace pidlock::cli
