// Escaping bytes from elsewhere for terminals and messages, and checking and repairing UTF-8.
#include "escape.hpp"

#include <array>
#include <cstddef>
#include <utility>

namespace pidlock::text {
namespace {

// What starts some bytes: a well-formed UTF-8 sequence, or the longest run of bytes that begins
// like one and breaks off (at least one byte), which Unicode calls a maximal subpart.
struct Sequence {
  std::size_t length = 0;
  bool valid = false;
  char32_t code_point = 0;  // when valid
};

unsigned char byte_at(std::string_view bytes, std::size_t i) noexcept {
  return static_cast<unsigned char>(bytes[i]);
}

// RFC 3629 (Unicode's table 3-7): the lead byte fixes the length and narrows the range of the
// second byte, which is what rules out overlong forms (C0, C1, E0 80–9F, F0 80–8F), encoded
// surrogates (ED A0–BF) and code points beyond U+10FFFF (F4 90–BF, F5–FF).
Sequence next_sequence(std::string_view bytes) noexcept {
  const unsigned char lead = byte_at(bytes, 0);
  if (lead < 0x80) return {1, true, lead};
  std::size_t length = 0;
  char32_t code_point = 0;
  unsigned char second_low = 0x80;
  unsigned char second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code_point = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code_point = lead & 0x0Fu;
    if (lead == 0xE0) second_low = 0xA0;
    if (lead == 0xED) second_high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code_point = lead & 0x07u;
    if (lead == 0xF0) second_low = 0x90;
    if (lead == 0xF4) second_high = 0x8F;
  } else {
    return {1, false, 0};
  }
  for (std::size_t i = 1; i < length; ++i) {
    if (i == bytes.size()) return {i, false, 0};  // cut short
    const unsigned char next = byte_at(bytes, i);
    const unsigned char low = i == 1 ? second_low : 0x80;
    const unsigned char high = i == 1 ? second_high : 0xBF;
    if (next < low || next > high) return {i, false, 0};
    code_point = (code_point << 6) | (next & 0x3Fu);
  }
  return {length, true, code_point};
}

// Characters that act on the terminal or on how the lines around them read: C0 controls, DEL
// and C1 controls (some terminals take U+009B as CSI even in UTF-8), the Unicode line and
// paragraph separators (a new line to some viewers), and the bidirectional formatting
// characters that reorder what follows them ("Trojan Source").
bool disturbs_terminal(char32_t c) noexcept {
  if (c < 0x20 || (c >= 0x7F && c <= 0x9F)) return true;
  if (c == 0x2028 || c == 0x2029) return true;
  return c == 0x061C || c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2066 && c <= 0x2069);
}

// The C escapes a reader knows; every other byte is spelt \xNN.
constexpr std::array<std::pair<char, char>, 8> named_escapes{{
    {'\a', 'a'},
    {'\b', 'b'},
    {'\t', 't'},
    {'\n', 'n'},
    {'\v', 'v'},
    {'\f', 'f'},
    {'\r', 'r'},
    {'\x1b', 'e'},
}};

constexpr std::string_view hex_digits = "0123456789abcdef";

// \xNN, the escape both escapers spell any byte with that has no name of its own.
void append_hex_escape(std::string& out, char byte) {
  const auto value = static_cast<unsigned char>(byte);
  out += "\\x";
  out += hex_digits[value >> 4];
  out += hex_digits[value & 0x0Fu];
}

void append_escape(std::string& out, char byte) {
  for (const auto& [raw, name] : named_escapes) {
    if (byte == raw) {
      out += '\\';
      out += name;
      return;
    }
  }
  append_hex_escape(out, byte);
}

std::optional<unsigned> hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<unsigned>(c - 'A' + 10);
  return std::nullopt;
}

// Reads one escape (after its backslash) from the front of `rest`; nothing if it is none of ours.
std::optional<char> take_escape(std::string_view& rest) {
  if (rest.empty()) return std::nullopt;
  const char kind = rest.front();
  rest.remove_prefix(1);
  if (kind == '\\') return '\\';
  if (kind == 'x') {
    if (rest.size() < 2) return std::nullopt;
    const auto high = hex_value(rest[0]);
    const auto low = hex_value(rest[1]);
    if (!high || !low) return std::nullopt;
    rest.remove_prefix(2);
    return static_cast<char>((*high << 4) | *low);
  }
  for (const auto& [raw, name] : named_escapes) {
    if (kind == name) return raw;
  }
  return std::nullopt;
}

}  // namespace

bool valid_utf8(std::string_view bytes) noexcept {
  while (!bytes.empty()) {
    const Sequence sequence = next_sequence(bytes);
    if (!sequence.valid) return false;
    bytes.remove_prefix(sequence.length);
  }
  return true;
}

std::string for_terminal(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    const Sequence sequence = next_sequence(bytes);
    const std::string_view character = bytes.substr(0, sequence.length);
    if (sequence.valid && sequence.code_point == '\\') {
      out += "\\\\";  // doubled, so that a literal "\n" in a name cannot pass for an escape
    } else if (!sequence.valid || disturbs_terminal(sequence.code_point)) {
      for (const char byte : character) append_escape(out, byte);
    } else {
      out += character;
    }
    bytes.remove_prefix(sequence.length);
  }
  return out;
}

std::optional<std::string> from_terminal(std::string_view escaped) {
  std::string bytes;
  bytes.reserve(escaped.size());
  std::string_view rest = escaped;
  while (!rest.empty()) {
    const char c = rest.front();
    rest.remove_prefix(1);
    if (c != '\\') {
      bytes += c;
      continue;
    }
    const auto byte = take_escape(rest);
    if (!byte) return std::nullopt;
    bytes += *byte;
  }
  // Each byte string has one escaped spelling; any other (a raw ESC, "\x41" for "A", "\xFF" in
  // capitals) was not written by for_terminal, and accepting it would make the inverse a guess.
  if (for_terminal(bytes) != escaped) return std::nullopt;
  return bytes;
}

std::string replace_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    const Sequence sequence = next_sequence(bytes);
    if (sequence.valid) {
      out += bytes.substr(0, sequence.length);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
    }
    bytes.remove_prefix(sequence.length);
  }
  return out;
}

std::string command_line_for_terminal(const std::vector<std::string>& words) {
  constexpr std::size_t limit = 80;
  std::string line;
  for (const auto& word : words) {
    if (!line.empty()) line += ' ';
    line += word;
  }
  if (line.size() > limit) line = line.substr(0, limit - 3) + "...";
  return for_terminal(line);
}

std::string printable_ascii(std::string_view bytes, std::size_t limit) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == limit) {
      out += "...";
      break;
    }
    const auto byte = byte_at(bytes, i);
    if (byte >= 0x20 && byte < 0x7F && byte != '\\') {
      out += bytes[i];
    } else {
      append_hex_escape(out, bytes[i]);
    }
  }
  return out;
}

}  // namespace pidlock::text
