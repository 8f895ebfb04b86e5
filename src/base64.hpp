// Base64 (RFC 4648, section 4: the standard alphabet, with padding): how etcd's JSON gateway
// writes keys and values, and how the command's JSON carries bytes that are not UTF-8.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pidlock::base64 {

std::string encode(std::string_view bytes);

// The bytes `text` encodes, or nothing when it is not the canonical encoding of any: a length
// that is not a multiple of four, a byte outside the alphabet, padding anywhere but at the end,
// or padding bits that are not zero. Strict, so that what decodes encodes back to the same text.
std::optional<std::string> decode(std::string_view text);

}  // namespace pidlock::base64
