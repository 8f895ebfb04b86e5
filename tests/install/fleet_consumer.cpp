#include <cstdio>
#include <pidlock/fleet.hpp>
#include <string>

// Links the fleet library (and so libcurl) and asks an etcd at argv[1], if given, for a slot of
// the lock argv[2]: prints the library's version and the default slot count, then exits 0 when
// the slot was taken. Without arguments it only links and prints.
int main(int argc, char** argv) {
  pidlock::fleet::Options options;
  std::printf("%s %d\n", std::string(pidlock::version()).c_str(), options.slots);
  if (argc != 3) return argc == 1 ? 0 : 64;
  options.endpoints = {argv[1]};
  auto slot = pidlock::fleet::Slot::acquire(argv[2], options);
  if (!slot) {
    std::fprintf(stderr, "%s\n", slot.error().message().c_str());
    return 75;
  }
  return 0;
}
