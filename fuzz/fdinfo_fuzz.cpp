// Fuzzes the /proc/<pid>/fdinfo/<fd> parser.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proc_parse.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto info =
      pidlock::proc::parse_fdinfo(std::string_view(reinterpret_cast<const char*>(data), size));
  (void)info;
  return 0;
}
