#include "record.hpp"

#include <charconv>

namespace pidlock::record {
namespace {

bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
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

}  // namespace pidlock::record
