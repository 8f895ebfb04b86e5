// Fuzzes the /proc/locks parser, as holder discovery reads it on every busy acquire.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proc_parse.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::size_t blocked = 0;
  pidlock::proc::for_each_lock_line(
      text, [&](const pidlock::proc::LockLine& line) { blocked += line.blocked ? 1 : 0; });
  (void)blocked;
  return 0;
}
