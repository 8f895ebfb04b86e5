// The command the fleet tests run under `pidlock run --etcd`: counts how many run at once, in
// DIR (count, max), under a local flock, and stays inside for a moment so that overlaps, if
// the fleet lock allowed any, would show.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace {

int read_number(const std::string& path) {
  std::ifstream in(path);
  int value = 0;
  in >> value;
  return value;
}

void write_number(const std::string& path, int value) { std::ofstream(path, std::ios::trunc) << value; }

void adjust(const std::string& dir, int delta) {
  const int fd = ::open((dir + "/count.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ::flock(fd, LOCK_EX);
  const int inside = read_number(dir + "/inside") + delta;
  write_number(dir + "/inside", inside);
  if (inside > read_number(dir + "/max")) write_number(dir + "/max", inside);
  if (delta > 0) write_number(dir + "/runs", read_number(dir + "/runs") + 1);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 64;
  adjust(argv[1], +1);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the work being guarded
  adjust(argv[1], -1);
  return 0;
}
