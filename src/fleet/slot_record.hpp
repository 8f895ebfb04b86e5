// What a fleet slot's key holds: who took the slot, as JSON. Written by pidlock, but read from a
// key space that anyone with write access to the prefix can fill: parsing checks every field and
// reports what is wrong instead of trusting or throwing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pidlock::fleet::record {

struct SlotRecord {
  std::string host;
  pid_t pid = 0;
  std::string command;
  std::int64_t started_at = 0;  // Unix seconds
  std::string role;
  int slots = 0;  // 0: not recorded (older holders)
};

// {"host": …, "pid": …, "command": …, "started_at": …, "role": …, "slots": …}. Bytes that are not
// UTF-8 (a command line may hold any) are replaced, never a reason to fail.
std::string format(const SlotRecord& record);

struct Reading {
  SlotRecord record;    // the fields that were right; the others are left at their defaults
  std::string problem;  // empty when well-formed, else what is wrong: "pid: not an integer"
  bool well_formed() const noexcept { return problem.empty(); }
};

// Requires host (a string) and pid (1…pidlock::record::max_pid, Linux's PID_MAX_LIMIT); command
// and role must be strings, started_at an integer >= 0 and slots one >= 1 when present. Other
// fields are ignored, for newer writers.
Reading parse(std::string_view value);

// The slot number a key under `prefix` names: only the digits pidlock writes ("0", "17"), so that
// "007" or "+1" — keys no pidlock would ever compete for — are not taken for slots.
std::optional<int> slot_index(std::string_view key, std::string_view prefix);

}  // namespace pidlock::fleet::record
