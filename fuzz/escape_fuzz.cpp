// Fuzzes the escaping of others' bytes: whatever the input, for_terminal leaves no control byte
// and only well-formed UTF-8, and from_terminal gives the input back; printable_ascii leaves
// printable ASCII only; the JSON the command would print parses, and its documented decoding
// gives the input back too. A dump() that throws, as nlohmann's does on invalid UTF-8, is a crash
// here.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base64.hpp"
#include "escape.hpp"
#include "json_text.hpp"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void terminal_text_is_inert_and_lossless(std::string_view bytes) {
  const std::string shown = pidlock::text::for_terminal(bytes);
  for (const char c : shown) {
    const auto b = static_cast<unsigned char>(c);
    check(b >= 0x20 && b != 0x7F);
  }
  check(pidlock::text::valid_utf8(shown));
  check(pidlock::text::from_terminal(shown) == bytes);
}

// What a message shows of another host's bytes: printable ASCII, cut at the limit.
void remote_text_is_printable_ascii(std::string_view bytes) {
  const std::string shown = pidlock::text::printable_ascii(bytes);
  for (const char c : shown) check(c >= 0x20 && c <= 0x7E);
  check(shown.size() <= 4 * 200 + 3);
}

// The rule in pidlock(1): "<field>_base64" when present, else the field's UTF-8.
std::string exact_bytes(const nlohmann::json& object, const std::string& key) {
  if (object.contains(key + "_base64")) {
    const auto bytes = pidlock::base64::decode(object[key + "_base64"].get<std::string>());
    check(bytes.has_value());
    return *bytes;
  }
  return object[key].get<std::string>();
}

void json_parses_and_is_lossless(std::string_view bytes) {
  pidlock::cli::json object;
  pidlock::cli::put_text(object, "field", bytes);
  pidlock::cli::put_texts(object, "list", {std::string(bytes), "plain"});
  (void)object.dump();  // the strict encoder: throws, and so crashes, on any invalid string
  const std::string printed = pidlock::cli::dump_json(object);
  for (const char c : printed) check(static_cast<unsigned char>(c) < 0x80);
  const auto parsed = nlohmann::json::parse(printed, nullptr, false);
  check(parsed.is_object());
  check(exact_bytes(parsed, "field") == bytes);
  check(parsed["field"].get<std::string>() == pidlock::text::replace_invalid_utf8(bytes));
  check(parsed["list"].size() == 2);
  if (parsed.contains("list_base64")) {
    check(parsed["list_base64"].size() == 2);
    check(pidlock::base64::decode(parsed["list_base64"][0].get<std::string>()) == bytes);
  } else {
    check(parsed["list"][0].get<std::string>() == bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  terminal_text_is_inert_and_lossless(bytes);
  remote_text_is_printable_ascii(bytes);
  json_parses_and_is_lossless(bytes);
  return 0;
}
