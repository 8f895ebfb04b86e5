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

void append_escape(std::string& out, char byte) {
  for (const auto& [raw, name] : named_escapes) {
    if (byte == raw) {
      out += '\\';
      out += name;
      return;
    }
  }
  const auto value = static_cast<unsigned char>(byte);
  out += "\\x";
  out += hex_digits[value >> 4];
  out += hex_digits[value & 0x0Fu];
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

constexpr std::string_view base64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::optional<unsigned> base64_value(char c) noexcept {
  const auto at = base64_alphabet.find(c);
  if (at == std::string_view::npos) return std::nullopt;
  return static_cast<unsigned>(at);
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

std::string base64(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned group = (unsigned{byte_at(bytes, i)} << 16) |
                           (unsigned{byte_at(bytes, i + 1)} << 8) | byte_at(bytes, i + 2);
    for (const unsigned shift : {18u, 12u, 6u, 0u}) {
      out += base64_alphabet[(group >> shift) & 0x3Fu];
    }
  }
  const std::size_t left = bytes.size() - i;
  if (left == 0) return out;
  unsigned group = unsigned{byte_at(bytes, i)} << 16;
  if (left == 2) group |= unsigned{byte_at(bytes, i + 1)} << 8;
  out += base64_alphabet[(group >> 18) & 0x3Fu];
  out += base64_alphabet[(group >> 12) & 0x3Fu];
  out += left == 2 ? base64_alphabet[(group >> 6) & 0x3Fu] : '=';
  out += '=';
  return out;
}

std::optional<std::string> from_base64(std::string_view encoded) {
  if (encoded.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  while (padding < 2 && encoded.size() > padding && encoded[encoded.size() - 1 - padding] == '=') {
    ++padding;
  }
  const std::string_view digits = encoded.substr(0, encoded.size() - padding);
  std::string bytes;
  bytes.reserve(digits.size() * 3 / 4);
  unsigned group = 0;
  unsigned bits = 0;
  for (const char c : digits) {
    const auto value = base64_value(c);
    if (!value) return std::nullopt;
    group = ((group << 6) | *value) & 0xFFFFu;  // never more than 14 bits pending
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += static_cast<char>((group >> bits) & 0xFFu);
    }
  }
  // Only the canonical spelling: the unused low bits of the last digit must be zero.
  if (base64(bytes) != encoded) return std::nullopt;
  return bytes;
}

}  // namespace pidlock::text
