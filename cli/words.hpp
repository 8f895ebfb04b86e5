// Where pidlock's options end and the command begins: flock(1)'s cut, and getopt's with "+".
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

namespace pidlock::cli {

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

// Cuts `args` (after argv[0]) by what `root` declares: its subcommands, and each option's count
// of values.
Words split_words(const CLI::App& root, const std::vector<std::string>& args);

}  // namespace pidlock::cli
