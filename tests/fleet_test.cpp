// Fleet mode against a real etcd (Debian's etcd-server) on loopback ports: one member for the
// functional tests, three for the failure tests.
#include "pidlock/fleet.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base64.hpp"
#include "fleet/etcd_client.hpp"
#include "fleet_support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::Cluster;
using test::etcd_available;
using test::free_port;
using test::pidlock_binary;
using test::run;
using test::TempDir;
using Clock = std::chrono::steady_clock;

// `pidlock run --etcd … NAME -- sh -c 'echo $$; read _'`: holds a slot until its stdin closes.
Child hold(const std::string& endpoints, const std::string& name,
           std::vector<std::string> options = {}) {
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

class Fleet : public test::SharedCluster<Fleet> {
 public:
  static test::ClusterConfig config() { return {}; }

 protected:
  static std::string endpoint() { return cluster_->endpoint(0); }
  static std::string unique(const std::string& base) { return test::unique_name(base); }
};

TEST_F(Fleet, SecondRunIsBusyAndNamesTheHolder) {
  const auto name = unique("busy");
  Child holder = hold(endpoint(), name);
  const auto r = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"});
  EXPECT_EQ(r.code, 75);
  // Named as any holder is (pidlock::describe): where, what it runs, for how long.
  EXPECT_EQ(r.err.rfind("another installer is running (pid " + std::to_string(holder.pid()) +
                            " on " + host() + ", running sh -c ",
                        0),
            0u)
      << r.err;
  EXPECT_NE(r.err.find(", for "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("— fleet lock: " + name + ", 1 of 1 slots held"), std::string::npos)
      << r.err;
  EXPECT_EQ(
      run({pidlock_binary(), "run", "--etcd", endpoint(), "-E", "9", name, "--", "true"}).code, 9);
}

TEST_F(Fleet, RunsTheCommandWithItsExitStatus) {
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), unique("status"), "--", "sh", "-c",
                 "exit 5"})
                .code,
            5);
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), unique("status"), "--",
                 "no-such-command-xyz"})
                .code,
            127);
}

TEST_F(Fleet, StatusListsHoldersAndWaiters) {
  const auto name = unique("status");
  Child holder = hold(endpoint(), name);
  Child waiter =
      Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), "-w", "60", name, "--", "true"});
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
  Child waiter = Child::spawn(
      {pidlock_binary(), "run", "--etcd", endpoint(), "-w", "60", name, "--", "echo", "mine"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", endpoint(), name}).out.find("waiting: pid") !=
           std::string::npos;
  }));
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.read_line(), "mine");
  EXPECT_EQ(waiter.wait(), 0);
}

TEST_F(Fleet, WaitTimesOutAs75) {
  const auto name = unique("timeout");
  Child holder = hold(endpoint(), name);
  const auto r =
      run({pidlock_binary(), "run", "--etcd", endpoint(), "-w", "0.5", name, "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_NE(r.err.find("another installer is running"), std::string::npos);
}

TEST_F(Fleet, ContendersForTwoSlotsNeverExceedTwo) {
  const auto name = unique("slots");
  TempDir dir;
  std::vector<Child> contenders;
  constexpr int count = 8;
  for (int i = 0; i < count; ++i) {
    contenders.push_back(
        Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), "--slots", "2", "-w", "120",
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
  const auto r = run({pidlock_binary(), "run", "--etcd",
                      "http://127.0.0.1:" + std::to_string(free_port()), "x", "--", "true"});
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("Couldn't connect to server"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("pidlock: lease grant http://127.0.0.1:", 0), 0u) << r.err;
}

TEST_F(Fleet, UsageErrors) {
  EXPECT_EQ(run({pidlock_binary(), "run", "--slots", "2", "x", "--", "true"}).code,
            64);  // --slots needs --etcd
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), "--exec", "x", "--", "true"}).code,
            64);
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), "--on-lease-loss", "shrug", "x",
                 "--", "true"})
                .code,
            64);
}

// Names, hosts and commands in etcd are whatever a holder wrote: status shows them escaped, on
// the lines it means to print, its JSON stays valid, and neither can the busy message draw on the
// terminal. (The record is JSON, so a command's invalid bytes are stored as U+FFFD.)
TEST_F(Fleet, HostileBytesAreEscapedAndTheJsonStaysValid) {
  const auto plain = unique("bytes");
  const auto name = plain + "\x1b[2J\xff";
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "sh",
                               "-c", "echo $$; read _ || :", "x\x1b]0;t\a\nforged", "\xe5\xae"});
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
  EXPECT_NE(human.out.find(
                ", running sh -c echo $$; read _ || : x\\e]0;t\\a\\nforged \xef\xbf\xbd, for "),
            std::string::npos)
      << human.out;

  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
  EXPECT_EQ(r.code, 75);
  const auto json = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.out;
  EXPECT_EQ(json["name"], plain + "\x1b[2J\xef\xbf\xbd");
  ASSERT_EQ(json["holders"].size(), 1u);
  EXPECT_EQ(json["holders"][0]["command"],
            "sh -c echo $$; read _ || : x\x1b]0;t\a\nforged \xef\xbf\xbd");
  TempDir dir;
  test::write_text(dir / "status.json", r.out);
  const auto decoded =
      run({"python3", "-c",
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
  EXPECT_NE(busy.err.find("— fleet lock: " + plain + "\\e[2J\\xff, 1 of 1 slots held"),
            std::string::npos)
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

// --- Input is data: records anyone may write, endpoints that are not etcd. ---

// A record that no pidlock writes, put where a slot's record goes, as anyone with write access to
// the prefix could.
TEST_F(Fleet, MalformedSlotRecordsAreShownAsHeldAndNeverCrash) {
  REQUIRE_ETCDCTL();
  const std::string values[] = {
      R"({"host":"web-1","pid":"4242"})",
      "not JSON at all",
      R"({"host":"web-1","pid":99999999999999999999})",
      R"({"host":"web-1","pid":-7})",
      R"({"host":"web-1","pid":4242,"slots":1e300})",
      R"({"host":"web-1","pid":4242,"started_at":-9223372036854775808})",
      R"({"host":5,"pid":1})",
      "[]",
      "\x1b[2J\xff",
  };
  for (const auto& value : values) {
    SCOPED_TRACE(value);
    const auto name = unique("malformed");
    ASSERT_EQ(cluster_->etcdctl({"put", "pidlock/" + name + "/slots/0", value}).code, 0);

    const auto json_status =
        run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
    EXPECT_EQ(json_status.code, 75) << json_status.err;  // held: the key exists
    const auto json = nlohmann::json::parse(json_status.out, nullptr, false);
    ASSERT_TRUE(json.is_object()) << json_status.out;
    EXPECT_EQ(json["slots"], 1);
    ASSERT_EQ(json["holders"].size(), 1u);
    EXPECT_EQ(json["holders"][0]["malformed"], true);
    EXPECT_FALSE(json["holders"][0]["problem"].get<std::string>().empty());
    EXPECT_EQ(json["holders"][0]["raw"].get<std::string>().find('\x1b'), std::string::npos);

    const auto human = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
    EXPECT_EQ(human.code, 75);
    EXPECT_NE(human.out.find("slot 0: malformed record ("), std::string::npos) << human.out;

    const auto busy = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"});
    EXPECT_EQ(busy.code, 75) << busy.err;
    EXPECT_NE(busy.err.find("(slot 0: a malformed record ("), std::string::npos) << busy.err;
    EXPECT_NE(busy.err.find("1 of 1 slots held"), std::string::npos) << busy.err;

    const auto second_slot = run(
        {pidlock_binary(), "run", "--etcd", endpoint(), "--slots", "2", name, "--", "echo", "ran"});
    EXPECT_EQ(second_slot.code, 0) << second_slot.err;
    EXPECT_EQ(second_slot.out, "ran\n");
  }
}

TEST_F(Fleet, MalformedWaiterRecordsAreShownAndNeverCrash) {
  REQUIRE_ETCDCTL();
  const auto name = unique("waiters");
  ASSERT_EQ(cluster_->etcdctl({"put", "pidlock/" + name + "/waiters/x", R"({"pid":{}})"}).code, 0);
  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name});
  EXPECT_EQ(r.code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.out;
  ASSERT_EQ(json["waiters"].size(), 1u);
  EXPECT_EQ(json["waiters"][0]["malformed"], true);
  EXPECT_EQ(json["waiters"][0]["problem"], "host: missing");
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"}).code, 0);
}

TEST_F(Fleet, KeysThatAreNotSlotsHoldNothing) {
  REQUIRE_ETCDCTL();
  const auto name = unique("strays");
  for (const std::string stray : {"abc", "007", "-1", "0x"}) {
    ASSERT_EQ(cluster_->etcdctl({"put", "pidlock/" + name + "/slots/" + stray, "{}"}).code, 0);
  }
  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("0 of 1 slots held"), std::string::npos) << r.out;
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"}).code, 0);
}

TEST_F(Fleet, AHeldSlotBeyondTheCountRaisesIt) {
  REQUIRE_ETCDCTL();
  const auto name = unique("beyond");
  ASSERT_EQ(cluster_->etcdctl({"put", "pidlock/" + name + "/slots/4", "junk"}).code, 0);
  const auto r = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_EQ(r.code, 0) << r.err;  // slot 4 held means at least 5 slots; 4 are free
  EXPECT_NE(r.out.find("1 of 5 slots held"), std::string::npos) << r.out;
}

// Something that speaks HTTP but is not etcd: an answer it gives must fail cleanly, as "etcd
// cannot be used" (69), never as a crash.
TEST_F(Fleet, AnEndpointThatIsNotEtcdIsUnavailableNotACrash) {
  using test::FakeEndpoint;
  const FakeEndpoint::Answer answers[] = {
      {200, "[]"},
      {200, "{}"},
      {200, "garbage"},
      {200, R"({"header":{},"kvs":"x","ID":[]})"},
      {500, "oops"},
      {404, "Not Found"},
      {200, "", false, true},
  };
  for (const auto& answer : answers) {
    SCOPED_TRACE(answer.body);
    FakeEndpoint fake(answer);
    const auto status = run({pidlock_binary(), "status", "--etcd", fake.url(), "x"});
    EXPECT_EQ(status.code, 69) << status.err;
    EXPECT_EQ(status.err.rfind("pidlock: range " + fake.url() + ": ", 0), 0u) << status.err;
    EXPECT_EQ(run({pidlock_binary(), "status", "--etcd", fake.url(), "--json", "x"}).code, 69);
    const auto acquire = run({pidlock_binary(), "run", "--etcd", fake.url(), "x", "--", "true"});
    EXPECT_EQ(acquire.code, 69) << acquire.err;
    EXPECT_EQ(acquire.err.rfind("pidlock: lease grant " + fake.url() + ": ", 0), 0u) << acquire.err;
  }
}

TEST_F(Fleet, AWaiterGivesUpAtOnceOnAnAnswerThatWillNotChange) {
  test::FakeEndpoint fake({200, "[]"});
  const auto started = Clock::now();
  const auto r =
      run({pidlock_binary(), "run", "--etcd", fake.url(), "-w", "30", "x", "--", "true"});
  EXPECT_EQ(r.code, 69) << r.err;
  EXPECT_NE(r.err.find("not an etcd answer (HTTP 200): not a JSON object"), std::string::npos)
      << r.err;
  EXPECT_LT(Clock::now() - started, 10s) << "not retried until the deadline";
  EXPECT_EQ(fake.requests(), 1);
}

TEST_F(Fleet, AWaiterRetriesAnUnavailableEtcdUntilItsDeadline) {
  test::FakeEndpoint fake(
      {503, R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})"});
  const auto started = Clock::now();
  const auto r =
      run({pidlock_binary(), "run", "--etcd", fake.url(), "-w", "1.5", "x", "--", "true"});
  EXPECT_EQ(r.code, 69) << r.err;
  EXPECT_GE(Clock::now() - started, 1500ms);
  EXPECT_NE(
      r.err.find("etcd: Unavailable: etcdserver: no leader — still waiting for the fleet lock x"),
      std::string::npos)
      << r.err;
  EXPECT_GT(fake.requests(), 2);
}

// --- The library: waits, deadlines, leases ---

fleet::Options library_options(const std::string& endpoint) {
  fleet::Options options;
  options.endpoints = {endpoint};
  return options;
}

TEST_F(Fleet, LibraryRefusesUnusableOptions) {
  auto options = library_options(endpoint());
  EXPECT_EQ(fleet::Slot::acquire("", options).error().code(), std::errc::invalid_argument);
  EXPECT_EQ(fleet::inspect("", options).error().code(), std::errc::invalid_argument);
  for (const std::string prefix : {"", "pidlock", "a/b"}) {
    options.key_prefix = prefix;
    EXPECT_EQ(fleet::Slot::acquire("x", options).error().code(), std::errc::invalid_argument)
        << prefix;
    EXPECT_EQ(fleet::inspect("x", options).error().code(), std::errc::invalid_argument) << prefix;
  }
  options = library_options(endpoint());
  options.endpoints.clear();  // never a default one: whatever listens on 127.0.0.1:2379
  const auto nowhere = fleet::Slot::acquire("x", options);
  ASSERT_FALSE(nowhere);
  EXPECT_EQ(nowhere.error().code(), std::errc::invalid_argument) << nowhere.error().message();
  EXPECT_EQ(nowhere.error().message(),
            "pidlock: acquire x: a fleet lock needs etcd endpoints (none given)");
  EXPECT_EQ(fleet::inspect("x", options).error().code(), std::errc::invalid_argument);
  options = library_options(endpoint());
  options.password = "secret";  // without a user
  EXPECT_EQ(fleet::Slot::acquire("x", options).error().code(), std::errc::invalid_argument);
  options = library_options(endpoint());
  options.tls.key_file = "/etc/hostname";  // without its certificate
  EXPECT_EQ(fleet::Slot::acquire("x", options).error().code(), std::errc::invalid_argument);
  options = library_options(endpoint());
  options.tls.ca_file = "/nonexistent/ca.pem";
  const auto missing = fleet::Slot::acquire("x", options);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), fleet::errc::tls_failed);  // TLS set up wrong: exit 78
  EXPECT_EQ(missing.error().kind(), fleet::ErrorKind::tls);
  EXPECT_NE(missing.error().message().find("cannot read the CA file /nonexistent/ca.pem: No such "
                                           "file or directory"),
            std::string::npos)
      << missing.error().message();
  options = library_options(endpoint());
  options.slots = 0;
  EXPECT_EQ(fleet::Slot::acquire("x", options).error().code(), std::errc::invalid_argument);
  options = library_options(endpoint());
  for (const auto ttl : {std::chrono::seconds(0), std::chrono::seconds(-1),
                         std::chrono::seconds(9'000'000'001), std::chrono::seconds::max()}) {
    options.ttl = ttl;
    EXPECT_EQ(fleet::Slot::acquire("x", options).error().code(), std::errc::invalid_argument);
  }
}

TEST_F(Fleet, LibraryWaiterReportsAnUnavailableEtcdUntilItsDeadline) {
  test::FakeEndpoint fake(
      {503, R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})"});
  auto options = library_options(fake.url());
  options.wait = 1s;
  options.progress_interval = 200ms;
  std::vector<fleet::WaitProgress> reports;
  options.on_wait = [&](const fleet::WaitProgress& progress) { reports.push_back(progress); };
  const auto started = Clock::now();
  const auto slot = fleet::Slot::acquire(unique("unavailable"), options);
  ASSERT_FALSE(slot);
  EXPECT_GE(Clock::now() - started, 1s);
  EXPECT_EQ(slot.error().code(), fleet::errc::etcd_error);
  EXPECT_EQ(slot.error().code(), std::errc::io_error);
  EXPECT_FALSE(slot.error().held());
  ASSERT_FALSE(reports.empty());
  for (const auto& report : reports) {
    ASSERT_TRUE(report.failure);
    EXPECT_EQ(report.failure->message(),
              "pidlock: lease grant " + fake.url() + ": etcd: Unavailable: etcdserver: no leader");
  }
  // Capped exponential backoff: a handful of tries in a second, not hundreds.
  EXPECT_GE(fake.requests(), 3);
  EXPECT_LE(fake.requests(), 12);
}

TEST_F(Fleet, LibraryHolderIsFreshAfterALongWait) {
  auto options = library_options(endpoint());
  options.ttl = 1s;
  const auto name = unique("fresh");
  auto first = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(first) << first.error().message();
  options.wait = 60s;
  std::optional<std::expected<fleet::Slot, fleet::Error>> second;
  std::thread waiter([&] { second = fleet::Slot::acquire(name, options); });
  ASSERT_TRUE(test::eventually([&] {
    auto status = fleet::inspect(name, library_options(endpoint()));
    return status && status->waiters.size() == 1;
  }));
  // The waiter waits for three TTLs, renewing its lease all along, while we renew ours.
  const auto until = Clock::now() + 3s;
  while (Clock::now() < until) {
    ASSERT_TRUE(first->keep_alive());
    std::this_thread::sleep_for(250ms);  // the renewal cadence of a holder with a 1 s TTL
  }
  EXPECT_FALSE(first->release());
  waiter.join();
  ASSERT_TRUE(second && *second) << (*second).error().message();
  // Its last renewal counts, not its grant three seconds ago.
  EXPECT_FALSE((*second)->expired());
  EXPECT_GT((*second)->kill_after(), 0ns);
  EXPECT_LE((*second)->kill_after(), 900ms);  // never past the TTL less the margin
}

TEST_F(Fleet, LibraryWaitOfNearlyForeverWaits) {
  auto options = library_options(endpoint());
  const auto name = unique("forever");
  auto first = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(first) << first.error().message();
  options.wait = std::chrono::nanoseconds::max() - std::chrono::nanoseconds(1);
  std::optional<std::expected<fleet::Slot, fleet::Error>> second;
  std::thread waiter([&] { second = fleet::Slot::acquire(name, options); });
  // Registered as a waiter: it waits instead of calling a deadline in the past "busy".
  const bool waits = test::eventually([&] {
    auto status = fleet::inspect(name, library_options(endpoint()));
    return status && status->waiters.size() == 1;
  });
  EXPECT_TRUE(waits);
  EXPECT_FALSE(first->release());
  waiter.join();
  ASSERT_TRUE(second && *second) << (*second).error().message();
  EXPECT_EQ((*second)->index(), 0);
}

TEST_F(Fleet, LibraryHolderNoticesItsKeyDeletedAtTheNextRenewal) {
  auto options = library_options(endpoint());
  const auto name = unique("deleted");
  auto slot = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(slot) << slot.error().message();
  ASSERT_TRUE(slot->keep_alive());
  const auto kill_after = slot->kill_after();
  EXPECT_GT(kill_after, 4s);  // TTL 5 s, just renewed, less half a second of margin
  EXPECT_LE(kill_after, 4500ms);
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  ASSERT_EQ(etcd->delete_key("pidlock/" + name + "/slots/0").value_or(0),
            1);  // an operator's `etcdctl del`
  const auto renewed = slot->keep_alive();
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().code(), fleet::errc::slot_lost);
  EXPECT_NE(renewed.error().message().find("the key pidlock/" + name +
                                           "/slots/0 was deleted; the slot is lost"),
            std::string::npos)
      << renewed.error().message();
  EXPECT_TRUE(slot->lost());
  EXPECT_TRUE(slot->expired());
  EXPECT_EQ(slot->kill_after(), 0ns);
  EXPECT_EQ(slot->keep_alive().error().code(), fleet::errc::slot_lost) << "lost for good";
}

TEST_F(Fleet, LibraryHolderNoticesItsKeyReplaced) {
  auto options = library_options(endpoint());
  const auto name = unique("replaced");
  auto slot = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(slot) << slot.error().message();
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  ASSERT_TRUE(etcd->delete_key("pidlock/" + name + "/slots/0"));
  auto next = fleet::Slot::acquire(name, options);  // the next holder takes the freed slot
  ASSERT_TRUE(next) << next.error().message();
  const auto renewed = slot->keep_alive();
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().code(), fleet::errc::slot_lost);
  EXPECT_NE(renewed.error().message().find("was replaced"), std::string::npos)
      << renewed.error().message();
  EXPECT_TRUE(next->keep_alive()) << "the new holder is not disturbed";
}

TEST_F(Fleet, LibraryHolderNoticesItsLeaseRevokedElsewhere) {
  auto options = library_options(endpoint());
  const auto name = unique("revoked");
  auto slot = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(slot) << slot.error().message();
  const auto status = fleet::inspect(name, options);
  ASSERT_TRUE(status && status->holders.size() == 1);
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  ASSERT_TRUE(etcd->revoke(status->holders[0].lease));
  const auto renewed = slot->keep_alive();
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().code(), fleet::errc::slot_lost);
  EXPECT_NE(renewed.error().message().find("the lease has expired or was revoked"),
            std::string::npos)
      << renewed.error().message();
  EXPECT_TRUE(slot->lost());
}

// A deleted key may already be the next holder's: the command gets SIGTERM and, with no time
// left before someone else may hold the slot, SIGKILL at once.
TEST_F(Fleet, ADeletedSlotKeyStopsTheCommandWithinARenewal) {
  REQUIRE_ETCDCTL();
  const auto name = unique("del");
  Child holder = Child::spawn(
      {pidlock_binary(), "run", "--etcd", endpoint(), "--ttl", "3", name, "--", "sh", "-c",
       // Ends with pidlock, should a failing test kill it: nothing may keep the pipes open.
       "trap '' TERM; echo $$; while kill -0 $PPID; do sleep 0.05; done"});
  const pid_t command = std::stoi(holder.read_line());
  ASSERT_EQ(cluster_->etcdctl({"del", "pidlock/" + name + "/slots/0"}).code, 0);
  // Timed from the deletion done to the command's end: not etcdctl's start-up, nor pidlock's
  // revoking of the lease after the command has gone (two more round trips to etcd).
  const auto deleted_at = Clock::now();
  EXPECT_TRUE(test::eventually([&] { return ::kill(command, 0) != 0; }, 10s));
  const double seconds = std::chrono::duration<double>(Clock::now() - deleted_at).count();
  EXPECT_EQ(holder.wait(10s), 76);
  const std::string err = holder.drain_stderr();
  EXPECT_NE(err.find("was deleted; the slot is lost"), std::string::npos) << err;
  EXPECT_NE(err.find("sending SIGKILL"), std::string::npos) << err;
  EXPECT_LT(seconds, 0.5 + 1.0);  // one renewal period (TTL/6), and the renewal itself
  std::printf("slot key deleted: the command was stopped after %.2f s (renewals every 0.5 s)\n",
              seconds);
}

// --- Failures: leases, crashes and members that go away. ---

TEST(FleetFailure, HolderKilledFreesItsSlotWhenTheLeaseExpires) {
  REQUIRE_ETCD();
  Cluster cluster(3);
  const std::string ttl = "2";
  Child holder = hold(cluster.endpoints(), "crash", {"--ttl", ttl});
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoints(), "-w", "60",
                               "crash", "--", "echo", "next"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", cluster.endpoints(), "crash"})
               .out.find("waiting: pid") != std::string::npos;
  }));
  const auto killed_at = Clock::now();
  holder.signal(SIGKILL);  // no revoke: only the lease's expiry can free the slot
  EXPECT_EQ(waiter.read_line(30s), "next");
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_EQ(waiter.wait(), 0);
  EXPECT_LT(seconds, 3 * std::stod(ttl));  // liveness: the slot does come back
  std::printf("holder killed: the next holder started after %.2f s (TTL %s s)\n", seconds,
              ttl.c_str());
  RecordProperty("crash_to_next_holder_ms", static_cast<int>(seconds * 1000));
}

TEST(FleetFailure, StoppingAnotherMemberWhileHeldChangesNothing) {
  REQUIRE_ETCD();
  Cluster cluster(3);
  // A TTL that outlasts a leader election (about a second, more on a loaded machine), should the
  // stopped member have led.
  Child holder = hold(cluster.endpoints(), "member", {"--ttl", "5"});
  cluster.stop(2);
  // Three renewals' worth of time: the lease lives on through the two members left.
  const auto until = Clock::now() + 3s;
  int refused = 0;
  while (Clock::now() < until) {
    const int code = run({pidlock_binary(), "run", "--etcd",
                          cluster.endpoint(0) + "," + cluster.endpoint(1), "member", "--", "true"})
                         .code;
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
  // Talks to member 0 first. A TTL that outlasts the leader election stopping member 0 may
  // start (about a second, more on a loaded machine).
  Child holder = hold(cluster.endpoints(), "failover", {"--ttl", "5"});
  cluster.stop(0);
  const auto until = Clock::now() + 4s;  // several renewals (every TTL/6): they went to member 1
  int answers = 0;
  while (Clock::now() < until) {
    const auto r = run({pidlock_binary(), "status", "--etcd",
                        cluster.endpoint(1) + "," + cluster.endpoint(2), "--json", "failover"});
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
  Child holder = Child::spawn(
      {pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1", "lost", "--", "sh",
       "-c", "trap 'echo terminated; exit 0' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_EQ(holder.read_line(), "ready");
  cluster.pause(0);  // a partition: etcd neither answers nor closes connections
  EXPECT_EQ(holder.read_line(20s), "terminated");
  EXPECT_EQ(holder.wait(), 76);
  EXPECT_TRUE(holder.stderr_shows("pidlock: lost the fleet lock lost", 1s));
  cluster.resume(0);
}

// A command that ignores SIGTERM is killed before etcd could hand its slot to the next holder:
// the lease expires a TTL after the last renewal, which came before the pause.
TEST(FleetFailure, ACommandIgnoringSigtermIsKilledBeforeTheLeaseCouldExpire) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "4",
                               "stubborn", "--", "sh", "-c",
                               "trap '' TERM; echo $$; while :; do sleep 0.05; done"});
  const pid_t command = std::stoi(holder.read_line());
  const auto paused_at = Clock::now();
  cluster.pause(0);
  // The command's end, not pidlock's: pidlock then still tries to revoke the lease.
  ASSERT_TRUE(test::eventually([&] { return ::kill(command, 0) != 0; }, 20s));
  const double seconds = std::chrono::duration<double>(Clock::now() - paused_at).count();
  EXPECT_EQ(holder.wait(20s), 76);
  const std::string err = holder.drain_stderr();
  EXPECT_NE(err.find("sending SIGKILL"), std::string::npos) << err;
  EXPECT_LT(seconds, 4.0) << "the command outlived the lease: " << err;
  std::printf("etcd paused: a command ignoring SIGTERM was killed %.2f s later (TTL 4 s)\n",
              seconds);
  cluster.resume(0);
}

TEST(FleetFailure, KillAfterSetsTheGracePeriod) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "--kill-after", "0", "graceless", "--", "sh", "-c",
                               "trap '' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_EQ(holder.read_line(), "ready");
  cluster.pause(0);
  EXPECT_EQ(holder.wait(20s), 76);
  EXPECT_TRUE(holder.stderr_shows("sending SIGKILL", 1s));
  cluster.resume(0);
}

TEST(FleetFailure, OnLeaseLossWarnOnlyWarns) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "--on-lease-loss", "warn", "warned", "--", "sh", "-c",
                               "echo ready; read _; exit 3"});
  ASSERT_EQ(holder.read_line(), "ready");
  cluster.pause(0);
  // The warning comes once the TTL has passed without a renewal; the command is left alone.
  EXPECT_TRUE(holder.stderr_shows("pidlock: warning: the fleet lock warned may be lost", 20s));
  EXPECT_FALSE(holder.exited_within(0ms));
  cluster.resume(0);
  holder.close_stdin();
  EXPECT_EQ(holder.wait(30s), 3);  // the command's own status
}

// --- Waiters hold nothing: they ride out an etcd that stalls. ---

TEST(FleetFailure, AWaiterRidesOutAnEtcdPause) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = hold(cluster.endpoint(0), "pause", {"--ttl", "10"});  // outlives the pause
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "-w", "30", "pause", "--", "echo", "mine"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", cluster.endpoint(0), "pause"})
               .out.find("waiting: pid") != std::string::npos;
  }));
  const auto paused_at = Clock::now();
  cluster.pause(0);
  EXPECT_TRUE(waiter.stderr_shows("still waiting for the fleet lock pause", 10s));
  std::this_thread::sleep_until(paused_at + 2500ms);  // how long the outage lasts
  cluster.resume(0);
  EXPECT_TRUE(
      waiter.stderr_shows("pidlock: etcd answers again; waiting for the fleet lock pause", 10s));
  EXPECT_FALSE(waiter.exited_within(0ms));
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.read_line(20s), "mine");
  EXPECT_EQ(waiter.wait(), 0);
}

TEST(FleetFailure, AWaiterRetriesALeaseGrantThatTimesOut) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  cluster.pause(0);
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "-w", "15", "stalled", "--", "echo", "mine"});
  EXPECT_TRUE(waiter.stderr_shows(
      "pidlock: lease grant " + cluster.endpoint(0) + ": etcd: Timeout was reached", 10s));
  cluster.resume(0);
  EXPECT_EQ(waiter.read_line(15s), "mine");
  EXPECT_EQ(waiter.wait(), 0);
}

TEST(FleetFailure, AWaiterRidesOutRepeatedShortStalls) {
  REQUIRE_ETCD();
  Cluster cluster(1);
  Child holder = hold(cluster.endpoint(0), "stalls", {"--ttl", "10"});
  Child waiter = Child::spawn({pidlock_binary(), "run", "--etcd", cluster.endpoint(0), "--ttl", "1",
                               "-w", "15", "stalls", "--", "echo", "mine"});
  ASSERT_TRUE(test::eventually([&] {
    return run({pidlock_binary(), "status", "--etcd", cluster.endpoint(0), "stalls"})
               .out.find("waiting: pid") != std::string::npos;
  }));
  // 800 ms stalls, 200 ms apart: each outlives the waiter's renewal and its request timeout.
  for (int i = 0; i < 4; ++i) {
    cluster.pause(0);
    std::this_thread::sleep_for(800ms);
    cluster.resume(0);
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_FALSE(waiter.exited_within(0ms));
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(waiter.read_line(15s), "mine");
  EXPECT_EQ(waiter.wait(), 0);
}

}  // namespace
}  // namespace pidlock

namespace pidlock {
namespace {

// --- Fencing tokens, names with '/', slot count agreement ---

TEST_F(Fleet, FencesStrictlyIncreaseAcrossSuccessiveHoldersOfSeveralProcesses) {
  const auto name = unique("fence");
  TempDir dir;
  const std::string file = (dir / "fences").string();
  constexpr int processes = 5;
  constexpr int each = 10;
  std::vector<Child> takers;
  for (int i = 0; i < processes; ++i) {
    takers.push_back(
        Child::spawn({PIDLOCK_FLEET_PROBE, "fence", endpoint(), name, file, std::to_string(each)}));
  }
  for (auto& taker : takers) EXPECT_EQ(taker.wait(60s), 0) << taker.drain_stderr();
  std::istringstream lines(test::read_text(file));
  std::vector<std::int64_t> fences;
  for (std::int64_t fence = 0; lines >> fence;) fences.push_back(fence);
  ASSERT_EQ(fences.size(), std::size_t{processes * each});
  EXPECT_GT(fences.front(), 0);
  for (std::size_t i = 1; i < fences.size(); ++i) {
    EXPECT_GT(fences[i], fences[i - 1]) << "grant " << i;
  }
}

TEST_F(Fleet, TheFenceIsTheSlotKeysCreationAndInspectShowsIt) {
  auto options = library_options(endpoint());
  options.slots = 2;
  const auto name = unique("fence-status");
  auto first = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(first) << first.error().message();
  auto second = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_GT(second->fence(), first->fence());
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  const auto key = etcd->get("pidlock/" + name + "/slots/" + std::to_string(first->index()));
  ASSERT_TRUE(key && *key);
  EXPECT_EQ((*key)->create_revision, first->fence());
  const auto status = fleet::inspect(name, options);
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_EQ(status->holders.size(), 2u);
  EXPECT_EQ(status->holders[0].fence, first->fence());
  EXPECT_EQ(status->holders[1].fence, second->fence());
  EXPECT_EQ(fleet::Slot().fence(), 0);
}

TEST_F(Fleet, NamesWithSlashesTakeTheirOwnKeys) {
  const auto base = unique("slash");
  const auto options = library_options(endpoint());
  // Built to collide, were the name written into the key as it is: "B/slots/0" would own
  // B's slot 0 key's subtree, and "B%2Fslots%2F0" its encoding.
  const std::vector<std::string> names = {base,       base + "/slots/0", base + "/slots",
                                          base + "/", "/" + base,        base + "%2Fslots%2F0",
                                          base + "%"};
  std::vector<fleet::Slot> held;
  for (const auto& name : names) {
    auto slot = fleet::Slot::acquire(name, options);
    ASSERT_TRUE(slot) << name << ": " << slot.error().message();
    held.push_back(std::move(*slot));
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto status = fleet::inspect(names[i], options);
    ASSERT_TRUE(status) << status.error().message();
    ASSERT_EQ(status->holders.size(), 1u) << names[i];
    EXPECT_EQ(status->holders[0].fence, held[i].fence()) << names[i];
    const auto again = fleet::Slot::acquire(names[i], options);
    ASSERT_FALSE(again);
    EXPECT_TRUE(again.error().held()) << names[i];
  }
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  // Names without '%' or '/' keep the keys they always had.
  const auto plain = etcd->get("pidlock/" + base + "/slots/0");
  ASSERT_TRUE(plain && *plain);
  EXPECT_EQ((*plain)->create_revision, held[0].fence());
  const auto encoded = etcd->get("pidlock/" + base + "%2Fslots%2F0/slots/0");
  ASSERT_TRUE(encoded && *encoded);
  EXPECT_EQ((*encoded)->create_revision, held[1].fence());
}

TEST_F(Fleet, ADifferentSlotCountThanTheHoldersIsRefused) {
  auto options = library_options(endpoint());
  options.slots = 3;
  const auto name = unique("count");
  std::vector<fleet::Slot> held;
  for (int i = 0; i < 3; ++i) {
    auto slot = fleet::Slot::acquire(name, options);
    ASSERT_TRUE(slot) << slot.error().message();
    held.push_back(std::move(*slot));
  }
  // Only slot 2 left held: a holder beyond the asker's two slots still counts.
  EXPECT_FALSE(held[0].release());
  EXPECT_FALSE(held[1].release());
  for (const int asked : {2, 4}) {
    options.slots = asked;
    options.wait = 30s;
    const auto started = Clock::now();
    const auto refused = fleet::Slot::acquire(name, options);
    ASSERT_FALSE(refused);
    EXPECT_LT(Clock::now() - started, 5s) << "a mismatch was waited out";
    EXPECT_EQ(refused.error().code(), fleet::errc::slot_count_mismatch);
    EXPECT_EQ(refused.error().code(), std::errc::invalid_argument);
    EXPECT_FALSE(refused.error().held());
    EXPECT_EQ(refused.error().kind(), fleet::ErrorKind::slot_count_mismatch);
    EXPECT_EQ(refused.error().message(),
              "pidlock: acquire " + name +
                  ": the fleet lock has 3 slots, as its holders were started with; this one asked "
                  "for " +
                  std::to_string(asked))
        << refused.error().message();
  }
  options.slots = 3;
  options.wait = 0s;
  auto agreeing = fleet::Slot::acquire(name, options);
  EXPECT_TRUE(agreeing) << agreeing.error().message();
}

// An asker for a fresh lock NAME, with `slots` slots, through a relay that puts `key` = `value`
// into etcd just before it passes each of the asker's creates on: between its read of the holders
// and its create, every time.
std::expected<fleet::Slot, fleet::Error> acquire_with_a_put_between(
    test::Cluster& cluster, const std::string& member, const std::string& name, int slots,
    const std::string& key, const std::string& value) {
  bool put = false;
  test::FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(member);
  relaying.before_relaying = [&](const std::string& path) {
    if (path != "/v3/kv/txn") return;
    put = true;
    EXPECT_EQ(cluster.etcdctl({"put", key, value}).code, 0);
  };
  test::FakeEndpoint between(relaying);
  auto options = library_options(between.url());
  options.slots = slots;
  options.request_timeout = 30s;  // etcdctl runs while the create waits
  auto outcome = fleet::Slot::acquire(name, options);
  EXPECT_TRUE(put) << "the create was never relayed";
  return outcome;
}

// A holder started with another slot count that comes between an asker's read of the holders
// and its create, in a slot the asker does not ask for: the create is refused (a holder came since
// the read), the asker reads again, and finds the mismatch. Without that condition the asker would
// take slot 0 beside a holder of slot 1 while believing the lock has one slot.
TEST_F(Fleet, AHolderThatComesBetweenTheReadAndTheCreateIsSeen) {
  REQUIRE_ETCDCTL();
  const auto name = unique("count-between");
  const auto refused =
      acquire_with_a_put_between(*cluster_, endpoint(), name, 1, "pidlock/" + name + "/slots/1",
                                 R"({"host":"other","pid":1,"command":"x","slots":2})");
  ASSERT_FALSE(refused) << "took slot 0 beside a holder started with 2 slots";
  EXPECT_EQ(refused.error().kind(), fleet::ErrorKind::slot_count_mismatch)
      << refused.error().message();
  EXPECT_NE(refused.error().message().find("the fleet lock has 2 slots"), std::string::npos)
      << refused.error().message();
}

// Keys under slots/ that are not slots hold nothing, and one rewritten between every read and
// create does not stand in the asker's way either: the condition covers slot keys only.
TEST_F(Fleet, AKeyThatIsNotASlotWrittenBetweenTheReadAndTheCreateChangesNothing) {
  REQUIRE_ETCDCTL();
  const auto name = unique("count-foreign");
  const auto slot = acquire_with_a_put_between(*cluster_, endpoint(), name, 1,
                                               "pidlock/" + name + "/slots/x", "not a slot");
  ASSERT_TRUE(slot) << slot.error().message();
  EXPECT_EQ(slot->index(), 0);
}

// Holders that keep coming between every read and create (here one rewritten each time) make
// the lock busy after a few reads: the asker is told so, or waits it out, never loops on etcd.
TEST_F(Fleet, AnAskerThatKeepsLosingTheRaceIsToldBusyNotHeldInALoop) {
  REQUIRE_ETCDCTL();
  const auto name = unique("count-churn");
  const auto busy =
      acquire_with_a_put_between(*cluster_, endpoint(), name, 3, "pidlock/" + name + "/slots/2",
                                 R"({"host":"other","pid":1,"command":"x","slots":3})");
  ASSERT_FALSE(busy);
  EXPECT_TRUE(busy.error().held()) << busy.error().message();
  EXPECT_NE(busy.error().message().find("(pid 1 on other, running x"), std::string::npos)
      << "names the holder it last read: " << busy.error().message();
}

TEST_F(Fleet, AHolderWithoutARecordedCountBeyondOursIsAMismatch) {
  REQUIRE_ETCDCTL();
  const auto name = unique("count-old");
  ASSERT_EQ(cluster_
                ->etcdctl({"put", "pidlock/" + name + "/slots/4",
                           R"({"host":"old","pid":1,"command":"x"})"})
                .code,
            0);
  auto options = library_options(endpoint());
  options.slots = 2;
  const auto refused = fleet::Slot::acquire(name, options);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), fleet::errc::slot_count_mismatch);
  EXPECT_NE(refused.error().message().find("has at least 5 slots"), std::string::npos)
      << refused.error().message();
  options.slots = 5;
  EXPECT_TRUE(fleet::Slot::acquire(name, options));
}

}  // namespace
}  // namespace pidlock

namespace pidlock {
namespace {

// --- One slot per lease, whatever answers are lost ---

// A waiter's create reaches etcd but its answer is lost; meanwhile a lower slot frees. Trying
// again, the waiter must find the slot it already holds, not take the freed one too: one lease,
// one slot, and the other left for the next asker.
TEST_F(Fleet, ALostAnswerToACreateLeavesTheWaiterOneSlotNotTwo) {
  const auto name = unique("lost-answer");
  auto options = library_options(endpoint());
  options.slots = 2;
  auto first = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_EQ(first->index(), 0);
  std::atomic<bool> dropped{false};
  test::FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(endpoint());
  relaying.drop_answer = [&](const std::string& path, const std::string& body) {
    return path == "/v3/kv/txn" && test::contains(body, "request_put") && !dropped.exchange(true);
  };
  // Slot 0 frees after the create was done and before the waiter tries again.
  relaying.after_dropping = [&](const std::string&) { EXPECT_FALSE(first->release()); };
  test::FakeEndpoint lossy(relaying);
  auto waiting = library_options(lossy.url());
  waiting.slots = 2;
  waiting.wait = 30s;
  auto waiter = fleet::Slot::acquire(name, waiting);
  ASSERT_TRUE(waiter) << waiter.error().message();
  ASSERT_TRUE(dropped) << "no create's answer was dropped";
  EXPECT_EQ(waiter->index(), 1) << "the waiter holds slot 1, whose create it did not hear of";
  const auto status = fleet::inspect(name, library_options(endpoint()));
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_EQ(status->holders.size(), 1u) << "one lease holds two slots";
  EXPECT_EQ(status->holders[0].fence, waiter->fence());
  auto next = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(next) << "the slot the waiter took twice: " << next.error().message();
  EXPECT_EQ(next->index(), 0);
}

// --- Only the slot keys are read ---

// Large values under the name that are not slot numbers (another tool's keys, a mistake) are
// never fetched: the lock works, and status answers, as if they were not there. Under waiters/,
// the queue needs keys only; status, which shows waiters' values, reads them a few at a time.
TEST_F(Fleet, LargeValuesUnderTheNameThatAreNotSlotsAreNeverRead) {
  const auto name = unique("big");
  auto etcd = fleet::etcd::Client::open({endpoint()}, 20s);
  ASSERT_TRUE(etcd);
  const std::string large(1400 * 1000, 'j');  // under etcd's 1.5 MiB request limit
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i)
    keys.push_back("pidlock/" + name + "/slots/junk" + std::to_string(i));
  // Starting with a digit, so among the slot numbers' range, but not slot numbers.
  for (const std::string other : {"0junk", "1-x", "007"})
    keys.push_back("pidlock/" + name + "/slots/" + other);
  for (int i = 0; i < 10; ++i)
    keys.push_back("pidlock/" + name + "/waiters/junk" + std::to_string(i));
  for (const auto& key : keys) ASSERT_TRUE(etcd->put(key, large, 0)) << key;
  const auto r = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "echo", "ran"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ran\n");
  const auto status = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("0 of 1 slots held"), std::string::npos) << status.out;
  std::size_t listed = 0;
  for (auto at = status.out.find("waiting: malformed record (not JSON): jjj");
       at != std::string::npos; at = status.out.find("waiting: malformed", at + 1)) {
    ++listed;
  }
  EXPECT_EQ(listed, 10u) << status.err;
  for (const auto& key : keys) (void)etcd->delete_key(key);
}

// --- Messages ---

// A slot key without a lease (written by hand) never expires: the busy message and status name
// the key, say so, and give the command that removes it.
TEST_F(Fleet, ASlotKeyWithoutALeaseIsNamedWithHowToRemoveIt) {
  REQUIRE_ETCDCTL();
  const auto name = unique("leaseless");
  const std::string key = "pidlock/" + name + "/slots/0";
  ASSERT_EQ(cluster_->etcdctl({"put", key, "{not json"}).code, 0);
  const std::string advice =
      "key " + key + ": it has no lease, so it never expires; remove it with etcdctl del " + key;
  const auto busy = run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"});
  EXPECT_EQ(busy.code, 75) << busy.err;
  EXPECT_NE(busy.err.find("(slot 0: a malformed record (not JSON), " + advice + ")"),
            std::string::npos)
      << busy.err;
  const auto status = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_EQ(status.code, 75);
  EXPECT_NE(status.out.find(advice), std::string::npos) << status.out;
  const auto json = nlohmann::json::parse(
      run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name}).out, nullptr, false);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json["holders"][0]["key"], key);
  EXPECT_EQ(json["holders"][0]["lease"], "0");
  // As advised:
  ASSERT_EQ(cluster_->etcdctl({"del", key}).code, 0);
  EXPECT_EQ(run({pidlock_binary(), "run", "--etcd", endpoint(), name, "--", "true"}).code, 0);
}

// A malformed record's value is escaped once (printable ASCII, \xNN for the rest), as the JSON
// has it, not escaped again for the terminal: \x1b, not \\x1b.
TEST_F(Fleet, AMalformedRecordsValueIsEscapedOnceInStatus) {
  const auto name = unique("escaped-once");
  auto etcd = fleet::etcd::Client::open({endpoint()}, 2s);
  ASSERT_TRUE(etcd);
  ASSERT_TRUE(etcd->put("pidlock/" + name + "/slots/0", "\x1b[2J\\", 0));
  ASSERT_TRUE(etcd->put("pidlock/" + name + "/waiters/x", "\x1b[2J\\", 0));
  const auto status = run({pidlock_binary(), "status", "--etcd", endpoint(), name});
  EXPECT_NE(status.out.find("  slot 0: malformed record (not JSON): \\x1b[2J\\x5c\n"),
            std::string::npos)
      << status.out;
  EXPECT_NE(status.out.find("  waiting: malformed record (not JSON): \\x1b[2J\\x5c\n"),
            std::string::npos)
      << status.out;
  EXPECT_EQ(status.out.find("\\\\"), std::string::npos) << "escaped twice: " << status.out;
  const auto json = nlohmann::json::parse(
      run({pidlock_binary(), "status", "--etcd", endpoint(), "--json", name}).out, nullptr, false);
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json["waiters"][0]["raw"], "\\x1b[2J\\x5c");
}

// --- What on_wait throws ---

std::vector<std::string> leases(test::Cluster& cluster) {
  std::vector<std::string> ids;
  std::istringstream lines(cluster.etcdctl({"lease", "list"}).out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && !line.starts_with("found")) ids.push_back(line);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// As the local lock does: what the callback throws stops the wait, comes back as an Error of kind
// cancelled, and leaves nothing behind in etcd: no lease, no place in the queue.
TEST_F(Fleet, WhatOnWaitThrowsIsAnErrorAndTheWaitersLeaseIsRevoked) {
  REQUIRE_ETCDCTL();
  const auto name = unique("throwing");
  auto holder = fleet::Slot::acquire(name, library_options(endpoint()));
  ASSERT_TRUE(holder) << holder.error().message();
  const auto before = leases(*cluster_);
  for (const int throw_at : {1, 3}) {  // the first report, and one made after queueing
    SCOPED_TRACE(throw_at);
    auto options = library_options(endpoint());
    options.wait = 30s;
    options.progress_interval = 50ms;
    int reports = 0;
    options.on_wait = [&](const fleet::WaitProgress&) {
      if (++reports == throw_at) throw std::runtime_error("operator gave up");
    };
    std::optional<std::expected<fleet::Slot, fleet::Error>> outcome;
    EXPECT_NO_THROW(outcome = fleet::Slot::acquire(name, options));
    ASSERT_TRUE(outcome);
    ASSERT_FALSE(*outcome);
    const fleet::Error& error = outcome->error();
    EXPECT_EQ(error.kind(), fleet::ErrorKind::cancelled);
    EXPECT_EQ(error.code(), std::errc::operation_canceled);
    EXPECT_FALSE(error.held());
    EXPECT_EQ(error.message(), "pidlock: on_wait " + name +
                                   ": Operation canceled: the callback threw (operator gave up); "
                                   "the wait was stopped and no slot taken");
    EXPECT_EQ(leases(*cluster_), before) << "the waiter's lease outlived the wait";
    const auto status = fleet::inspect(name, library_options(endpoint()));
    ASSERT_TRUE(status);
    EXPECT_TRUE(status->waiters.empty());
  }
}

// --- Fair queues: first come, first served, and a hand-off costs a few requests ---

struct QueueRun {
  std::vector<int> served;  // waiters' numbers, in the order their commands ran
  int requests = 0;         // from the first holder's release to the last waiter's exit
  std::map<std::string, int> by_path;
};

// `holders` hold the `slots` slots of a fresh lock; `waiters` are started one after another,
// each only once the one before is queued (its watch open, through the relay that counts every
// request); then the holders let go. Each waiter, served, notes its number and ends at once: the
// next hand-off. A TTL of an hour keeps renewals out of the count.
QueueRun serve_a_queue(const std::string& member, int slots, int waiters) {
  test::FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(member);
  test::FakeEndpoint counted(relaying);
  TempDir dir;
  const std::string served = (dir / "served").string();
  const std::string name = test::unique_name("queue");
  const auto argv = [&](std::vector<std::string> rest) {
    std::vector<std::string> all{pidlock_binary(), "run",  "--etcd",  counted.url(),
                                 "--ttl",          "3600", "--slots", std::to_string(slots)};
    all.insert(all.end(), rest.begin(), rest.end());
    return all;
  };
  std::vector<Child> holding;
  for (int i = 0; i < slots; ++i) {
    holding.push_back(Child::spawn(argv({name, "--", "sh", "-c", "echo held; read _ || :"})));
    EXPECT_EQ(holding.back().read_line(), "held");
  }
  std::vector<Child> queue;
  for (int i = 0; i < waiters; ++i) {
    queue.push_back(Child::spawn(argv(
        {"-w", "120", name, "--", "sh", "-c", "echo " + std::to_string(i) + " >> " + served})));
    EXPECT_TRUE(test::eventually([&] { return counted.open("/v3/watch") == i + 1; }, 30s))
        << "waiter " << i << " never queued";
  }
  const int before = counted.requests();
  for (auto& holder : holding) holder.close_stdin();
  for (auto& waiter : queue) EXPECT_EQ(waiter.wait(120s), 0) << waiter.drain_stderr();
  for (auto& holder : holding) EXPECT_EQ(holder.wait(), 0);
  QueueRun run;
  run.requests = counted.requests() - before;
  run.by_path = counted.requests_by_path();
  std::istringstream lines(test::read_text(served));
  for (int number = 0; lines >> number;) run.served.push_back(number);
  return run;
}

std::string paths(const std::map<std::string, int>& by_path) {
  std::string text;
  for (const auto& [path, count] : by_path) text += " " + path + "=" + std::to_string(count);
  return text;
}

// etcd's own mutex queues waiters by creation revision; so do these, and no waiter asks etcd
// anything while the others are served: a hand-off costs the holder's revoke, the next one's
// create and its leaving the queue, and the same for 1, 8 or 32 waiting.
TEST_F(Fleet, WaitersAreServedInTheOrderTheyCameAndAHandOffCostsAFewRequests) {
  for (const int waiters : {1, 8, 32}) {
    SCOPED_TRACE(waiters);
    const auto served = serve_a_queue(endpoint(), 1, waiters);
    std::vector<int> arrival(static_cast<std::size_t>(waiters));
    std::iota(arrival.begin(), arrival.end(), 0);
    EXPECT_EQ(served.served, arrival) << "served out of the order they came";
    const double per_handoff = static_cast<double>(served.requests) / waiters;
    EXPECT_LE(per_handoff, 5.0) << paths(served.by_path);
    std::printf("%2d waiters: served in arrival order: %s; %.2f requests per hand-off\n", waiters,
                served.served == arrival ? "yes" : "no", per_handoff);
    RecordProperty("requests_per_handoff_" + std::to_string(waiters),
                   static_cast<int>(per_handoff * 100));
  }
}

// A slot that frees while a waiter is on its way to it (its create held up here by the relay) is
// the waiter's: one who asks meanwhile is told the lock is busy, and why, rather than barging in.
TEST_F(Fleet, ANewcomerLeavesAFreeSlotToTheWaiterThatCameFirst) {
  const auto name = unique("first-in-line");
  auto holder = fleet::Slot::acquire(name, library_options(endpoint()));
  ASSERT_TRUE(holder) << holder.error().message();
  const std::string slot_key = base64::encode("pidlock/" + name + "/slots/0");
  std::atomic<bool> released{false};
  test::FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(endpoint());
  relaying.hang_if = [&](const std::string& path, const std::string& body) {
    return released && path == "/v3/kv/txn" && test::contains(body, "request_put") &&
           test::contains(body, slot_key);
  };
  test::FakeEndpoint slow(relaying);
  auto waiting = library_options(slow.url());
  waiting.wait = 120s;
  waiting.request_timeout = 500ms;
  // Its create held up, the waiter tries again every half second, and reports each failure:
  // its way to be let go once the test is over.
  std::atomic<bool> over{false};
  waiting.on_wait = [&](const fleet::WaitProgress&) {
    if (over) throw std::runtime_error("the test is over");
  };
  std::optional<std::expected<fleet::Slot, fleet::Error>> waiter;
  std::jthread first_in_line([&] { waiter = fleet::Slot::acquire(name, waiting); });
  ASSERT_TRUE(test::eventually([&] {
    const auto status = fleet::inspect(name, library_options(endpoint()));
    return status && status->waiters.size() == 1;
  }));
  released = true;
  EXPECT_FALSE(holder->release());
  const auto newcomer = fleet::Slot::acquire(name, library_options(endpoint()));
  over = true;
  first_in_line.join();
  ASSERT_FALSE(newcomer) << "took the slot from the waiter that came first";
  EXPECT_TRUE(newcomer.error().held());
  EXPECT_EQ(newcomer.error().message(),
            "another installer is next (a waiter that came first gets the free slot) — fleet "
            "lock: " +
                name + ", 0 of 1 slots held, 1 waiter first in line");
  ASSERT_TRUE(waiter);
  ASSERT_FALSE(*waiter) << "the relay let the waiter's create through";
  EXPECT_EQ((*waiter).error().kind(), fleet::ErrorKind::cancelled) << (*waiter).error().message();
}

// With two slots, a free slot goes to the earliest waiter still waiting: none is served before a
// waiter that came more than one place ahead of it.
TEST_F(Fleet, WithTwoSlotsNoWaiterOvertakesOneThatCameEarlier) {
  constexpr int waiters = 8;
  const auto served = serve_a_queue(endpoint(), 2, waiters);
  ASSERT_EQ(served.served.size(), std::size_t{waiters});
  for (int place = 0; place < waiters; ++place) {
    const int who = served.served[static_cast<std::size_t>(place)];
    EXPECT_LE(std::abs(who - place), 1) << "waiter " << who << " was served at place " << place;
  }
  const double per_handoff = static_cast<double>(served.requests) / waiters;
  EXPECT_LE(per_handoff, 5.0) << paths(served.by_path);
  std::printf("%d waiters for 2 slots: %.2f requests per hand-off\n", waiters, per_handoff);
}

// --- Fences are per slot ---

// Each slot's fences grow; two slots' do not order their live holders: slot 1's holder keeps a
// fence below the one slot 0 was granted after it, and still holds. A resource must therefore
// remember the largest fence per slot (PIDLOCK_SLOT), not one for the whole lock.
TEST_F(Fleet, FencesGrowPerSlotNotAcrossTheSlotsOfALock) {
  auto options = library_options(endpoint());
  options.slots = 2;
  const auto name = unique("fence-per-slot");
  auto zero = fleet::Slot::acquire(name, options);
  auto one = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(zero && one);
  ASSERT_EQ(zero->index(), 0);
  ASSERT_EQ(one->index(), 1);
  const auto first_zero = zero->fence();
  EXPECT_FALSE(zero->release());
  auto again = fleet::Slot::acquire(name, options);
  ASSERT_TRUE(again) << again.error().message();
  ASSERT_EQ(again->index(), 0);
  EXPECT_GT(again->fence(), first_zero) << "slot 0's fences grow";
  EXPECT_LT(one->fence(), again->fence());
  EXPECT_TRUE(one->keep_alive()) << "slot 1's holder, with the lower fence, still holds";
}

}  // namespace
}  // namespace pidlock
