// pidlock: the command. Parsing is in command_line.cpp, the subcommands in run.cpp, status.cpp
// and, for fleet mode, fleet.cpp (pidlock-fleet) or fleet_handoff.cpp (pidlock).
#include <system_error>
#include <variant>

#include "command_line.hpp"
#include "process.hpp"

namespace {

using namespace pidlock::cli;

int dispatch(const Invocation& invocation) {
  const bool fleet = invocation.fleet.enabled;
  switch (invocation.subcommand) {
    case Subcommand::run:
      return fleet ? run_fleet(invocation.run, invocation.fleet) : run(invocation.run);
    case Subcommand::status:
      return fleet ? status_fleet(invocation.status, invocation.fleet) : status(invocation.status);
  }
  return exit_code::software;
}

}  // namespace

int main(int argc, char** argv) {
  // First of all: a closed stdin, stdout or stderr would be the next file opened.
  if (!fill_closed_standard_descriptors()) return exit_code::os_error;
  try {
    auto parsed = parse_command_line(argc, argv);
    if (const int* said = std::get_if<int>(&parsed)) return *said;
    return dispatch(std::get<Invocation>(parsed));
  } catch (const std::system_error& e) {
    // Every print goes through say(), which never throws; this only keeps a stray library
    // exception from becoming an abort. Output that cannot be written is an I/O error.
    say(stderr, "pidlock: {}\n", e.what());
    return exit_code::io_error;
  }
}
