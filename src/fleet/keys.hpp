// Where a fleet lock's keys live. A name may hold any bytes, '/' included, and no two names may
// ever share a key: the name is written into the key with '%' and '/' percent-encoded, so that
// the encoded name holds no '/' and the first '/' after the prefix ends it. Names without '%'
// or '/' keep the keys they always had.
//
// Why no two names meet: encode() is injective (decode() undoes it), and a key
// PREFIX + encode(a) + "/…" starts with PREFIX + encode(b) + "/" only when encode(a) equals
// encode(b), since neither holds a '/'. So "a" owns pidlock/a/slots/…, and "a/slots/0" owns
// pidlock/a%2Fslots%2F0/slots/…: apart.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pidlock::fleet::keys {

std::string encode(std::string_view name);
// The name `encoded` was made from; nullopt when no name encodes to it.
std::optional<std::string> decode(std::string_view encoded);

// Empty when `prefix` is usable, else why not.
std::string check_prefix(std::string_view prefix);

std::string slots_prefix(std::string_view prefix, std::string_view name);    // …/slots/
std::string waiters_prefix(std::string_view prefix, std::string_view name);  // …/waiters/

}  // namespace pidlock::fleet::keys
