// The lock file's record: the holder's PID as decimal text and a newline, and nothing else.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string_view>

namespace pidlock::record {

// A record longer than this is junk; reading more would only let a hostile file slow us down.
inline constexpr std::size_t read_limit = 64;

// The largest PID Linux can hand out (PID_MAX_LIMIT on 64-bit).
inline constexpr long max_pid = 4L * 1024 * 1024;

struct Text {
  char bytes[16];
  std::size_t size;
  std::string_view view() const noexcept { return {bytes, size}; }
};

// "<pid>\n".
Text format(pid_t pid) noexcept;

// The PID a record names, or nothing when it names none: empty, blank, junk, signed, zero,
// beyond PID_MAX_LIMIT or overlong. Only the first line counts, so a reader that catches a
// longer old record half overwritten ("99\n45\n") still reads the new one. Blanks around the
// number are tolerated, for records written by hand or by `echo $$ > file`.
std::optional<pid_t> parse(std::string_view text) noexcept;

// True when the text holds nothing but blanks.
bool blank(std::string_view text) noexcept;

}  // namespace pidlock::record
