// Parsing /proc/locks, fdinfo, stat, status, mountinfo, children and cmdline: text in, no I/O.
#include "proc_parse.hpp"

#include <array>
#include <charconv>
#include <cstddef>

namespace pidlock::proc {
namespace {

bool is_space(char c) noexcept { return c == ' ' || c == '\t'; }

// Splits off the next whitespace-separated token.
std::string_view next_token(std::string_view& s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  std::size_t n = 0;
  while (n < s.size() && !is_space(s[n])) ++n;
  const std::string_view token = s.substr(0, n);
  s.remove_prefix(n);
  return token;
}

template <typename T>
std::optional<T> to_number(std::string_view s, int base = 10) noexcept {
  T value{};
  if (s.empty()) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

LockKind kind_of(std::string_view token) noexcept {
  if (token == "FLOCK") return LockKind::flock;
  if (token == "POSIX") return LockKind::posix;
  if (token == "OFDLCK") return LockKind::ofd;
  if (token == "LEASE" || token == "DELEG") return LockKind::lease;
  return LockKind::other;
}

// "fe:00:10952837": hex major, hex minor, decimal inode.
std::optional<FileId> parse_file_id(std::string_view s) noexcept {
  const auto first = s.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  const auto second = s.find(':', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const auto major = to_number<unsigned>(s.substr(0, first), 16);
  const auto minor = to_number<unsigned>(s.substr(first + 1, second - first - 1), 16);
  const auto inode = to_number<std::uint64_t>(s.substr(second + 1));
  if (!major || !minor || !inode) return std::nullopt;
  return FileId{*major, *minor, *inode};
}

}  // namespace

std::optional<LockLine> parse_lock_line(std::string_view line) {
  LockLine out;
  const std::string_view ordinal = next_token(line);
  if (ordinal.size() < 2 || ordinal.back() != ':') return std::nullopt;
  std::string_view kind = next_token(line);
  if (kind == "->") {
    out.blocked = true;
    kind = next_token(line);
  }
  out.kind = kind_of(kind);
  next_token(line);  // ADVISORY / MANDATORY / ACTIVE / BREAKING / BREAKER
  const std::string_view access = next_token(line);
  out.write = access == "WRITE";
  const auto pid = to_number<pid_t>(next_token(line));
  const auto file = parse_file_id(next_token(line));
  if (!pid || !file || access.empty()) return std::nullopt;
  out.pid = *pid;
  out.file = *file;
  return out;
}

FdInfo parse_fdinfo(std::string_view text) {
  FdInfo out;
  while (!text.empty()) {
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (line.starts_with("mnt_id:")) {
      line.remove_prefix(7);
      out.mount_id = to_number<int>(next_token(line));
    } else if (line.starts_with("ino:")) {
      line.remove_prefix(4);
      out.inode = to_number<std::uint64_t>(next_token(line));
    } else if (line.starts_with("lock:")) {
      line.remove_prefix(5);
      if (auto lock = parse_lock_line(line)) out.locks.push_back(*lock);
    }
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return out;
}

std::optional<StatFields> parse_stat(std::string_view text) {
  const auto open = text.find('(');
  const auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) {
    return std::nullopt;
  }
  StatFields out;
  out.command = std::string(text.substr(open + 1, close - open - 1));
  std::string_view rest = text.substr(close + 1);
  // Fields after the command: state is field 3, so field N is token N-3.
  constexpr std::size_t parent_index = 4 - 3;
  constexpr std::size_t start_index = 22 - 3;
  std::array<std::string_view, start_index + 1> tokens{};
  for (auto& token : tokens) {
    token = next_token(rest);
    if (token.empty()) return std::nullopt;
  }
  const auto parent = to_number<pid_t>(tokens[parent_index]);
  const auto start = to_number<std::uint64_t>(tokens[start_index]);
  if (!parent || !start) return std::nullopt;
  out.parent = *parent;
  out.start_ticks = *start;
  return out;
}

namespace {

// The value of the "Name:" line of a /proc/<pid>/status text, without the name.
std::optional<std::string_view> status_line(std::string_view text, std::string_view name) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
      return line.substr(name.size() + 1);
    }
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return std::nullopt;
}

}  // namespace

StatusFields parse_status(std::string_view text) {
  StatusFields out;
  if (auto uid = status_line(text, "Uid")) {
    next_token(*uid);  // real
    out.euid = to_number<uid_t>(next_token(*uid));
  }
  if (auto pids = status_line(text, "NSpid")) {
    for (auto token = next_token(*pids); !token.empty(); token = next_token(*pids)) {
      const auto pid = to_number<pid_t>(token);
      if (!pid) {
        out.namespace_pids.clear();
        break;
      }
      out.namespace_pids.push_back(*pid);
    }
  }
  return out;
}

std::optional<Device> mount_device(std::string_view mountinfo, int mount_id) {
  while (!mountinfo.empty()) {
    const auto end = mountinfo.find('\n');
    std::string_view line = mountinfo.substr(0, end);
    const auto id = to_number<int>(next_token(line));
    if (id && *id == mount_id) {
      next_token(line);  // parent mount id
      const std::string_view device = next_token(line);
      const auto colon = device.find(':');
      if (colon == std::string_view::npos) return std::nullopt;
      const auto major = to_number<unsigned>(device.substr(0, colon));
      const auto minor = to_number<unsigned>(device.substr(colon + 1));
      if (!major || !minor) return std::nullopt;
      return Device{*major, *minor};
    }
    if (end == std::string_view::npos) break;
    mountinfo.remove_prefix(end + 1);
  }
  return std::nullopt;
}

std::vector<pid_t> parse_children(std::string_view text) {
  std::vector<pid_t> children;
  for (std::string_view token = next_token(text); !token.empty(); token = next_token(text)) {
    if (token.back() == '\n') token.remove_suffix(1);
    if (const auto pid = to_number<pid_t>(token); pid && *pid > 0) children.push_back(*pid);
  }
  return children;
}

std::vector<std::string> parse_cmdline(std::string_view text) {
  std::vector<std::string> args;
  while (!text.empty()) {
    const auto end = text.find('\0');
    args.emplace_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return args;
}

}  // namespace pidlock::proc
