#include <cstdio>
#include <pidlock/pidlock.hpp>
#include <string>

// Takes the lock on argv[1] and prints the library's version.
int main(int argc, char** argv) {
  if (argc != 2) return 64;
  auto lock = pidlock::Lock::acquire(argv[1]);
  if (!lock) {
    std::fprintf(stderr, "%s\n", lock.error().message().c_str());
    return 75;
  }
  std::printf("%s\n", std::string(pidlock::version()).c_str());
  return 0;
}
