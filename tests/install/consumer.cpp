#include <pidlock/fleet.hpp>
#include <pidlock/pidlock.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 64;
  auto lock = pidlock::Lock::acquire(argv[1]);
  if (!lock) {
    std::fprintf(stderr, "%s\n", lock.error().message().c_str());
    return 75;
  }
  pidlock::fleet::Options options;  // links the fleet library too
  std::printf("%s %d\n", std::string(pidlock::version()).c_str(), options.slots);
  return 0;
}
