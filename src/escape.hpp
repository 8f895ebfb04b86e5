// Bytes that came from elsewhere — another process's comm and argv, a file name, an etcd record —
// made safe to show. Any local user controls their own argv and comm, so printing them raw would
// let them clear an operator's screen, retitle the terminal or forge whole lines of output; and
// they need not be UTF-8 at all (comm is cut at 15 bytes, mid-character if need be), which a JSON
// encoder must not be handed as is. Pure functions, so that they can be tested and fuzzed alone.
// The one escaper: every message that shows bytes from elsewhere goes through one of these.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pidlock::text {

// Whether `bytes` is well-formed UTF-8 as RFC 3629 defines it: no overlong forms, no encoded
// surrogates (U+D800–U+DFFF), nothing above U+10FFFF.
bool valid_utf8(std::string_view bytes) noexcept;

// `bytes` as a terminal may show them. Well-formed printable UTF-8 ("données", "安装") passes
// through; everything else is escaped, one escape per byte, so that nothing can move the cursor,
// start a line or send the terminal a command:
//   \\                  a backslash
//   \a \b \t \n \v \f \r \e   BEL, BS, HT, LF, VT, FF, CR, ESC
//   \xNN                (two lowercase hex digits) any other byte of: a C0 control, DEL, a C1
//                       control (U+0080–U+009F), the line and paragraph separators U+2028 and
//                       U+2029, a bidirectional formatting character (U+061C, U+200E, U+200F,
//                       U+202A–U+202E, U+2066–U+2069), or a byte that is not part of
//                       well-formed UTF-8.
// The result is well-formed UTF-8 without any byte below 0x20 or 0x7F, and the escaping is
// lossless: from_terminal() gives the bytes back.
std::string for_terminal(std::string_view bytes);

// The bytes for_terminal() was given, or nothing if `escaped` is not something it returns.
std::optional<std::string> from_terminal(std::string_view escaped);

// `bytes` made well-formed UTF-8: each maximal ill-formed subsequence (a lone byte, or the start
// of a sequence that breaks off) becomes one U+FFFD, the substitution Unicode recommends and
// that Python's bytes.decode("utf-8", "replace") and browsers make, so that a reader's own
// decoder would show the same text. Lossy; where the exact bytes matter, carry base64(bytes).
std::string replace_invalid_utf8(std::string_view bytes);

// Words someone else chose, as messages name what a holder runs: joined by spaces, cut at 80
// bytes ("..." for the rest: a message names the holder, it does not reproduce its command
// line), and escaped for a terminal.
std::string command_line_for_terminal(const std::vector<std::string>& words);

// `bytes` as printable ASCII, cut at `limit` bytes ("..." after them when cut): printable ASCII
// but the backslash as is, every other byte as \xNN (two lowercase hex digits), so that a
// backslash in the bytes cannot pass for an escape either. For what another host sent (etcd's
// error messages, an HTTP body, a record anyone may write under the key prefix): unlike
// for_terminal() it lets no UTF-8 through, as what an endpoint that is not etcd sends need not be
// text in any encoding, and it is shown (and put in JSON, SlotHolder::raw) the same whatever the
// reader's locale; and it is cut, since such an answer may be megabytes long.
std::string printable_ascii(std::string_view bytes, std::size_t limit = 200);

}  // namespace pidlock::text
