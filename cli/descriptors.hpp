// The descriptors a command started by pidlock gets: the standard three always open, and only
// those pidlock itself was given.
#pragma once

#include <span>
#include <vector>

namespace pidlock::cli {

// Puts /dev/null on whichever of descriptors 0, 1 and 2 is closed, so that no file pidlock opens
// later (the lock file above all) can become the command's stdin, stdout or stderr. Returns
// false, having said why, if it cannot.
bool fill_closed_standard_descriptors();

// The descriptors pidlock was started with, above stderr: those, and only those, a supervised
// command inherits (besides 0, 1 and 2), whatever pidlock or a library it uses opened since.
class InheritedDescriptors {
 public:
  // Lists them now: call before opening anything that must not reach the command.
  static InheritedDescriptors now();
  const std::vector<int>& list() const { return fds_; }

 private:
  std::vector<int> fds_;  // ascending
};

// Closes every descriptor but those in `keep` (ascending; negative entries are ignored). For a
// forked child: async-signal-safe, it allocates nothing.
void close_all_but(std::span<const int> keep) noexcept;

}  // namespace pidlock::cli
