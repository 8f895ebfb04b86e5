// Escaping bytes from other processes for a terminal, and making them valid UTF-8 for JSON.
#include "escape.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base64.hpp"

namespace pidlock {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;

// Bytes in a failure message, as a C literal would spell them.
std::string spelled(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7F && c != '\\') {
      out += c;
    } else {
      constexpr std::string_view hex = "0123456789abcdef";
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 0x0Fu];
    }
  }
  return out;
}

// The code point's UTF-8 form, surrogates included (which UTF-8 forbids), for testing.
std::string encode(char32_t c) {
  auto byte = [](std::uint32_t v) { return static_cast<char>(v); };
  const auto v = static_cast<std::uint32_t>(c);
  if (v < 0x80) return {byte(v)};
  if (v < 0x800) return {byte(0xC0 | (v >> 6)), byte(0x80 | (v & 0x3F))};
  if (v < 0x10000) {
    return {byte(0xE0 | (v >> 12)), byte(0x80 | ((v >> 6) & 0x3F)), byte(0x80 | (v & 0x3F))};
  }
  return {byte(0xF0 | (v >> 18)), byte(0x80 | ((v >> 12) & 0x3F)), byte(0x80 | ((v >> 6) & 0x3F)),
          byte(0x80 | (v & 0x3F))};
}

struct Case {
  std::string_view bytes;
  bool valid;                 // well-formed UTF-8
  std::string_view terminal;  // what for_terminal shows
};

// After a hex escape comes no hex digit: a C++ literal would swallow it ("\xe5A" is one char).
const Case cases[] = {
    // Passes through.
    {""sv, true, ""sv},
    {"installer --upgrade"sv, true, "installer --upgrade"sv},
    {"données"sv, true, "données"sv},
    {"安装"sv, true, "安装"sv},
    {"emoji 😀"sv, true, "emoji 😀"sv},
    {"\xc2\xa0"sv, true, "\xc2\xa0"sv},                  // U+00A0, the first after C1
    {"\xf4\x8f\xbf\xbf"sv, true, "\xf4\x8f\xbf\xbf"sv},  // U+10FFFF, the largest
    {"\xef\xbf\xbd"sv, true, "\xef\xbf\xbd"sv},          // U+FFFD itself
    // A backslash is doubled, so that a name holding a literal "\n" is not shown as a newline.
    {"\\"sv, true, "\\\\"sv},
    {"a\\nb"sv, true, "a\\\\nb"sv},
    {"\\x1b"sv, true, "\\\\x1b"sv},
    // C0 controls: the named ones, and the rest in hex.
    {"\a\b\t\n\v\f\r\x1b"sv, true, "\\a\\b\\t\\n\\v\\f\\r\\e"sv},
    {"\0"sv, true, "\\x00"sv},
    {"\x01\x1f"sv, true, "\\x01\\x1f"sv},
    {"x\x1b[2J"sv, true, "x\\e[2J"sv},                  // clear the screen
    {"\x1b]0;pwned\a"sv, true, "\\e]0;pwned\\a"sv},     // set the window title
    {"apt\nfake: line"sv, true, "apt\\nfake: line"sv},  // a forged line
    {"\x7f"sv, true, "\\x7f"sv},                        // DEL
    // C1 controls, each byte escaped: U+0085 (NEL) and U+009B (CSI).
    {"\xc2\x80"sv, true, "\\xc2\\x80"sv},
    {"\xc2\x85"sv, true, "\\xc2\\x85"sv},
    {"\xc2\x9bK"sv, true, "\\xc2\\x9bK"sv},  // CSI K: erase the line
    {"\xc2\x9f"sv, true, "\\xc2\\x9f"sv},
    // Line and paragraph separators, bidirectional overrides and isolates.
    {"\xe2\x80\xa8"sv, true, "\\xe2\\x80\\xa8"sv},
    {"\xe2\x80\xa9"sv, true, "\\xe2\\x80\\xa9"sv},
    {"report\xe2\x80\xaetxt.sh"sv, true, "report\\xe2\\x80\\xaetxt.sh"sv},  // U+202E
    {"\xe2\x81\xa6"sv, true, "\\xe2\\x81\\xa6"sv},                          // U+2066
    {"\xd8\x9c"sv, true, "\\xd8\\x9c"sv},                                   // U+061C
    // Cut multi-byte sequences: comm is truncated to 15 bytes wherever that falls.
    {"ab安装安装\xe5"sv, false, "ab安装安装\\xe5"sv},
    {"\xe5\xae"sv, false, "\\xe5\\xae"sv},
    {"\xe5Z"sv, false, "\\xe5Z"sv},
    {"\xf0\x9f\x98"sv, false, "\\xf0\\x9f\\x98"sv},
    {"\x80"sv, false, "\\x80"sv},  // a lone continuation byte
    {"\xbf\xbf"sv, false, "\\xbf\\xbf"sv},
    // Overlong forms.
    {"\xc0\xaf"sv, false, "\\xc0\\xaf"sv},  // '/'
    {"\xc0\x80"sv, false, "\\xc0\\x80"sv},  // NUL
    {"\xc1\xbf"sv, false, "\\xc1\\xbf"sv},
    {"\xe0\x80\xaf"sv, false, "\\xe0\\x80\\xaf"sv},
    {"\xe0\x9f\xbf"sv, false, "\\xe0\\x9f\\xbf"sv},
    {"\xf0\x80\x80\xaf"sv, false, "\\xf0\\x80\\x80\\xaf"sv},
    {"\xf0\x8f\xbf\xbf"sv, false, "\\xf0\\x8f\\xbf\\xbf"sv},
    // Surrogates encoded in UTF-8 (CESU-8 and friends).
    {"\xed\xa0\x80"sv, false, "\\xed\\xa0\\x80"sv},
    {"\xed\xbf\xbf"sv, false, "\\xed\\xbf\\xbf"sv},
    {"\xed\xa0\xbd\xed\xb8\x80"sv, false, "\\xed\\xa0\\xbd\\xed\\xb8\\x80"sv},
    {"\xed\x9f\xbf"sv, true, "\xed\x9f\xbf"sv},  // U+D7FF, just below them
    // Beyond U+10FFFF, and bytes that never occur in UTF-8.
    {"\xf4\x90\x80\x80"sv, false, "\\xf4\\x90\\x80\\x80"sv},
    {"\xf5\x80\x80\x80"sv, false, "\\xf5\\x80\\x80\\x80"sv},
    {"\xfe\xff"sv, false, "\\xfe\\xff"sv},
    {"\xffZ"sv, false, "\\xffZ"sv},
    // A valid character right after an invalid byte is kept whole.
    {"\xff安"sv, false, "\\xff安"sv},
};

TEST(Escape, ValidUtf8FollowsRfc3629) {
  for (const auto& c : cases) {
    EXPECT_EQ(text::valid_utf8(c.bytes), c.valid) << spelled(c.bytes);
  }
}

TEST(Escape, ForTerminalEscapesControlsAndInvalidBytesOnly) {
  for (const auto& c : cases) {
    EXPECT_EQ(text::for_terminal(c.bytes), c.terminal) << spelled(c.bytes);
  }
}

TEST(Escape, FromTerminalGivesTheBytesBack) {
  for (const auto& c : cases) {
    EXPECT_EQ(text::from_terminal(c.terminal), std::string(c.bytes)) << spelled(c.bytes);
  }
}

TEST(Escape, FromTerminalRefusesWhatForTerminalNeverWrites) {
  for (const std::string_view odd : {"\\"sv, "a\\"sv, "\\q"sv, "\\x"sv, "\\x4"sv, "\\xg0"sv,
                                     "\\x41"sv,  // 'A' needs no escape
                                     "\\xFF"sv,  // capitals
                                     "\\x5c"sv,  // a backslash is "\\\\"
                                     "\\x0a"sv,  // a newline is "\\n"
                                     "\x1b[2J"sv, "a\nb"sv, "\xff"sv, "\xc2\x9b"sv}) {
    EXPECT_FALSE(text::from_terminal(odd)) << spelled(odd);
  }
}

TEST(Escape, ReplaceInvalidUtf8SubstitutesMaximalSubparts) {
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(text::replace_invalid_utf8("données"), "données");
  EXPECT_EQ(text::replace_invalid_utf8("\x1b[2J\n"), "\x1b[2J\n");  // valid: JSON escapes those
  // One U+FFFD for each maximal ill-formed subsequence: a cut sequence is one, however long…
  EXPECT_EQ(text::replace_invalid_utf8("ab\xe5\xae"), "ab" + fffd);
  EXPECT_EQ(text::replace_invalid_utf8("\xf0\x9f\x98x"), fffd + "x");
  EXPECT_EQ(text::replace_invalid_utf8("\xe5Z"), fffd + "Z");
  // …while a byte that no well-formed sequence can start or continue is one on its own.
  EXPECT_EQ(text::replace_invalid_utf8("\xed\xa0\x80x"), fffd + fffd + fffd + "x");
  EXPECT_EQ(text::replace_invalid_utf8("\xc0\xaf"), fffd + fffd);
  EXPECT_EQ(text::replace_invalid_utf8("\xf4\x90\x80\x80"), fffd + fffd + fffd + fffd);
  EXPECT_EQ(text::replace_invalid_utf8("\xff安"), fffd + "安");
  for (const auto& c : cases) {
    const std::string replaced = text::replace_invalid_utf8(c.bytes);
    EXPECT_TRUE(text::valid_utf8(replaced)) << spelled(c.bytes);
    if (c.valid) {
      EXPECT_EQ(replaced, c.bytes) << spelled(c.bytes);
    }
  }
}

TEST(Escape, Base64IsRfc4648) {
  // RFC 4648, section 10.
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [bytes, encoded] : vectors) {
    EXPECT_EQ(base64::encode(bytes), encoded);
    EXPECT_EQ(base64::decode(encoded), std::string(bytes));
  }
  EXPECT_EQ(base64::encode("\xff\xfe\x00\x1b"sv), "//4AGw==");
  for (const std::string_view bad : {"Zg="sv, "Zg"sv, "Zh=="sv, "Z==="sv, "===="sv, "=Zg="sv,
                                     "Zg==Zg=="sv, "Zm9v!A=="sv, "Zm9v\n"sv, "Zm-_"sv}) {
    EXPECT_FALSE(base64::decode(bad)) << bad;
  }
}

// Every one- and two-byte string, against the definition: ASCII, or a lead byte C2–DF (C0 and
// C1 would be overlong) followed by a continuation byte.
TEST(Escape, ValidUtf8OnEveryShortString) {
  for (unsigned a = 0; a < 256; ++a) {
    const std::string one{static_cast<char>(a)};
    EXPECT_EQ(text::valid_utf8(one), a < 0x80) << spelled(one);
    for (unsigned b = 0; b < 256; ++b) {
      const std::string two{static_cast<char>(a), static_cast<char>(b)};
      const bool expected =
          (a < 0x80 && b < 0x80) || (a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF);
      ASSERT_EQ(text::valid_utf8(two), expected) << spelled(two);
    }
  }
}

// Every code point's UTF-8 form is valid, except the surrogates'; every non-control character
// passes for_terminal unchanged.
TEST(Escape, EveryCodePoint) {
  for (char32_t c = 0; c <= 0x10FFFF; ++c) {
    const std::string bytes = encode(c);
    const bool surrogate = c >= 0xD800 && c <= 0xDFFF;
    ASSERT_EQ(text::valid_utf8(bytes), !surrogate) << spelled(bytes);
    const bool escaped = surrogate || c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == '\\' ||
                         c == 0x2028 || c == 0x2029 || c == 0x061C || c == 0x200E || c == 0x200F ||
                         (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
    if (!escaped) {
      ASSERT_EQ(text::for_terminal(bytes), bytes) << spelled(bytes);
    }
  }
}

// Bytes as hostile as they come: random strings over an alphabet weighted towards controls, lead
// and continuation bytes, backslashes and the bytes of escapes.
std::vector<std::string> hostile_samples() {
  const std::string alphabet =
      "\x00\x07\x09\x0a\x0d\x1b\x7f\x80\x85\x9b\xa0\xa8\xae\xbf\xc0\xc1\xc2\xdf\xe0\xe2\xed\xef"
      "\xf0\xf4\xf5\xff\\x0aA[]e"s;
  std::mt19937 random(20261126);  // fixed: a failure must reproduce
  std::uniform_int_distribution<std::size_t> length(0, 24);
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<unsigned> any_byte(0, 255);
  std::vector<std::string> samples;
  for (int i = 0; i < 20000; ++i) {
    std::string s(length(random), '\0');
    for (auto& c : s) c = i % 2 == 0 ? alphabet[pick(random)] : static_cast<char>(any_byte(random));
    samples.push_back(std::move(s));
  }
  for (const auto& c : cases) samples.emplace_back(c.bytes);
  return samples;
}

TEST(Escape, TerminalTextHasNoControlsAndGivesTheBytesBack) {
  for (const auto& bytes : hostile_samples()) {
    const std::string shown = text::for_terminal(bytes);
    ASSERT_TRUE(text::valid_utf8(shown)) << spelled(bytes);
    for (const char c : shown) {
      const auto b = static_cast<unsigned char>(c);
      ASSERT_TRUE(b >= 0x20 && b != 0x7F) << spelled(bytes) << " shown as " << spelled(shown);
    }
    ASSERT_EQ(text::from_terminal(shown), bytes) << spelled(bytes);
  }
}

TEST(Escape, Base64GivesTheBytesBack) {
  for (const auto& bytes : hostile_samples()) {
    ASSERT_EQ(base64::decode(base64::encode(bytes)), bytes) << spelled(bytes);
  }
}

}  // namespace
}  // namespace pidlock
