// Fuzzes base64 as the etcd client and the JSON output use it: any bytes encode and decode back to
// themselves, and any text that decodes is the one canonical encoding of what it decodes to.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base64.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace base64 = pidlock::base64;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto encoded = base64::encode(bytes);
  if (encoded.size() != (size + 2) / 3 * 4) __builtin_trap();
  if (base64::decode(encoded) != bytes) __builtin_trap();
  if (const auto decoded = base64::decode(bytes)) {
    if (base64::encode(*decoded) != bytes) __builtin_trap();
  }
  return 0;
}
