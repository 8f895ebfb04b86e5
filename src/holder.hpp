// Holder discovery: who holds a lock file's flock, according to the kernel.
#pragma once

#include <sys/stat.h>

#include <ctime>
#include <expected>
#include <optional>
#include <system_error>
#include <vector>

#include "pidlock/pidlock.hpp"
#include "proc_parse.hpp"

namespace pidlock::holder {

proc::FileId file_id(const struct stat& st) noexcept;

struct Discovery {
  bool held = false;               // the kernel lists a granted flock on the file
  std::vector<Holder> holders;     // live processes confirmed to hold it, primary first
  std::vector<Waiter> waiters;
};

struct Hints {
  std::optional<pid_t> recorded_pid;       // from the file, to mark record agreement
  std::optional<struct timespec> record_mtime;  // when the record was last written
};

enum class Query {
  holder_of_busy_lock,  // the caller's own attempt was just refused: name the holder, cheaply
  status,               // everything: holders and waiters, for inspect()
};

// For a busy lock, first checks whether the recorded process holds it (through its fdinfo),
// and is done if it does. Otherwise reads /proc/locks for granted and blocked flocks on `file`
// (a second time, cut differently, when it came in pieces and did not show the lock), confirms
// the granted locker through its /proc/<pid>/fdinfo, and, when the locker is gone or is not the
// one holding it (an inherited descriptor outlived it, or its PID was recycled), scans every
// process's descriptors for the one that holds the lock. Fails only when /proc/locks cannot be
// read.
std::expected<Discovery, std::error_code> discover(const proc::FileId& file, const Hints& hints,
                                                   Query query);

}  // namespace pidlock::holder
