#include "critical_section.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace pidlock::test {
namespace {

void append(int fd, const std::string& line) {
  [[maybe_unused]] const auto n = ::write(fd, line.data(), line.size());
}

}  // namespace

bool critical_section(const std::filesystem::path& dir) {
  bool alone = true;
  const auto inside = dir / "inside";
  const int marker = ::open(inside.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (marker < 0) alone = false;
  const int journal =
      ::open((dir / "journal").c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  const std::string pid = std::to_string(::getpid());
  append(journal, "+" + pid + "\n");

  const int counter = ::open((dir / "counter").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  char buf[32] = {};
  const ssize_t n = ::pread(counter, buf, sizeof buf - 1, 0);
  const long value = n > 0 ? std::stol(std::string(buf, static_cast<std::size_t>(n))) : 0;
  const std::string next = std::to_string(value + 1);
  [[maybe_unused]] const auto w = ::pwrite(counter, next.data(), next.size(), 0);
  [[maybe_unused]] const auto t = ::ftruncate(counter, static_cast<off_t>(next.size()));
  ::close(counter);

  append(journal, "-" + pid + "\n");
  ::close(journal);
  if (marker >= 0) {
    ::close(marker);
    ::unlink(inside.c_str());
  }
  return alone;
}

long read_counter(const std::filesystem::path& dir) {
  std::ifstream in(dir / "counter");
  long value = 0;
  in >> value;
  return value;
}

bool journal_alternates(const std::filesystem::path& dir, long& sections) {
  std::ifstream in(dir / "journal");
  std::string line;
  std::string open_pid;
  sections = 0;
  while (std::getline(in, line)) {
    if (line.empty()) return false;
    if (line[0] == '+') {
      if (!open_pid.empty()) return false;  // entered while another was inside
      open_pid = line.substr(1);
    } else {
      if (open_pid != line.substr(1)) return false;
      open_pid.clear();
      ++sections;
    }
  }
  return open_pid.empty();
}

}  // namespace pidlock::test
