// Holder identity: the kernel's answer to "who holds it", in each way a lock can be held.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <sstream>

#include "pidlock/pidlock.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::TempDir;

std::string own_command() {
  std::string comm = test::read_text("/proc/self/comm");
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

TEST(Holder, OurOwnProcess) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_TRUE(status->holder);
  const Holder& h = *status->holder;
  EXPECT_EQ(h.pid, ::getpid());
  EXPECT_TRUE(h.inspectable);
  EXPECT_EQ(h.command, own_command());
  EXPECT_FALSE(h.cmdline.empty());
  EXPECT_EQ(h.uid, ::geteuid());
  EXPECT_TRUE(h.record_agrees);
  EXPECT_GE(h.held_for.count(), 0);
  EXPECT_EQ(status->record, Record::agrees);
}

TEST(Holder, AnotherProcessOfOurs) {
  TempDir dir;
  Child child = test::lock_holder(dir / "l");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, child.pid());
  EXPECT_TRUE(status->holder->record_agrees);
}

TEST(Holder, AFlockCommandWithAnEmptyFile) {
  TempDir dir;
  Child flock = Child::spawn({"flock", (dir / "l").string(), "sh", "-c", "echo ready; read _"});
  ASSERT_EQ(flock.read_line(), "ready");
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, flock.pid());  // flock(1) took it; its sh child shares it
  EXPECT_EQ(status->holder->command, "flock");
  EXPECT_FALSE(status->recorded_pid);
  EXPECT_EQ(status->record, Record::absent);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  EXPECT_EQ(
      busy.error().message().rfind(
          "another installer is running (pid " + std::to_string(flock.pid()) + ", flock, for ", 0),
      0u)
      << busy.error().message();
}

TEST(Holder, ARecordNamingAnotherLiveProcessIsStaleAndTheKernelWins) {
  TempDir dir;
  Child child = test::lock_holder(dir / "l");
  test::write_text(dir / "l", std::to_string(::getpid()) + "\n");  // a forged claim
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, child.pid());
  EXPECT_FALSE(status->holder->record_agrees);
  EXPECT_EQ(status->recorded_pid, ::getpid());
  EXPECT_EQ(status->record, Record::stale);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  ASSERT_TRUE(busy.error().holder());
  EXPECT_EQ(busy.error().holder()->pid, child.pid());
}

TEST(Holder, AKilledLockerWhoseForkedChildStillHoldsIt) {
  TempDir dir;
  // The locker forks a child that inherits the locked descriptor, reports it, and is killed.
  Child locker = Child::fork([path = dir / "l"] {
    auto lock = Lock::acquire(path);
    if (!lock) return 1;
    const pid_t heir = ::fork();
    if (heir == 0) {
      test::wait_for_eof_on_stdin();
      ::_exit(0);
    }
    std::printf("%d\n", heir);
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return 0;
  });
  const pid_t heir = std::stoi(locker.read_line());
  locker.signal(SIGKILL);
  EXPECT_EQ(locker.wait(), 128 + SIGKILL);

  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, heir);
  EXPECT_EQ(status->recorded_pid, locker.pid());
  EXPECT_EQ(status->record, Record::stale);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  EXPECT_EQ(
      busy.error().message().rfind("another installer is running (pid " + std::to_string(heir), 0),
      0u)
      << busy.error().message();
  ::kill(heir, SIGKILL);
  EXPECT_TRUE(test::eventually([&] { return static_cast<bool>(Lock::acquire(dir / "l")); }));
}

TEST(Holder, AChildThatHasExecdHoldsItAfterTheLockerExits) {
  TempDir dir;
  Child locker = Child::fork([path = dir / "l"] {
    Options options;
    options.inheritable = true;
    auto lock = Lock::acquire(path, options);
    if (!lock) return 1;
    const pid_t heir = ::fork();
    if (heir == 0) {
      ::execlp("sh", "sh", "-c", "echo $$; read _", nullptr);
      ::_exit(127);
    }
    return 0;  // the locker exits; ~Lock closes its descriptor, the exec'd child keeps the lock
  });
  const pid_t heir = std::stoi(locker.read_line());
  EXPECT_EQ(locker.wait(), 0);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, heir);
  EXPECT_EQ(status->holder->command, "sh");
  EXPECT_EQ(status->holder->cmdline, (std::vector<std::string>{"sh", "-c", "echo $$; read _"}));
  EXPECT_EQ(status->record, Record::stale);
  ::kill(heir, SIGKILL);
}

TEST(Holder, WaitersAreListed) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  Child waiter = Child::spawn({"flock", (dir / "l").string(), "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->waiters.size(), 1u);
  EXPECT_EQ(status->waiters[0].pid, waiter.pid());
  EXPECT_EQ(status->waiters[0].command, "flock");
  EXPECT_EQ(status->waiters[0].parent, ::getpid());
  lock->release();
  EXPECT_EQ(waiter.wait(), 0);
}

// On `cpu`, holds `crowd` flocks on files of `dir`, prints "ready", then, until its stdin
// closes, takes a dozen more locks and drops them again: the list of locks grows and shrinks by
// up to a dozen entries, a fifth of a page of /proc/locks.
Child lock_churner(const std::filesystem::path& dir, std::size_t cpu, int crowd) {
  Child child = Child::fork([dir, cpu, crowd] {
    cpu_set_t only{};
    CPU_SET(cpu, &only);
    if (::sched_setaffinity(0, sizeof only, &only) != 0) return 2;
    std::vector<int> held;
    const std::string prefix = std::to_string(::getpid()) + "-";
    for (int i = 0; i < crowd; ++i) {
      const int fd = ::open((dir / ("crowd-" + prefix + std::to_string(i))).c_str(),
                            O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return 1;
      held.push_back(fd);
    }
    std::printf("ready\n");
    std::fflush(stdout);
    pollfd in{.fd = 0, .events = POLLIN, .revents = 0};
    constexpr int burst = 12;
    std::array<int, burst> churning{};
    while (::poll(&in, 1, 0) == 0) {
      for (int i = 0; i < burst; ++i) {
        const int fd = ::open((dir / ("churn-" + prefix + std::to_string(i))).c_str(),
                              O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return 1;
        churning[static_cast<std::size_t>(i)] = fd;
      }
      for (const int fd : churning) ::close(fd);
    }
    return 0;
  });
  EXPECT_EQ(child.read_line(), "ready");
  return child;
}

// /proc/locks is generated a page per read(), and locks taken and dropped elsewhere between two
// reads shift the list under the reader. This keeps it shifting: 200 held locks and a churner
// per CPU (the kernel keeps a list per CPU), until the end of the scope.
class LockChurn {
 public:
  explicit LockChurn(const std::filesystem::path& dir) {
    cpu_set_t usable{};
    EXPECT_EQ(::sched_getaffinity(0, sizeof usable, &usable), 0);
    for (std::size_t cpu = 0; cpu < CPU_SETSIZE && churners_.size() < 8; ++cpu) {
      if (CPU_ISSET(cpu, &usable)) churners_.push_back(lock_churner(dir, cpu, 200));
    }
  }
  ~LockChurn() {
    // Each churner inherited the stdin pipes of those forked before it: close them all first.
    for (Child& churner : churners_) churner.close_stdin();
    for (Child& churner : churners_) EXPECT_EQ(churner.wait(), 0);
  }
  LockChurn(const LockChurn&) = delete;
  LockChurn& operator=(const LockChurn&) = delete;

 private:
  std::vector<Child> churners_;
};

// A holder with no record, as flock(1) leaves it: only the kernel can name it.
Child recordless_holder(const std::filesystem::path& path) {
  Child holder = Child::fork([path] {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return 1;
    std::printf("ready\n");
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return 0;
  });
  EXPECT_EQ(holder.read_line(), "ready");
  return holder;
}

TEST(Holder, LocksComingAndGoingElsewhereDoNotBlurTheAnswer) {
  TempDir dir;
  Child holder = recordless_holder(dir / "l");
  Child waiter = Child::spawn({"flock", (dir / "l").string(), "true"});
  ASSERT_TRUE(test::someone_waits(dir / "l"));
  int free = 0, wrong_holder = 0, wrong_waiters = 0;
  {
    LockChurn churn(dir.path());
    for (int i = 0; i < 300; ++i) {
      auto status = inspect(dir / "l");
      ASSERT_TRUE(status) << status.error().message();
      if (!status->held) ++free;
      if (status->holders.size() != 1 || status->holders[0].pid != holder.pid()) ++wrong_holder;
      if (status->waiters.size() != 1 || status->waiters[0].pid != waiter.pid()) ++wrong_waiters;
    }
  }
  EXPECT_EQ(free, 0);
  EXPECT_EQ(wrong_holder, 0);
  EXPECT_EQ(wrong_waiters, 0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.wait(), 0);
}

TEST(Holder, ProcessesWhoseDescriptorsWeMayNotReadAreReportedUnverified) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  TempDir dir;
  Options readable;
  readable.mode = 0644;
  Child holder = test::lock_holder(dir / "l", readable);  // root
  ::chmod(dir.path().c_str(), 0755);
  Child viewer = Child::fork([path = dir / "l"] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    auto status = inspect(path);
    if (!status || !status->holder) return 3;
    std::printf("%d %s %d %s\n", status->holder->pid,
                std::string(to_string(status->holder->verification)).c_str(),
                status->holder->record_agrees ? 1 : 0,
                std::string(to_string(status->record)).c_str());
    return 0;
  });
  EXPECT_EQ(viewer.read_line(), std::to_string(holder.pid()) + " other_user 0 unverified");
  EXPECT_EQ(viewer.wait(), 0);
}

// `pidlock run F -- sh -c 'sleep & sleep & …'`: the shell (pidlock become the command) and both
// sleeps share the locked description, and inspect() lists every one of them, the kernel's locker
// first.
TEST(Holder, EveryProcessSharingTheLockIsListed) {
  TempDir dir;
  Child run = Child::spawn({test::pidlock_binary(), "run", (dir / "l").string(), "--", "sh", "-c",
                            "sleep 60 & a=$!; sleep 60 & b=$!; echo $$ $a $b; read _; kill $a $b"});
  std::istringstream pids(run.read_line());
  pid_t shell = 0, first = 0, second = 0;
  pids >> shell >> first >> second;
  ASSERT_GT(second, 0);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  std::vector<pid_t> listed;
  for (const auto& h : status->holders) {
    EXPECT_TRUE(h.verified()) << h.pid;
    listed.push_back(h.pid);
  }
  ASSERT_FALSE(listed.empty());
  EXPECT_EQ(shell, run.pid()) << "pidlock became the shell";
  EXPECT_EQ(listed.front(), run.pid()) << "the kernel's locker comes first";
  std::sort(listed.begin(), listed.end());
  std::vector<pid_t> expected{shell, first, second};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(listed, expected);
  EXPECT_EQ(status->holder->command, "sh");
  run.close_stdin();
  EXPECT_EQ(run.wait(), 0);
}

std::vector<pid_t> pids_of(const std::vector<Holder>& holders) {
  std::vector<pid_t> pids;
  for (const auto& h : holders) pids.push_back(h.pid);
  return pids;
}

std::vector<pid_t> sorted(std::vector<pid_t> pids) {
  std::sort(pids.begin(), pids.end());
  return pids;
}

// The locker forks A, which keeps the inherited descriptor, and B, which forks G and then closes
// its own copy: the lock is shared by the locker, A and G. Status finds sharers among the
// locker's descendants, so it must walk the whole tree (G's parent no longer holds it) and
// list exactly those three, the locker first.
TEST(Holder, DescendantsThatInheritedTheLockAreListedWithTheLocker) {
  TempDir dir;
  Child locker = Child::fork([path = dir / "l"] {
    auto lock = Lock::acquire(path);
    if (!lock) return 1;
    const pid_t a = ::fork();
    if (a == 0) {
      test::wait_for_eof_on_stdin();
      ::_exit(0);
    }
    int g_pid[2];
    if (::pipe(g_pid) != 0) return 2;
    const pid_t b = ::fork();
    if (b == 0) {
      const pid_t g = ::fork();
      if (g == 0) {
        test::wait_for_eof_on_stdin();
        ::_exit(0);
      }
      // A forked copy's release() closes its own descriptor and leaves the lock alone.
      if (lock->release()) ::_exit(3);
      [[maybe_unused]] auto w = ::write(g_pid[1], &g, sizeof g);
      test::wait_for_eof_on_stdin();
      ::_exit(0);
    }
    pid_t g = 0;
    if (::read(g_pid[0], &g, sizeof g) != sizeof g) return 4;
    std::printf("%d %d %d\n", a, b, g);
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return 0;
  });
  std::istringstream ids(locker.read_line());
  pid_t a = 0, b = 0, g = 0;
  ids >> a >> b >> g;
  ASSERT_GT(g, 0);

  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_TRUE(status->held);
  ASSERT_FALSE(status->holders.empty());
  EXPECT_EQ(status->holders.front().pid, locker.pid()) << "the kernel's locker comes first";
  for (const auto& h : status->holders) EXPECT_TRUE(h.verified()) << h.pid;
  EXPECT_EQ(sorted(pids_of(status->holders)), sorted({locker.pid(), a, g}))
      << "B closed its descriptor; G, forked before that, holds the lock";
  locker.close_stdin();  // A, B and G inherited the same stdin: they all see EOF
  EXPECT_EQ(locker.wait(), 0);
}

// Passes `fd` over a UNIX socket (SCM_RIGHTS): the receiver gets the same open file description.
bool send_descriptor(int socket, int fd) {
  char byte = 'f';
  iovec data{&byte, 1};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
  return ::sendmsg(socket, &message, 0) == 1;
}

int receive_descriptor(int socket) {
  char byte = 0;
  iovec data{&byte, 1};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  if (::recvmsg(socket, &message, MSG_CMSG_CLOEXEC) != 1) return -1;
  const cmsghdr* header = CMSG_FIRSTHDR(&message);
  if (header == nullptr || header->cmsg_type != SCM_RIGHTS) return -1;
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return fd;
}

// The locker sends its locked descriptor to a process that is not its descendant (a sibling,
// over a socket) and exits. The kernel still lists the dead locker; the lock lives on in the
// receiver, which status and the busy message must find.
TEST(Holder, ADescriptorSentToAnUnrelatedProcessIsFoundAfterTheLockerExits) {
  TempDir dir;
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Child receiver = Child::fork([socket = pair[1]] {
    const int fd = receive_descriptor(socket);
    if (fd < 0) return 1;
    std::printf("received\n");
    std::fflush(stdout);
    test::wait_for_eof_on_stdin();
    return 0;
  });
  Child locker = Child::fork([path = dir / "l", socket = pair[0]] {
    auto lock = Lock::acquire(path);
    if (!lock || !send_descriptor(socket, lock->native_handle())) return 1;
    // Gone without unlocking: ~Lock would unlock the description the receiver now shares.
    ::_exit(0);
  });
  ::close(pair[0]);
  ::close(pair[1]);
  ASSERT_EQ(locker.wait(), 0);
  ASSERT_EQ(receiver.read_line(), "received");

  auto status = inspect(dir / "l");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_TRUE(status->held);
  ASSERT_TRUE(status->holder);
  EXPECT_EQ(status->holder->pid, receiver.pid());
  EXPECT_TRUE(status->holder->verified());
  EXPECT_EQ(pids_of(status->holders), std::vector<pid_t>{receiver.pid()});
  EXPECT_EQ(status->recorded_pid, locker.pid());
  EXPECT_EQ(status->record, Record::stale);

  auto busy = Lock::acquire(dir / "l");
  ASSERT_FALSE(busy);
  ASSERT_TRUE(busy.error().holder());
  EXPECT_EQ(busy.error().holder()->pid, receiver.pid());
  receiver.close_stdin();
  EXPECT_EQ(receiver.wait(), 0);
}

TEST(Holder, HeldForComesFromTheRecordWhenItAgrees) {
  TempDir dir;
  auto lock = Lock::acquire(dir / "l");
  ASSERT_TRUE(lock);
  // Back-date the record by an hour: older than this process, so it cannot date the lock.
  const timespec times[2] = {{0, UTIME_OMIT}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir / "l").c_str(), times, 0), 0);
  auto status = inspect(dir / "l");
  ASSERT_TRUE(status && status->holder);
  EXPECT_LT(status->holder->held_for.count(), 3600);  // falls back to the process's age
}

}  // namespace
}  // namespace pidlock
