// Fuzzes the parsers of /proc/<pid>/stat, status and cmdline (the same bytes fed to each).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proc_parse.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)pidlock::proc::parse_stat(text);
  (void)pidlock::proc::parse_status(text);
  (void)pidlock::proc::mount_device(text, 43);
  (void)pidlock::proc::parse_cmdline(text);
  return 0;
}
