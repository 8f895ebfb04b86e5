// One critical section of the stress test, shared by the in-process workers and the command
// that `pidlock run` runs. It detects overlap directly instead of inferring it from a count.
#pragma once

#include <filesystem>

namespace pidlock::test {

// Marks itself inside (O_EXCL: failing means someone else is inside), journals "+pid" and
// "-pid" around a read-modify-write of a counter file. Returns false when it saw an overlap.
bool critical_section(const std::filesystem::path& dir);

// After the run: the counter, and whether the journal strictly alternates +pid/-pid.
long read_counter(const std::filesystem::path& dir);
bool journal_alternates(const std::filesystem::path& dir, long& sections);

}  // namespace pidlock::test
