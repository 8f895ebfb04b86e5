// JSON from bytes that need not be text. A holder's comm and argv, a file name, are bytes; JSON
// strings are Unicode, and nlohmann::json throws when dump() meets bytes that are not UTF-8. So
// every string field goes through put_text(): as is when it is well-formed UTF-8, otherwise with
// each stray byte as U+FFFD and the exact bytes in base64 beside it, in "<field>_base64".
// Documented in pidlock(1), JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base64.hpp"
#include "escape.hpp"

namespace pidlock::cli {

// Ordered, so that the fields come in the order a human reading the JSON expects.
using json = nlohmann::ordered_json;

// object[key] = bytes, and object[key + "_base64"] when that alone would not be lossless.
inline void put_text(json& object, const std::string& key, std::string_view bytes) {
  if (text::valid_utf8(bytes)) {
    object[key] = std::string(bytes);
    return;
  }
  object[key] = text::replace_invalid_utf8(bytes);
  object[key + "_base64"] = base64::encode(bytes);
}

// An array of strings the same way; "<key>_base64", when present, encodes every element, so that
// its indices match the array's.
inline void put_texts(json& object, const std::string& key, const std::vector<std::string>& items) {
  json readable = json::array();
  bool all_valid = true;
  for (const auto& item : items) {
    all_valid = all_valid && text::valid_utf8(item);
    readable.push_back(text::replace_invalid_utf8(item));
  }
  object[key] = std::move(readable);
  if (all_valid) return;
  json exact = json::array();
  for (const auto& item : items) exact.push_back(base64::encode(item));
  object[key + "_base64"] = std::move(exact);
}

// One line of ASCII: every other character as a \u escape, so that the output is valid UTF-8 and
// cannot act on a terminal it is printed to. put_text() has made every string valid already; the
// replacing error handler is only there so that a string that bypassed it cannot abort status.
inline std::string dump_json(const json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
}

}  // namespace pidlock::cli
