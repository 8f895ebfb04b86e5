// One process model in fleet mode (pidlock(1), "The command and its job"): pidlock stays as the
// command's parent to renew the lease, and the command lives only while pidlock does and only
// while the lease is known valid; its exit status is its own unless pidlock had to stop it; it
// inherits no connection to etcd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

#include "fleet_support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::Cluster;
using test::contains;
using test::eventually;
using test::pidlock_binary;
using test::read_text;
using test::TempDir;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

char process_state(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto after_name = stat.rfind(')');
  return after_name == std::string::npos || after_name + 2 >= stat.size() ? '?'
                                                                          : stat[after_name + 2];
}

bool ended(pid_t pid) {
  const char state = process_state(pid);
  return state == '?' || state == 'Z' || state == 'X';
}

std::vector<std::string> fleet_run(const std::string& endpoint, const std::string& name,
                                   const std::vector<std::string>& options,
                                   const std::vector<std::string>& command) {
  std::vector<std::string> argv{pidlock_binary(), "run", "--etcd", endpoint};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back(name);
  argv.push_back("--");
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

class FleetProcess : public test::SharedCluster<FleetProcess> {
 public:
  static test::ClusterConfig config() { return {}; }
};

// Killed alone (kill -9 of pidlock, the OOM killer), pidlock takes its command with it: the lease
// will expire and the next host's command start, and the first must not be running then.
TEST_F(FleetProcess, APidlockKilledAloneTakesItsCommandWithIt) {
  const std::string name = test::unique_name("killed");
  Child first = Child::spawn(fleet_run(cluster_->endpoint(0), name, {"--ttl", "2"},
                                       {"sh", "-c", "echo $$; exec sleep 600"}));
  const pid_t command = std::stoi(first.read_line());
  first.signal(SIGKILL);
  EXPECT_EQ(first.wait(), 128 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return ended(command); }, 1s)) << "well before the lease expires";
  // The next holder gets in once etcd expires the lease, and is alone.
  const auto next = test::run(fleet_run(cluster_->endpoint(0), name, {"-w", "10"}, {"true"}));
  EXPECT_EQ(next.code, 0) << next.err;
  EXPECT_TRUE(ended(command));
}

TEST_F(FleetProcess, TheCommandInheritsNoConnectionToEtcd) {
  const std::string name = test::unique_name("descriptors");
  const auto r = test::run(fleet_run(cluster_->endpoint(0), name, {},
                                     {"sh", "-c", "ls -l /proc/$$/fd/ | grep -c socket: || :"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "0\n") << "sockets among the command's descriptors";
}

#if defined(__x86_64__)
// A command run under ptrace, stopped at the system calls a test picks: a way to hold pidlock at
// an exact point (starting its command, sending a renewal) while time passes around it.
class Traced {
 public:
  explicit Traced(const std::vector<std::string>& argv)
      : child_(Child::fork([&] {
          ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
          ::raise(SIGSTOP);
          ::execvp(argv[0].c_str(), test::c_argv(argv).data());
          return 127;
        })) {
    int status = 0;
    running_ = ::waitpid(child_.pid(), &status, 0) == child_.pid() && WIFSTOPPED(status);
    ::ptrace(PTRACE_SETOPTIONS, child_.pid(), nullptr, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
  }

  // Lets it run to the entry (or, with `exit`, the return) of the next system call for which
  // `wanted` holds, and leaves it stopped there. False if it ended first.
  bool stop_at(const std::function<bool(const user_regs_struct&)>& wanted, bool exit = false) {
    while (running_) {
      if (::ptrace(PTRACE_SYSCALL, child_.pid(), nullptr, deliver_) != 0) return false;
      deliver_ = 0;
      int status = 0;
      if (::waitpid(child_.pid(), &status, 0) != child_.pid() || !WIFSTOPPED(status)) {
        running_ = false;
        return false;
      }
      if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
        // A signal for it (passed on), or the SIGTRAP that follows its exec (not).
        if (WSTOPSIG(status) != SIGTRAP) deliver_ = WSTOPSIG(status);
        continue;
      }
      const bool at_exit = !entering_;
      entering_ = !entering_;
      if (at_exit != exit) continue;
      user_regs_struct regs{};
      ::ptrace(PTRACE_GETREGS, child_.pid(), nullptr, &regs);
      regs_ = regs;
      if (wanted(regs)) return true;
    }
    return false;
  }

  // A fork (a clone(2) or clone3(2) that makes no thread): pidlock starting its command, with
  // fork() or posix_spawn().
  bool forks(const user_regs_struct& regs) const {
    if (regs.orig_rax == SYS_clone) return (regs.rdi & CLONE_THREAD) == 0;
    if (regs.orig_rax != SYS_clone3) return false;
    errno = 0;  // clone_args.flags, the first field of the structure rdi points to
    const long flags = ::ptrace(PTRACE_PEEKDATA, child_.pid(), regs.rdi, nullptr);
    return errno == 0 && (static_cast<unsigned long>(flags) & CLONE_THREAD) == 0;
  }

  const user_regs_struct& regs() const { return regs_; }
  void detach() { ::ptrace(PTRACE_DETACH, child_.pid(), nullptr, 0); }
  Child& child() { return child_; }

 private:
  Child child_;
  bool running_ = false;
  bool entering_ = true;
  int deliver_ = 0;
  user_regs_struct regs_{};
};

// A command that ended on its own has its own status, even when the renewal under way then fails.
// Here pidlock is held (ptrace) just as it sends a renewal, etcd stops answering, and two thirds
// of the TTL pass: that renewal can only fail, the lease then counting as lost. The command ends
// before pidlock goes on; pidlock must exit with the command's 0, not 76.
TEST(FleetProcessAlone, ACommandThatEndedOnItsOwnKeepsItsStatusWhenTheRenewalThenFails) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  TempDir dir;
  const auto fifo = dir / "end";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string name = test::unique_name("ended");
  Traced holder(fleet_run(cluster.endpoint(0), name, {"--ttl", "3"},
                          {"sh", "-c", "read _ < " + fifo.string() + " || :; exit 0"}));
  ASSERT_TRUE(holder.stop_at([&](const auto& regs) { return holder.forks(regs); }, /*exit=*/true));
  const auto command = static_cast<pid_t>(holder.regs().rax);
  ASSERT_GT(command, 0);
  cluster.pause(0);
  const auto silent_from = Clock::now();
  // A renewal: a send (or connect) once the command runs (pidlock's "go" to it is a send too).
  const auto runs = [&] {
    std::error_code ignored;
    return fs::read_symlink("/proc/" + std::to_string(command) + "/exe", ignored) !=
           fs::read_symlink("/proc/" + std::to_string(holder.child().pid()) + "/exe", ignored);
  };
  ASSERT_TRUE(holder.stop_at([&](const user_regs_struct& regs) {
    return (regs.orig_rax == SYS_sendto || regs.orig_rax == SYS_connect) && runs();
  })) << "no renewal";
  // The lease's own time passing, pidlock held: two thirds of the TTL (2 s) and a margin.
  std::this_thread::sleep_until(silent_from + 2200ms);
  const int end = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // EOF for the command's read
  ASSERT_GE(end, 0) << "the command is not reading its FIFO";
  ::close(end);
  ASSERT_TRUE(eventually([&] { return ended(command); }));
  holder.detach();
  const int code = holder.child().wait(30s);
  cluster.resume(0);
  EXPECT_EQ(code, 0) << holder.child().drain_stderr();
}

// pidlock starts the command only while the lease is known valid. Here pidlock is stopped just as
// it starts the command (at its fork, through ptrace) until etcd has expired the lease: it must
// find its grant too old and not start the command.
TEST(FleetProcessAlone, TheCommandIsNotStartedOnceTheLeaseIsNoLongerKnownValid) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  TempDir dir;
  const std::string name = test::unique_name("late");
  const auto marker = dir / "ran";
  Traced holder(fleet_run(cluster.endpoint(0), name, {"--ttl", "2"},
                          {"sh", "-c", "touch " + marker.string()}));
  ASSERT_TRUE(holder.stop_at([&](const auto& regs) { return holder.forks(regs); }))
      << "pidlock never started its command";
  // Stopped with its slot: the key goes when etcd expires the lease (2 s), which nobody renews.
  ASSERT_TRUE(eventually(
      [&] {
        const auto keys = cluster.etcdctl({"get", "--prefix", "--keys-only", "pidlock/" + name});
        return keys.code == 0 && !contains(keys.out, "slots/");
      },
      15s));
  holder.detach();
  EXPECT_EQ(holder.child().wait(), 76) << holder.child().drain_stderr();
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the command ran without a valid lease";
  EXPECT_TRUE(holder.child().stderr_shows("is no longer known to be held"))
      << holder.child().drain_stderr();
}
#endif

}  // namespace
}  // namespace pidlock
