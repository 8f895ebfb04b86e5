// pidlock's command line: what each subcommand declares, and the one parse. Numbers are read here,
// not by CLI11 (see below); where options end is words.cpp's.
#include "command_line.hpp"

#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "fleet_environment.hpp"
#include "process.hpp"
#include "words.hpp"

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

// Fleet mode's options, by their long names: any of them asks for fleet mode. They are declared
// only when a word of the command line names one (see needed_by), and each declaration is checked
// against this list.
constexpr std::array<std::string_view, 13> fleet_option_names{
    "--etcd",         "--fleet",         "--slots", "--prefix",
    "--cacert",       "--cert",          "--key",   "--insecure-skip-verify",
    "--user",         "--password-file", "--ttl",   "--kill-after",
    "--on-lease-loss"};

bool names_fleet_option(std::string_view word) {
  const auto name = word.substr(0, word.find('='));
  return std::find(fleet_option_names.begin(), fleet_option_names.end(), name) !=
         fleet_option_names.end();
}

// Which options to declare. CLI11 builds every option declared before it parses, and declaring
// them all is a fifth of a whole `pidlock run F -- true`; most runs need one subcommand's local
// options. What the words ask for decides, before the one parse: fleet mode's options when a word
// names one (a command's own --etcd after FILE costs them too, and means nothing: it is the
// command's), everything for help, the version, or a word that is no subcommand.
struct Declarations {
  bool run = true;
  bool status = true;
  bool fleet = true;
};

Declarations needed_by(const std::vector<std::string>& args) {
  const Declarations everything;
  if (args.empty() || (args.front() != "run" && args.front() != "status")) return everything;
  const auto asks_for_help = [](const std::string& word) {
    return word == "-h" || word == "--help" || word == "-V" || word == "--version";
  };
  if (std::any_of(args.begin(), args.end(), asks_for_help)) return everything;
  Declarations needed;
  needed.run = args.front() == "run";
  needed.status = !needed.run;
  needed.fleet = std::any_of(args.begin(), args.end(), names_fleet_option);
  return needed;
}

// The command line of pidlock and of pidlock-fleet, declared as `Declarations` say. The operands
// (FILE and COMMAND) are declared for --help only: CLI11 sees the options, split_words() finds
// the operands.
class CommandLine {
 public:
  explicit CommandLine(const Declarations& declared) {
    set_up_app();
    if (declared.run) add_run(declared.fleet);
    if (declared.status) add_status(declared.fleet);
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

  CLI::Option* declare_fleet_option(CLI::Option* option) {
    // A fleet option missing from fleet_option_names would be declared too late to be parsed.
    if (!names_fleet_option("--" + option->get_single_name())) std::abort();
    fleet_options_.push_back(option);
    return option->group("Fleet mode (FILE is the fleet lock's name)");
  }

  // Fleet mode's options, for run and status alike. Any of them asks for fleet mode.
  void add_fleet_options(CLI::App& sub, std::string_view slots_help) {
    FleetRequest& fleet = invocation_.fleet;
    auto fleet_option = [this](CLI::Option* option) { return declare_fleet_option(option); };
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
    auto fleet_option = [this](CLI::Option* option) { return declare_fleet_option(option); };
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

int usage_error(std::string_view message) {
  const CommandLine everything{Declarations{}};
  say(stderr, "pidlock: {}\n{}", message, everything.synopsis());
  return exit_code::usage;
}

// Help, the version, or a usage error: the exit code once it has been said; nothing otherwise.
std::optional<int> parse(CommandLine& cli, std::vector<std::string> words) {
  std::reverse(words.begin(), words.end());  // CLI11 takes them reversed
  try {
    cli.app.parse(words);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != static_cast<int>(CLI::ExitCodes::Success)) {
      return usage_error(e.what());
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

}  // namespace

// What the parsed options cannot say alone: for fleet mode, the options that do not go with it,
// and the environment's settings. The one check of a fleet command line.
std::optional<std::string> fleet_mode_problem(const CommandLine& cli, Subcommand subcommand,
                                              Invocation& invocation) {
  if (!invocation.fleet.enabled) return std::nullopt;
  if (auto problem = cli.fleet_problem(subcommand)) return problem;
  return take_environment(invocation.fleet,
                          [&cli](const std::string& option) { return cli.given(option); });
}

std::variant<Invocation, int> parse_command_line(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  CommandLine cli(needed_by(args));
  Words words = split_words(cli.app, args);
  if (words.unknown_subcommand) {
    return usage_error(fmt::format("unknown command '{}'", *words.unknown_subcommand));
  }
  if (const auto said = parse(cli, words.for_cli11)) return *said;
  const Subcommand subcommand =
      cli.run != nullptr && cli.run->parsed() ? Subcommand::run : Subcommand::status;
  if (auto problem = operand_problem(subcommand, words)) return usage_error(*problem);
  Invocation invocation = cli.invocation(subcommand, words);
  if (auto problem = fleet_mode_problem(cli, subcommand, invocation)) {
    return usage_error(*problem);
  }
  invocation.fleet.argv.assign(argv, argv + argc);
  return invocation;
}

}  // namespace pidlock::cli
