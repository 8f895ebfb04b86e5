#include "group_witness.hpp"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "process.hpp"

namespace pidlock::cli {
namespace {

// How long pidlock waits for an answer. The witness answers at once unless it was stopped on its
// own (a stop sent to the whole group stops pidlock too, so it is not asking then).
constexpr int answer_timeout_ms = 1000;

// close_range(2) where the kernel has it (5.9+), close(2) in a loop where it does not.
void close_from_to(unsigned first, unsigned last) noexcept {
  if (first > last) return;
  if (::syscall(SYS_close_range, first, last, 0U) == 0) return;
  rlimit limit{};
  const rlim_t end = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                         ? limit.rlim_cur
                         : 65536;
  for (rlim_t fd = first; fd <= last && fd < end; ++fd) ::close(static_cast<int>(fd));
}

// The witness itself, in the forked child: async-signal-safe calls only. It holds nothing of
// pidlock's (no lock, no terminal, no connection) and ends with pidlock.
[[noreturn]] void be_witness(pid_t parent, int channel) {
  ::prctl(PR_SET_NAME, "pidlock-witness");
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(0);
  const auto fd = static_cast<unsigned>(channel);
  close_from_to(0, fd - 1);
  close_from_to(fd + 1, ~0U);
  for (;;) {
    unsigned char sig = 0;
    const ssize_t got = ::recv(channel, &sig, 1, 0);
    if (got == 0) ::_exit(0);
    if (got < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    sigset_t one{};
    ::sigemptyset(&one);
    ::sigaddset(&one, sig);
    const timespec now{};
    int taken = 0;
    do {
      taken = ::sigtimedwait(&one, nullptr, &now);
    } while (taken < 0 && errno == EINTR);
    const unsigned char said = taken == sig ? 1 : 0;
    if (::send(channel, &said, 1, MSG_NOSIGNAL) != 1) ::_exit(1);
  }
}

}  // namespace

std::optional<GroupWitness> GroupWitness::start() {
  int channel[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) {
    say(stderr, "pidlock: socketpair for the signal witness: {}\n", errno_text(errno));
    return std::nullopt;
  }
  sys::UniqueFd ours(channel[0]);
  sys::UniqueFd theirs(channel[1]);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    say(stderr, "pidlock: fork the signal witness: {}\n", errno_text(errno));
    return std::nullopt;
  }
  if (pid == 0) be_witness(parent, theirs.get());
  return GroupWitness(pid, ours.release());
}

GroupWitness::GroupWitness(GroupWitness&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), channel_(std::move(other.channel_)) {}

GroupWitness& GroupWitness::operator=(GroupWitness&& other) noexcept {
  if (this != &other) {
    end();
    pid_ = std::exchange(other.pid_, -1);
    channel_ = std::move(other.channel_);
  }
  return *this;
}

GroupWitness::~GroupWitness() { end(); }

void GroupWitness::end() noexcept {
  if (pid_ <= 0) return;
  channel_.reset();
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

std::optional<bool> GroupWitness::also_sent_to_group(int sig) {
  const auto asked = static_cast<unsigned char>(sig);
  if (::send(channel_.get(), &asked, 1, MSG_NOSIGNAL) != 1) return std::nullopt;
  pollfd ready{channel_.get(), POLLIN, 0};
  int polled = 0;
  do {
    polled = ::poll(&ready, 1, answer_timeout_ms);
  } while (polled < 0 && errno == EINTR);
  unsigned char said = 0;
  if (polled != 1 || ::recv(channel_.get(), &said, 1, 0) != 1) {
    channel_.reset();  // a late answer must not be taken for the next question's
    return std::nullopt;
  }
  return said == 1;
}

}  // namespace pidlock::cli
