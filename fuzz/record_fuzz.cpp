// Fuzzes the record parser: any bytes a hostile or corrupt lock file may hold.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (const auto pid = pidlock::record::parse(text)) {
    // Whatever parses is a PID the kernel could hand out, and round-trips.
    if (*pid <= 0 || *pid > pidlock::record::max_pid) __builtin_trap();
    if (pidlock::record::parse(pidlock::record::format(*pid).view()) != pid) __builtin_trap();
  }
  (void)pidlock::record::blank(text);
  return 0;
}
