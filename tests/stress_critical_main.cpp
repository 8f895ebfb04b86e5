// The command `pidlock run` runs in the stress test: one critical section in DIR.
#include <cstdio>

#include "critical_section.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: stress_critical DIR\n");
    return 64;
  }
  return pidlock::test::critical_section(argv[1]) ? 0 : 1;
}
