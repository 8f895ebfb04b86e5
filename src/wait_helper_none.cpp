// Where no helper is written for the architecture: clone_helper() says so, and the wait forks.
#include "wait_helper.hpp"

#if !defined(__x86_64__) && !defined(__aarch64__)

#include <cerrno>

namespace pidlock::wait::start {

long clone_helper(const Request&, void*, int*) noexcept { return -ENOSYS; }

}  // namespace pidlock::wait::start

#endif
