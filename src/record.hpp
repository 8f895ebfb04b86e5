// The lock file's record: the holder's PID as decimal text and a newline, and nothing else.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string_view>

namespace pidlock::record {

// A record longer than this is junk; reading more would only let a hostile file slow us down.
inline constexpr std::size_t read_limit = 64;

// The largest PID Linux can hand out (PID_MAX_LIMIT on 64-bit): the one bound on PIDs, for lock
// file records and fleet slot records alike.
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

// --- What a lock file may hold, and what is somebody's data (pidlock(1), THE LOCK FILE) -------
//
// A lock file holds a record, or the junk a crash or a hand left there: nothing, blanks, a word
// that is not a PID ("not-a-pid", "-1", "0"), a stale PID, or a record written over a longer one
// and not yet cut ("42\n4567\n"). Precisely: nobody may execute it (no x bit), and it is empty,
// or it is at most `lock_file_limit` bytes, all printable ASCII or blanks (space, tab, CR, LF),
// with at most one word on its first line and only digits and blanks on any later line.
// Anything else (a configuration file, a script, a program, a document) is somebody's data:
// pidlock locks it as flock(1) does, through a read-only descriptor, and never writes to it.
inline constexpr std::size_t lock_file_limit = 32;

// Whether the mode or the size alone make a file data, whatever it holds: then it need not be
// read. False means its text decides (holds_lock_file_text).
bool data_by_mode_or_size(mode_t mode, off_t size) noexcept;

// Whether `text`, a file's whole content, is what a lock file may hold (the rule above, but for
// the x bits).
bool holds_lock_file_text(std::string_view text) noexcept;

}  // namespace pidlock::record
