// The lock file's record: a PID written as decimal text, read back strictly, told from other data.
#include "record.hpp"

#include <sys/stat.h>

#include <charconv>

namespace pidlock::record {
namespace {

bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_printable(char c) noexcept { return c >= 0x20 && c < 0x7f; }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// No blank inside the line once its ends are trimmed: one word, or none.
bool at_most_one_word(std::string_view line) noexcept {
  for (const char c : trim(line)) {
    if (is_blank(c)) return false;
  }
  return true;
}

bool digits_and_blanks(std::string_view line) noexcept {
  for (const char c : line) {
    if (!is_digit(c) && !is_blank(c)) return false;
  }
  return true;
}

}  // namespace

Text format(pid_t pid) noexcept {
  Text text{};
  const auto [end, ec] = std::to_chars(text.bytes, text.bytes + sizeof text.bytes - 1, pid);
  // A pid_t always fits in 15 characters; ec cannot be set, but stay well-formed regardless.
  char* last = ec == std::errc{} ? end : text.bytes;
  *last++ = '\n';
  text.size = static_cast<std::size_t>(last - text.bytes);
  return text;
}

std::optional<pid_t> parse(std::string_view text) noexcept {
  if (const auto newline = text.find('\n'); newline != std::string_view::npos) {
    text = text.substr(0, newline);
  }
  text = trim(text);
  if (text.empty() || text.size() > 7) return std::nullopt;  // 4194304 has 7 digits
  long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if (text.front() == '-' || value <= 0 || value > max_pid) return std::nullopt;
  return static_cast<pid_t>(value);
}

bool blank(std::string_view text) noexcept { return trim(text).empty(); }

bool data_by_mode_or_size(mode_t mode, off_t size) noexcept {
  return (mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0 || size > static_cast<off_t>(lock_file_limit);
}

bool holds_lock_file_text(std::string_view text) noexcept {
  if (text.size() > lock_file_limit) return false;
  for (const char c : text) {
    if (!is_printable(c) && !is_blank(c)) return false;
  }
  const auto newline = text.find('\n');
  if (!at_most_one_word(text.substr(0, newline))) return false;
  // A crash between writing a record over a longer one and cutting the file leaves the old
  // record's last digits on the lines after it.
  return newline == std::string_view::npos || digits_and_blanks(text.substr(newline + 1));
}

}  // namespace pidlock::record
