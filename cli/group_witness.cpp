// The group witness: the forked process that says which signals were sent to the whole group.
#include "group_witness.hpp"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>

#include "descriptors.hpp"
#include "process.hpp"

namespace pidlock::cli {
namespace {

// How long pidlock waits for an answer. The witness answers at once unless it was stopped on its
// own (a stop sent to the whole group stops pidlock too, so it is not asking then).
constexpr int answer_timeout_ms = 1000;

// pidlock is gone: the command goes too, and the lock (our reference to it) only once it has.
[[noreturn]] void end_command(int command) {
  if (command >= 0) {
    (void)::syscall(SYS_pidfd_send_signal, command, SIGKILL, nullptr, 0U);
    pollfd gone{command, POLLIN, 0};
    while (::poll(&gone, 1, -1) < 0 && errno == EINTR) {
    }
  }
  ::_exit(0);
}

// The witness itself, in the forked child: async-signal-safe calls only. It holds nothing of
// pidlock's but, with -o, the lock (no terminal, no connection).
[[noreturn]] void be_witness(pid_t parent, int channel, pid_t command_pid, int lock_fd) {
  ::prctl(PR_SET_NAME, "pidlock-witness");
  int command = static_cast<int>(::syscall(SYS_pidfd_open, command_pid, 0U));
  if (command < 0) {
    // No pidfd (Linux < 5.3): the witness goes with pidlock, and the command by its own
    // parent-death signal.
    lock_fd = -1;
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) ::_exit(0);
  }
  if (::getppid() != parent) end_command(command);
  std::array<int, 3> keep{channel, lock_fd, command};
  std::sort(keep.begin(), keep.end());
  close_all_but(keep);
  for (;;) {
    unsigned char sig = 0;
    const ssize_t got = ::recv(channel, &sig, 1, 0);
    if (got == 0) end_command(command);  // pidlock closed its end: it ended, or died
    if (got < 0) {
      if (errno == EINTR) continue;
      end_command(command);
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
    if (::send(channel, &said, 1, MSG_NOSIGNAL) != 1) end_command(command);
  }
}

}  // namespace

std::optional<GroupWitness> GroupWitness::start(pid_t command, int lock_fd) {
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
  if (pid == 0) be_witness(parent, theirs.get(), command, lock_fd);
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
