// A helper for the fleet tests, in two modes.
//
// `fleet_probe DIR`: the command the fleet tests run under `pidlock run --etcd`: counts how many
// run at once, in DIR (count, max), under a local flock, and stays inside for a moment so that
// overlaps, if the fleet lock allowed any, would show.
//
// `fleet_probe fence ENDPOINT NAME FILE COUNT`: takes the one slot of NAME COUNT times in a row
// through the library, appending each fence to FILE while it holds the slot, so that FILE lists
// the fences in the order the slot was granted.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "pidlock/fleet.hpp"

namespace {

int read_number(const std::string& path) {
  std::ifstream in(path);
  int value = 0;
  in >> value;
  return value;
}

void write_number(const std::string& path, int value) {
  std::ofstream(path, std::ios::trunc) << value;
}

void adjust(const std::string& dir, int delta) {
  const int fd = ::open((dir + "/count.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ::flock(fd, LOCK_EX);
  const int inside = read_number(dir + "/inside") + delta;
  write_number(dir + "/inside", inside);
  if (inside > read_number(dir + "/max")) write_number(dir + "/max", inside);
  if (delta > 0) write_number(dir + "/runs", read_number(dir + "/runs") + 1);
  ::close(fd);
}

int count_overlaps(const std::string& dir) {
  adjust(dir, +1);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the work being guarded
  adjust(dir, -1);
  return 0;
}

int take_fences(const std::string& endpoint, const std::string& name, const std::string& file,
                int count) {
  pidlock::fleet::Options options;
  options.endpoints = {endpoint};
  options.wait = std::chrono::seconds(60);
  const int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return 66;
  for (int i = 0; i < count; ++i) {
    auto slot = pidlock::fleet::Slot::acquire(name, options);
    if (!slot) {
      std::fprintf(stderr, "%s\n", slot.error().message().c_str());
      return 75;
    }
    const std::string line = std::to_string(slot->fence()) + "\n";
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 74;
    if (slot->release()) return 70;
  }
  ::close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2) return count_overlaps(argv[1]);
  if (argc == 6 && std::string(argv[1]) == "fence") {
    const std::string count_text = argv[5];
    int count = 0;
    const auto [end, error] =
        std::from_chars(count_text.data(), count_text.data() + count_text.size(), count);
    if (error != std::errc{} || end != count_text.data() + count_text.size()) return 64;
    return take_fences(argv[2], argv[3], argv[4], count);
  }
  return 64;
}
