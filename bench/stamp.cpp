// The command of the command-line hand-off benchmark: prints CLOCK_MONOTONIC in nanoseconds the
// moment it starts, which is when the lock was handed to it. Linked statically, so that the
// dynamic loader adds nothing to either command's figure.
#include <time.h>
#include <unistd.h>

#include <charconv>

int main() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text - 1,
                                 static_cast<long long>(now.tv_sec) * 1'000'000'000LL + now.tv_nsec)
                       .ptr;
  *end = '\n';
  return ::write(1, text, static_cast<std::size_t>(end + 1 - text)) > 0 ? 0 : 1;
}
