// Fleet mode, as the plain pidlock does it: by handing the whole command line to pidlock-fleet,
// installed beside it. Only pidlock-fleet links libcurl, whose dependencies would otherwise cost
// every plain `pidlock run` several milliseconds of dynamic linking (git keeps its HTTP transport
// in git-remote-http for the same reason).
#include <unistd.h>

#include <array>
#include <cerrno>
#include <filesystem>

#include "commands.hpp"
#include "process.hpp"

namespace pidlock::cli {
namespace {

int hand_to_pidlock_fleet(const FleetRequest& fleet) {
  std::vector<char*> argv;
  argv.reserve(fleet.argv.size() + 1);
  for (const auto& word : fleet.argv) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  std::array<char, 4096> self{};
  const ssize_t length = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (length > 0) {
    const std::string beside =
        std::filesystem::path(std::string(self.data(), static_cast<std::size_t>(length)))
            .replace_filename("pidlock-fleet");
    ::execv(beside.c_str(), argv.data());
  }
  ::execvp("pidlock-fleet", argv.data());
  say(stderr,
      "pidlock: fleet mode needs the pidlock-fleet package: apt-get install pidlock-fleet ({})\n",
      errno_text(errno));
  return exit_code::unavailable;
}

}  // namespace

int run_fleet(const RunRequest& /*request*/, const FleetRequest& fleet) {
  return hand_to_pidlock_fleet(fleet);
}

int status_fleet(const StatusRequest& /*request*/, const FleetRequest& fleet) {
  return hand_to_pidlock_fleet(fleet);
}

}  // namespace pidlock::cli
