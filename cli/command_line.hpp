// pidlock's command line: what each subcommand accepts, and how the words are cut. flock(1)'s
// rule: options up to FILE, then the command, verbatim.
#pragma once

#include <variant>

#include "commands.hpp"

namespace pidlock::cli {

enum class Subcommand { run, status };

struct Invocation {
  Subcommand subcommand = Subcommand::run;
  RunRequest run;
  StatusRequest status;
  FleetRequest fleet;  // fleet.endpoints empty: local mode
};

// What the command line asks for, or the exit code once help, the version or a usage error has
// been printed.
std::variant<Invocation, int> parse_command_line(int argc, char** argv);

}  // namespace pidlock::cli
