// Fuzzes the encoding of fleet lock names into keys: any bytes, split into two names, must give
// two names whose keys stay apart unless the names are the same; every encoding decodes back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fleet/keys.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace keys = pidlock::fleet::keys;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::size_t split = size == 0 ? 0 : data[0] % (size + 1);
  const std::string_view a = bytes.substr(0, split);
  const std::string_view b = bytes.substr(split);
  const auto encoded = keys::encode(a);
  if (encoded.find('/') != std::string::npos) __builtin_trap();
  if (keys::decode(encoded) != std::string(a)) __builtin_trap();
  if (const auto decoded = keys::decode(bytes)) {
    if (keys::encode(*decoded) != bytes) __builtin_trap();
  }
  for (const std::string_view prefix : {"pidlock/", "x/"}) {
    const auto slots_a = keys::slots_prefix(prefix, a);
    const auto waiters_b = keys::waiters_prefix(prefix, b);
    const auto slots_b = keys::slots_prefix(prefix, b);
    if (a != b && (slots_b.starts_with(slots_a) || slots_a.starts_with(slots_b))) __builtin_trap();
    if (waiters_b.starts_with(slots_a) || slots_a.starts_with(waiters_b)) __builtin_trap();
  }
  return 0;
}
