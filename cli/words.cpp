// Cutting pidlock's arguments into options, operand and command, by what the CLI11 app declares.
#include "words.hpp"

#include <algorithm>

namespace pidlock::cli {
namespace {

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

}  // namespace

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

}  // namespace pidlock::cli
