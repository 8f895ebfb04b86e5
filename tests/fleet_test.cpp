// Fleet mode against a real etcd (Debian's etcd-server) on loopback ports: one member for the
// functional tests, three for the failure tests.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "pidlock/fleet.hpp"
#include "support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::pidlock_binary;
using test::run;
using test::TempDir;
using Clock = std::chrono::steady_clock;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool etcd_available() { return run({"sh", "-c", "command -v etcd"}).code == 0; }

// A real etcd cluster of `size` members on 127.0.0.1, each in its own data directory.
class Cluster {
 public:
  explicit Cluster(int size) {
    std::string initial;
    for (int i = 0; i < size; ++i) {
      members_.push_back({"m" + std::to_string(i), free_port(), free_port(), std::nullopt});
      initial += (i ? "," : "") + members_.back().name + "=http://127.0.0.1:" + std::to_string(members_.back().peer);
    }
    for (auto& m : members_) {
      const std::string client = "http://127.0.0.1:" + std::to_string(m.client);
      const std::string peer = "http://127.0.0.1:" + std::to_string(m.peer);
      const std::string command =
          "exec etcd --name " + m.name + " --data-dir " + (dir_ / m.name).string() + " --listen-client-urls " +
          client + " --advertise-client-urls " + client + " --listen-peer-urls " + peer +
          " --initial-advertise-peer-urls " + peer + " --initial-cluster " + initial +
          " --initial-cluster-state new --heartbeat-interval 50 --election-timeout 500 > " +
          (dir_ / (m.name + ".log")).string() + " 2>&1";
      m.process.emplace(Child::spawn({"sh", "-c", command}));
    }
    for (int i = 0; i < size; ++i) {
      EXPECT_TRUE(test::eventually([&] { return answers(i); }, 30s)) << "etcd member " << i << " did not start";
    }
  }

  std::string endpoint(int i) const { return "http://127.0.0.1:" + std::to_string(members_[static_cast<std::size_t>(i)].client); }
  std::string endpoints() const {
    std::string all;
    for (std::size_t i = 0; i < members_.size(); ++i) all += (i ? "," : "") + endpoint(static_cast<int>(i));
    return all;
  }
  bool answers(int i) const {
    return run({pidlock_binary(), "status", "--etcd", endpoint(i), "probe"}, 5s).code == 0;
  }
  void stop(int i) {
    auto& m = members_[static_cast<std::size_t>(i)];
    m.process->signal(SIGKILL);
    m.process->wait();
  }
  void pause(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGSTOP); }
  void resume(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGCONT); }

 private:
  struct Member {
    std::string name;
    int client;
    int peer;
    std::optional<Child> process;
  };
  TempDir dir_;
  std::vector<Member> members_;
};

#define REQUIRE_ETCD() \
  if (!etcd_available()) GTEST_SKIP() << "etcd is not installed (Debian: etcd-server)"

// `pidlock run --etcd … NAME -- sh -c 'echo $$; read _'`: holds a slot until its stdin closes.
Child hold(const std::string& endpoints, const std::string& name, std::vector<std::string> options = {}) {
  std::vector<std::string> argv{pidlock_binary(), "run", "--etcd", endpoints};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {name, "--", "sh", "-c", "echo $$; read _ || :"});
  Child child = Child::spawn(argv);
  EXPECT_FALSE(child.read_line().empty());
  return child;
}

std::string fmt_hex(unsigned char byte) {
  constexpr std::string_view digits = "0123456789abcdef";
  return {digits[byte >> 4], digits[byte & 0x0Fu]};
}

std::string host() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

class Fleet : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (etcd_available()) cluster_ = new Cluster(1);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { REQUIRE_ETCD(); }
  static std::string endpoint() { return cluster_->endpoint(0); }
  static std::string unique(const std::string& base) {
    static int counter = 0;
    return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  }
  static Cluster* cluster_;
};
Cluster* Fleet::cluster_ = nullptr;

TEST_F(Fleet, SecondRunIsBusyAndNamesTheHolder) {
  const auto name = unique("busy");
  Child holder = hold(endpoint(), name);
  const auto r = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.err.rfind("another installer is running (pid " + std::to_string(holder.pid()) + " on " + host() +
                            ", for ",
                        0),
            0u)
      << r.err;
  EXPECT_NE(r.err.find("— fleet lock: " + name + ", 1 of 1 slots held"), std::string::npos) << r.err;
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), "-E", "9", name, "--", "true"}).code, 9);
}

TEST_F(Fleet, RunsTheCommandWithItsExitStatus) {
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), unique("status"), "--", "sh", "-c", "exit 5"}).code, 5);
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), unique("status"), "--", "no-such-command-xyz"}).code,
            127);
}

TEST_F(Fleet, StatusListsHoldersAndWaiters) {
  const auto name = unique("status");
  Child holder = hold(endpoint(), name);
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), "-w", "60", name, "--", "true"});
  nlohmann::json json;
  ASSERT_TRUE(test::eventually([&] {
    const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
    json = nlohmann::json::parse(r.out, nullptr, false);
    return r.code == 75 && json.is_object() && json["waiters"].size() == 1;
  }));
  EXPECT_EQ(json["name"], name);
  EXPECT_EQ(json["slots"], 1);
  EXPECT_EQ(json["held"], true);
  ASSERT_EQ(json["holders"].size(), 1u);
  EXPECT_EQ(json["holders"][0]["pid"], holder.pid());
  EXPECT_EQ(json["holders"][0]["host"], host());
  EXPECT_EQ(json["holders"][0]["command"], "sh -c echo $$; read _ || :");
  EXPECT_EQ(json["waiters"][0]["pid"], waiter.pid());
  const auto human = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_NE(human.out.find("1 of 1 slots held"), std::string::npos) << human.out;
  holder.close_stdin();
  EXPECT_EQ(waiter.wait(), 0);
}

TEST_F(Fleet, StatusTakesTheSlotCountFromTheHoldersRecords) {
  const auto name = unique("slots");
  Child first = hold(endpoint(), name, {"--slots", "3"});
  Child second = hold(endpoint(), name, {"--slots", "3"});
  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
  EXPECT_EQ(r.code, 0) << r.err;  // two of three: not full
  const auto json = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.out;
  EXPECT_EQ(json["slots"], 3);
  EXPECT_EQ(json["holders"].size(), 2u);
  EXPECT_EQ(json["full"], false);
  const auto human = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_NE(human.out.find("2 of 3 slots held"), std::string::npos) << human.out;
  first.close_stdin();
  second.close_stdin();
  EXPECT_EQ(first.wait(), 0);
  EXPECT_EQ(second.wait(), 0);
}

TEST_F(Fleet, AWaiterIsWokenByTheWatchWhenTheHolderFinishes) {
  const auto name = unique("handoff");
  Child holder = hold(endpoint(), name);
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), "-w", "60", name, "--", "echo", "mine"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", endpoint(), name}).out.find("waiting: pid") != std::string::npos;
  }));
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.read_line(), "mine");
  EXPECT_EQ(waiter.wait(), 0);
}

TEST_F(Fleet, WaitTimesOutAs75) {
  const auto name = unique("timeout");
  Child holder = hold(endpoint(), name);
  const auto r = run({pidlock_binary(), "run", "--etcd", endpoint(), "-w", "0.5", name, "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_NE(r.err.find("another installer is running"), std::string::npos);
}

TEST_F(Fleet, ContendersForTwoSlotsNeverExceedTwo) {
  const auto name = unique("slots");
  TempDir dir;
  std::vector<Child> contenders;
  constexpr int count = 8;
  for (int i = 0; i < count; ++i) {
    contenders.push_back(Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), "--slots", "2", "-w", "120",
                                       name, "--", PIDLOCK_FLEET_PROBE, dir.path().string()}));
  }
  for (auto& c : contenders) EXPECT_EQ(c.wait(60s), 0);
  const int max = std::stoi(test::read_text(dir / "max"));
  EXPECT_LE(max, 2);
  EXPECT_GE(max, 1);
  EXPECT_EQ(std::stoi(test::read_text(dir / "runs")), count);
  std::printf("%d contenders for 2 slots: at most %d at once\n", count, max);
}

TEST_F(Fleet, UnreachableEtcdIsNotBusy) {
  const auto r = run({pidlock_binary(), "run", "--etcd", "http://127.0.0.1:" + std::to_string(free_port()), "x",
                      "--", "true"});
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("Couldn't connect to server"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("pidlock: lease grant http://127.0.0.1:", 0), 0u) << r.err;
}

TEST_F(Fleet, UsageErrors) {
  EXPECT_EQ(run({pidlock_binary(), "run", "--slots", "2", "x", "--", "true"}).code, 64);  // --slots needs --etcd
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), "--exec", "x", "--", "true"}).code, 64);
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), "--on-lease-loss", "shrug", "x", "--", "true"}).code,
            64);
}

// Names, hosts and commands in etcd are whatever a holder wrote: status shows them escaped, on
// the lines it means to print, its JSON stays valid, and neither can the busy message draw on the
// terminal. (The record is JSON, so a command's invalid bytes are stored as U+FFFD.)
TEST_F(Fleet, HostileBytesAreEscapedAndTheJsonStaysValid) {
  const auto plain = unique("bytes");
  const auto name = plain + "\x1b[2J\xff";
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "sh", "-c",
                               "echo $$; read _ || :", "x\x1b]0;t\a\nforged", "\xe5\xae"});
  ASSERT_FALSE(holder.read_line().empty());
  auto no_controls = [](const std::string& text) {
    return std::none_of(text.begin(), text.end(), [](char c) {
      const auto b = static_cast<unsigned char>(c);
      return (b < 0x20 && b != '\n') || b == 0x7F;
    });
  };

  const auto human = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_EQ(human.code, 75);
  EXPECT_TRUE(no_controls(human.out)) << human.out;
  EXPECT_EQ(std::count(human.out.begin(), human.out.end(), '\n'), 2) << human.out;
  EXPECT_EQ(human.out.rfind("fleet lock " + plain + "\\e[2J\\xff: 1 of 1 slots held", 0), 0u)
      << human.out;
  EXPECT_NE(human.out.find(": sh -c echo $$; read _ || : x\\e]0;t\\a\\nforged \xef\xbf\xbd\n"),
            std::string::npos)
      << human.out;

  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
  EXPECT_EQ(r.code, 75);
  const auto json = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.out;
  EXPECT_EQ(json["name"], plain + "\x1b[2J\xef\xbf\xbd");
  ASSERT_EQ(json["holders"].size(), 1u);
  EXPECT_EQ(json["holders"][0]["command"], "sh -c echo $$; read _ || : x\x1b]0;t\a\nforged \xef\xbf\xbd");
  TempDir dir;
  test::write_text(dir / "status.json", r.out);
  const auto decoded = run({"python3", "-c",
                            "import base64, json, sys; "
                            "print(base64.b64decode(json.load(open(sys.argv[1]))['name_base64']).hex())",
                            (dir / "status.json").string()});
  std::string name_hex;
  for (const char c : name) name_hex += fmt_hex(static_cast<unsigned char>(c));
  EXPECT_EQ(decoded.out, name_hex + "\n") << decoded.err;

  const auto busy = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"});
  EXPECT_EQ(busy.code, 75);
  EXPECT_TRUE(no_controls(busy.err)) << busy.err;
  EXPECT_EQ(std::count(busy.err.begin(), busy.err.end(), '\n'), 1) << busy.err;
  EXPECT_NE(busy.err.find("— fleet lock: " + plain + "\\e[2J\\xff, 1 of 1 slots held"), std::string::npos)
      << busy.err;
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

TEST_F(Fleet, LibraryTakesAndReleasesASlot) {
  fleet::Options options;
  options.endpoints = {endpoint()};
  options.slots = 1;
  const auto name = unique("library");
  auto slot = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(slot) << slot.error().message();
  EXPECT_EQ(slot->index(), 0);
  EXPECT_TRUE(slot->keep_alive());
  auto second = fleet::Slot::acquire(name, options);
  ASSERT_FALSE(second);
  EXPECT_TRUE(second.error().held());
  ASSERT_TRUE(second.error().holder());
  EXPECT_EQ(second.error().holder()->pid, ::getpid());
  EXPECT_FALSE(slot->release());
  EXPECT_TRUE(fleet::Slot::acquire(name, options));
}

// --- Failures: leases, crashes and members that go away. ---

TEST(FleetFailure, HolderKilledFreesItsSlotWhenTheLeaseExpires) {
  REQUIRE_ETCD();
  Cluster cluster(3);
  const std::string ttl = "2";
  Child holder = hold(cluster.endpoints(), "crash", {"--ttl", ttl});
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoints(), "-w", "60", "crash", "--",
                               "echo", "next"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", cluster.endpoints(), "crash"}).out.find("waiting: pid") !=
           std::string::npos;
  }));
  const auto killed_at = Clock::now();
  holder.signal(SIGKILL);  // no revoke: only the lease's expiry can free the slot
  EXPECT_EQ(waiter.read_line(30s), "next");
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_EQ(waiter.wait(), 0);
  EXPECT_LT(seconds, 3 * std::stod(ttl));  // liveness: the slot does come back
  std::printf("holder killed: the next holder started after %.2f s (TTL %s s)\n", seconds, ttl.c_str());
  RecordProperty("crash_to_next_holder_ms", static_cast<int>(seconds * 1000));
}

TEST(FleetFailure, StoppingAnotherMemberWhileHeldChangesNothing) {
  REQUIRE_ETCD();
  Cluster cluster(3);
  Child holder = hold(cluster.endpoints(), "member", {"--ttl", "2"});
  cluster.stop(2);
  // Three renewals' worth of time: the lease lives on through the two members left.
  const auto until = Clock::now() + 3s;
  int refused = 0;
  while (Clock::now() < until) {
    const int code = run({pidlock_binary(), "run", "--etcd", cluster.endpoint(0) + "," + cluster.endpoint(1),
                          "member", "--", "true"}).code;
    // 69 while the two left elect a new leader (if the stopped one led); never 0.
    EXPECT_TRUE(code == 75 || code == 69) << code;
    refused += code == 75;
  }
  EXPECT_GT(refused, 0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

TEST(FleetFailure, StoppingTheMemberTheClientTalksToFailsOver) {
  REQUIRE_ETCD();
  Cluster cluster(3);
  Child holder = hold(cluster.endpoints(), "failover", {"--ttl", "2"});  // talks to member 0 first
  cluster.stop(0);
  const auto until = Clock::now() + 4s;  // two TTLs: renewals must have gone to member 1
  int answers = 0;
  while (Clock::now() < until) {
    const auto r = run({pidlock_binary(), "status", "--etcd", cluster.endpoint(1) + "," + cluster.endpoint(2),
                        "--json", "failover"});
    const auto json = nlohmann::json::parse(r.out, nullptr, false);
    if (!json.is_object()) continue;  // the two left may be electing a leader for a moment
    ++answers;
    ASSERT_EQ(json["holders"].size(), 1u) << "the slot was lost during failover";
    EXPECT_EQ(json["holders"][0]["pid"], holder.pid());
  }
  EXPECT_GT(answers, 0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);  // not 76: the lease was never lost
}

TEST(FleetFailure, LosingEtcdPastTheTtlTerminatesTheCommand) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1", "lost", "--",
                               "sh", "-c", "trap 'echo terminated; exit 0' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_EQ(holder.read_line(), "ready");
  cluster.pause(0);  // a partition: etcd neither answers nor closes connections
  EXPECT_EQ(holder.read_line(20s), "terminated");
  EXPECT_EQ(holder.wait(), 76);
  EXPECT_TRUE(holder.stderr_shows("pidlock: lost the fleet lock lost", 1s));
  cluster.resume(0);
}

TEST(FleetFailure, OnLeaseLossWarnOnlyWarns) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "--on-lease-loss", "warn", "warned", "--", "sh", "-c", "echo ready; read _; exit 3"});
  ASSERT_EQ(holder.read_line(), "ready");
  cluster.pause(0);
  // The warning comes once the TTL has passed without a renewal; the command is left alone.
  EXPECT_TRUE(holder.stderr_shows("pidlock: warning: the fleet lock warned may be lost", 20s));
  EXPECT_FALSE(holder.exited_within(0ms));
  cluster.resume(0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(30s), 3);  // the command's own status
}

}  // namespace
}  // namespace pidlock
