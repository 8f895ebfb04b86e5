// Fuzzes the slot record reader: values anyone with write access to the key prefix can put there.
// A record read as well-formed has fields in range, and reads back the same once written.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fleet/slot_record.hpp"
#include "record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace record = pidlock::fleet::record;
  const std::string_view value(reinterpret_cast<const char*>(data), size);
  const auto reading = record::parse(value);
  if (!reading.well_formed()) return 0;
  const auto& r = reading.record;
  if (r.pid < 1 || r.pid > pidlock::record::max_pid || r.started_at < 0 || r.slots < 0)
    __builtin_trap();
  const auto again = record::parse(record::format(r));
  if (!again.well_formed()) __builtin_trap();
  const auto& a = again.record;
  if (a.host != r.host || a.pid != r.pid || a.command != r.command ||
      a.started_at != r.started_at || a.role != r.role || a.slots != r.slots) {
    __builtin_trap();
  }
  (void)record::slot_index(value, "pidlock/x/slots/");
  return 0;
}
