// Fleet mode for production clusters, as an operator uses it: `pidlock run` and `pidlock status`
// against a TLS etcd that wants client certificates, and against an etcd with users and roles.
// Each refusal has its own exit status (78 TLS, 77 login or permission), never 75, and at once.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fleet_support.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using test::Child;
using test::Cluster;
using test::ClusterConfig;
using test::pidlock_binary;
using test::run;
using Clock = std::chrono::steady_clock;

using test::contains;

std::string unique(const std::string& base) { return test::unique_name(base); }

// `env NAME=VALUE… pidlock ARGS…`: the environment a fleet's hosts would share.
std::vector<std::string> with_environment(const std::vector<std::string>& variables,
                                          const std::vector<std::string>& args) {
  std::vector<std::string> argv{"env"};
  argv.insert(argv.end(), variables.begin(), variables.end());
  argv.push_back(pidlock_binary());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// A refusal with a wait long enough that retrying would show: its exit status and stderr.
struct Refusal {
  test::Result result;
  Clock::duration took;
};
Refusal refused(std::vector<std::string> argv) {
  const auto started = Clock::now();
  auto result = run(argv);
  return {std::move(result), Clock::now() - started};
}

// --- TLS ---

class CommandTls : public test::SharedCluster<CommandTls> {
 public:
  static ClusterConfig config() {
    ClusterConfig tls;
    tls.tls = true;
    return tls;
  }

 protected:
  static std::string file(const std::string& name) { return cluster_->file(name); }
  // Everything right: the CA that signed the server's certificate, and a client certificate.
  static std::vector<std::string> tls(const std::string& ca = "ca.pem") {
    return {"--cacert", file(ca), "--cert", file("client.pem"), "--key", file("client-key.pem")};
  }
  static std::vector<std::string> run_args(const std::string& endpoint,
                                           const std::vector<std::string>& options,
                                           const std::string& name,
                                           const std::vector<std::string>& command) {
    std::vector<std::string> argv{pidlock_binary(), "run", "-w", "30", "--etcd", endpoint};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back(name);
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }
};

TEST_F(CommandTls, RunsWithTheRightCaAndClientCertificateAndHandsOnTheFence) {
  const auto name = unique("prod/web/tls");
  const auto r = run(run_args(cluster_->endpoint(0), tls(), name,
                              {"sh", "-c", "echo \"$PIDLOCK_FENCE $PIDLOCK_NAME $PIDLOCK_SLOT\""}));
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream words(r.out);
  long long fence = 0;
  std::string seen_name;
  int slot = -1;
  words >> fence >> seen_name >> slot;
  EXPECT_GT(fence, 0) << r.out;
  EXPECT_EQ(seen_name, name);
  EXPECT_EQ(slot, 0);
}

TEST_F(CommandTls, EachTlsFailureIsExit78AtOnce) {
  struct Case {
    const char* why;
    std::string endpoint;
    std::vector<std::string> options;
  };
  const std::vector<Case> cases = {
      {"a CA that did not sign the server's certificate", cluster_->endpoint(0),
       tls("other-ca.pem")},
      {"no client certificate", cluster_->endpoint(0), {"--cacert", file("ca.pem")}},
      {"a host name the certificate does not name", cluster_->endpoint(0, "127.0.0.2"), tls()},
  };
  // A TLS 1.3 server refuses a client certificate after the handshake, racing our request: each
  // case is tried several times, so that a refusal taken for a broken connection would show.
  for (const auto& c : cases) {
    for (int attempt = 0; attempt < 8; ++attempt) {
      const auto r = refused(run_args(c.endpoint, c.options, unique("tls-refused"), {"true"}));
      EXPECT_EQ(r.result.code, 78) << c.why << ": " << r.result.err;
      EXPECT_LT(r.took, 10s) << c.why << ": waited, as if it could pass";
      EXPECT_TRUE(r.result.err.starts_with("pidlock: ")) << c.why << ": " << r.result.err;
      EXPECT_FALSE(contains(r.result.err, "is running")) << c.why << ": " << r.result.err;
      // Without a wait, nothing is retried: the first answer must be the right one.
      std::vector<std::string> status{pidlock_binary(), "status", "--etcd", c.endpoint};
      status.insert(status.end(), c.options.begin(), c.options.end());
      status.push_back(unique("tls-status"));
      const auto s = run(status);
      EXPECT_EQ(s.code, 78) << c.why << ": " << s.err;
    }
  }
}

TEST_F(CommandTls, TheEnvironmentConfiguresAndOptionsWin) {
  const std::vector<std::string> shared = {
      "PIDLOCK_ETCD_ENDPOINTS=" + cluster_->endpoint(0),
      "PIDLOCK_ETCD_CACERT=" + file("other-ca.pem"),  // wrong: --cacert below wins
      "PIDLOCK_ETCD_CERT=" + file("client.pem"), "PIDLOCK_ETCD_KEY=" + file("client-key.pem")};
  const auto name = unique("env");
  auto r = run(
      with_environment(shared, {"run", "--fleet", "--cacert", file("ca.pem"), name, "--", "true"}));
  EXPECT_EQ(r.code, 0) << r.err;
  r = run(with_environment(shared, {"run", "--fleet", name, "--", "true"}));
  EXPECT_EQ(r.code, 78) << "the environment's CA was not used: " << r.err;
  // The variables alone never turn fleet mode on: a local lock stays local.
  test::TempDir dir;
  r = run(with_environment(shared, {"run", (dir / "local.lock").string(), "--", "true"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "local.lock"));
}

TEST_F(CommandTls, AnUnreadableCertificateFileIsATlsFailure) {
  for (const char* option : {"--cacert", "--cert", "--key"}) {
    auto options = tls();
    const auto at = std::find(options.begin(), options.end(), option);
    ASSERT_NE(at, options.end());
    *(at + 1) = file("no-such.pem");
    const auto r = run(run_args(cluster_->endpoint(0), options, unique("unreadable"), {"true"}));
    EXPECT_EQ(r.code, 78) << option << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "no-such.pem: No such file or directory")) << r.err;
  }
}

TEST_F(CommandTls, InsecureSkipVerifyIsExplicitAndWarns) {
  auto options = tls("other-ca.pem");
  options.push_back("--insecure-skip-verify");
  const auto r =
      run(run_args(cluster_->endpoint(0, "127.0.0.2"), options, unique("insecure"), {"true"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: --insecure-skip-verify")) << r.err;
}

TEST_F(CommandTls, StatusShowsTheFenceTheCommandGot) {
  const auto name = unique("status-fence");
  std::vector<std::string> argv{pidlock_binary(), "run", "--etcd", cluster_->endpoint(0)};
  const auto options = tls();
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {name, "--", "sh", "-c", "echo $PIDLOCK_FENCE; read _ || :"});
  Child holder = Child::spawn(argv);
  const std::string fence = holder.read_line();
  ASSERT_FALSE(fence.empty());
  std::vector<std::string> status{pidlock_binary(), "status", "--json", "--etcd",
                                  cluster_->endpoint(0)};
  status.insert(status.end(), options.begin(), options.end());
  status.push_back(name);
  const auto r = run(status);
  EXPECT_EQ(r.code, 75) << r.err;
  const json found = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(found.is_discarded()) << r.out;
  ASSERT_EQ(found["holders"].size(), 1u) << r.out;
  EXPECT_EQ(std::to_string(found["holders"][0]["fence"].get<long long>()), fence);
  status.erase(status.begin() + 2);  // without --json
  EXPECT_TRUE(contains(run(status).out, "fence " + fence)) << run(status).out;
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

// --- Authentication ---

class CommandAuth : public test::SharedCluster<CommandAuth> {
 public:
  static ClusterConfig config() {
    ClusterConfig auth;
    auth.flags = {"--auth-token-ttl", "1"};
    auth.auth = true;
    return auth;
  }

 protected:
  // Readable by its owner only: pidlock refuses a password file every user may read.
  static std::string password_file(const std::string& password, mode_t mode = 0600) {
    const auto path = dir_.path() / ("password-" + std::to_string(++files_));
    std::ofstream(path) << password << "\n";
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path.string();
  }
  static std::vector<std::string> run_args(const std::vector<std::string>& options,
                                           const std::string& name,
                                           const std::vector<std::string>& command) {
    std::vector<std::string> argv{pidlock_binary(),     "run", "-w", "30", "--etcd",
                                  cluster_->endpoint(0)};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back(name);
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }
  static test::TempDir dir_;
  static int files_;
};
test::TempDir CommandAuth::dir_;
int CommandAuth::files_ = 0;

TEST_F(CommandAuth, APasswordFileWorksAndThePasswordIsInNoCommandLineOrEnvironment) {
  // The command prints its parent's (pidlock's) command line and its own environment.
  const auto r =
      run(run_args({"--user", "alice", "--password-file", password_file("alice-pw")},
                   unique("auth-file"), {"sh", "-c", "tr '\\0' ' ' < /proc/$PPID/cmdline; env"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "--password-file")) << r.out;
  EXPECT_FALSE(contains(r.out, "alice-pw")) << r.out;
}

// Not inherited, and not left where anyone who may read pidlock's /proc/PID/environ (its user,
// root, a debugger) finds it for as long as the command runs: unsetenv() alone leaves the
// process's initial environment, which that file shows, as it was.
TEST_F(CommandAuth, ThePasswordFromTheEnvironmentIsNotInPidlocksOwnEnvironmentWhileItHolds) {
  const auto r =
      run(with_environment({"PIDLOCK_ETCD_PASSWORD=alice-pw", "PIDLOCK_ETCD_USER=alice"},
                           {"run", "--etcd", cluster_->endpoint(0), unique("auth-environ"), "--",
                            "sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "PIDLOCK_ETCD_USER=alice\n"))
      << "not pidlock's environment: " << r.out;
  EXPECT_FALSE(contains(r.out, "alice-pw")) << r.out;
}

TEST_F(CommandAuth, ThePasswordFromTheEnvironmentWorksAndIsNotInherited) {
  const auto r =
      run(with_environment({"PIDLOCK_ETCD_PASSWORD=alice-pw", "PIDLOCK_ETCD_USER=alice"},
                           {"run", "--etcd", cluster_->endpoint(0), unique("auth-env"), "--", "sh",
                            "-c", "echo \"${PIDLOCK_ETCD_PASSWORD-unset}\""}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "unset\n");
}

TEST_F(CommandAuth, AWrongPasswordAndAMissingPermissionAreExit77AtOnce) {
  struct Case {
    const char* why;
    std::vector<std::string> options;
  };
  const std::vector<Case> cases = {
      {"a wrong password", {"--user", "alice", "--password-file", password_file("not-it")}},
      {"no credentials", {}},
      {"a user without a role on the prefix",
       {"--user", "bob", "--password-file", password_file("bob-pw")}},
  };
  for (const auto& c : cases) {
    const auto r = refused(run_args(c.options, unique("auth-refused"), {"true"}));
    EXPECT_EQ(r.result.code, 77) << c.why << ": " << r.result.err;
    EXPECT_LT(r.took, 10s) << c.why << ": waited, as if it could pass";
    EXPECT_FALSE(contains(r.result.err, "not-it")) << r.result.err;
    EXPECT_FALSE(contains(r.result.err, "is running")) << c.why << ": " << r.result.err;
  }
}

TEST_F(CommandAuth, APasswordOnTheCommandLineIsRefused) {
  auto r = run(run_args({"--user", "alice:alice-pw"}, unique("auth-argv"), {"true"}));
  EXPECT_EQ(r.code, 64) << r.err;
  EXPECT_TRUE(contains(r.err, "--password-file")) << r.err;
  r = run(
      with_environment({"PIDLOCK_ETCD_USER=alice:alice-pw"},
                       {"run", "--etcd", cluster_->endpoint(0), unique("auth-env"), "--", "true"}));
  EXPECT_EQ(r.code, 64) << r.err;
  EXPECT_FALSE(contains(r.err, "alice-pw")) << r.err;
  auto with_credentials = cluster_->endpoint(0);
  with_credentials.insert(with_credentials.find("//") + 2, "alice:alice-pw@");
  r = run({pidlock_binary(), "run", "--etcd", with_credentials, unique("auth-url"), "--", "true"});
  EXPECT_EQ(r.code, 64) << r.err;
  EXPECT_TRUE(contains(r.err, "no credentials in the URL")) << r.err;
  // Refused, and not repeated: the refusal names the URL with the password masked.
  EXPECT_FALSE(contains(r.err, "alice-pw")) << r.err;
  EXPECT_TRUE(contains(r.err, "'http://alice:***@127.0.0.1:")) << r.err;
}

// As ssh refuses a private key file others may read: a password file every user may read (or
// write) is refused, with what to do; one its group may read is a service account's, and works.
TEST_F(CommandAuth, APasswordFileEveryUserMayReadIsRefused) {
  for (const mode_t mode : {0644U, 0602U}) {
    const auto file = password_file("alice-pw", mode);
    const auto r = refused(
        run_args({"--user", "alice", "--password-file", file}, unique("auth-open"), {"true"}));
    EXPECT_EQ(r.result.code, 78) << r.result.err;
    char shown[8];
    std::snprintf(shown, sizeof shown, "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(r.result.err, "pidlock: --password-file " + file +
                                ": every user may read or write it (mode " + shown +
                                "); a password file must not be: chmod o-rw " + file + "\n");
    EXPECT_LT(r.took, 10s);
  }
  const auto shared =
      run(run_args({"--user", "alice", "--password-file", password_file("alice-pw", 0640)},
                   unique("auth-group"), {"true"}));
  EXPECT_EQ(shared.code, 0) << shared.err;
}

// A role revoked while the command runs: the next renewal cannot check the slot, pidlock says
// what etcd refused and what the user needs, and stops the command (76) as for any lost slot.
TEST_F(CommandAuth, ARoleRevokedDuringAHoldStopsTheCommandAndSaysWhy) {
  const std::string user = unique("carol");
  for (const std::vector<std::string>& step :
       {std::vector<std::string>{"role", "add", user + "-rw"},
        {"role", "grant-permission", user + "-rw", "--prefix=true", "readwrite", "pidlock/"},
        {"user", "add", user, "--new-user-password", "carol-pw"},
        {"user", "grant-role", user, user + "-rw"}}) {
    ASSERT_EQ(cluster_->etcdctl(step).code, 0) << step[0] << " " << step[1];
  }
  std::vector<std::string> argv =
      run_args({"--user", user, "--password-file", password_file("carol-pw"), "--ttl", "3"},
               unique("auth-revoked"), {"sh", "-c", "echo ready; exec sleep 60"});
  Child holder = Child::spawn(argv);
  ASSERT_EQ(holder.read_line(), "ready");
  ASSERT_EQ(cluster_->etcdctl({"user", "revoke-role", user, user + "-rw"}).code, 0);
  EXPECT_EQ(holder.wait(20s), 76) << "the revoked role went unnoticed";
  const std::string err = holder.drain_stderr();
  EXPECT_TRUE(contains(err, "pidlock: lost the fleet lock")) << err;
  EXPECT_TRUE(contains(err, "etcd: PermissionDenied: ")) << err;
  EXPECT_TRUE(contains(err, "etcd user " + user + " needs a role with readwrite")) << err;
}

TEST_F(CommandAuth, APasswordFileThatCannotBeReadIsSaidSoAtOnce) {
  const auto fifo = dir_.path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const auto& bad :
       {(dir_.path() / "missing").string(), dir_.path().string(), fifo.string()}) {
    const auto r = refused(
        run_args({"--user", "alice", "--password-file", bad}, unique("auth-unreadable"), {"true"}));
    EXPECT_EQ(r.result.code, 66) << bad << ": " << r.result.err;
    EXPECT_TRUE(r.result.err.starts_with("pidlock: --password-file " + bad + ": ")) << r.result.err;
    EXPECT_LT(r.took, 10s);
  }
  const auto empty = run(run_args({"--user", "alice", "--password-file", password_file("")},
                                  unique("auth-empty"), {"true"}));
  EXPECT_EQ(empty.code, 64) << empty.err;
  EXPECT_TRUE(contains(empty.err, "etcd user alice needs a password")) << empty.err;
}

// etcd's API is JSON: a password that is not UTF-8 would be sent altered, and refused as wrong.
TEST_F(CommandAuth, APasswordThatIsNotUtf8IsRefusedAsSuchNotSentAltered) {
  const auto r =
      refused(run_args({"--user", "alice", "--password-file", password_file("pw\xff\xfe")},
                       unique("auth-not-utf8"), {"true"}));
  EXPECT_EQ(r.result.code, 64) << r.result.err;
  EXPECT_TRUE(contains(r.result.err, "the password of etcd user alice is not UTF-8 text"))
      << r.result.err;
  EXPECT_FALSE(contains(r.result.err, "wrong")) << r.result.err;
  EXPECT_LT(r.took, 10s);
}

TEST_F(CommandAuth, AUserNameThatIsNotUtf8IsRefusedAsSuch) {
  const std::string not_utf8 = "al\xff" + std::string("ice");
  const auto r = refused(run_args({"--user", not_utf8, "--password-file", password_file("pw")},
                                  unique("auth-user-not-utf8"), {"true"}));
  EXPECT_EQ(r.result.code, 64) << r.result.err;
  EXPECT_TRUE(contains(r.result.err, "etcd user al\\xffice: not UTF-8 text")) << r.result.err;
  EXPECT_LT(r.took, 10s);
}

// etcd's tokens expire after a second unused here. With a 9 s TTL the holder renews every 1.5 s,
// so each renewal finds its token gone: it logs in again, and the hold goes on.
TEST_F(CommandAuth, TheHoldOutlivesTokenExpiries) {
  const auto r =
      run(run_args({"--user", "alice", "--password-file", password_file("alice-pw"), "--ttl", "9"},
                   unique("auth-expiry"), {"sleep", "3.5"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "lost")) << r.err;
}

// --- Names, fences and slot counts (plain etcd) ---

class CommandNames : public test::SharedCluster<CommandNames> {
 public:
  static ClusterConfig config() { return {}; }

 protected:
  static Child hold(const std::string& name, const std::vector<std::string>& options = {}) {
    std::vector<std::string> argv{pidlock_binary(), "run", "--etcd", cluster_->endpoint(0)};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {name, "--", "sh", "-c", "echo $PIDLOCK_FENCE; read _ || :"});
    Child child = Child::spawn(argv);
    return child;
  }
};

TEST_F(CommandNames, NamesBuiltToCollideStayApart) {
  const auto base = unique("n");
  std::vector<Child> holders;
  for (const auto& name : {base, base + "/slots/0", base + "%2Fslots%2F0", base + "/waiters/x"}) {
    holders.push_back(hold(name));
    EXPECT_FALSE(holders.back().read_line().empty()) << name << " was not granted";
  }
  const auto busy = run(
      {pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), base + "/slots/0", "--", "true"});
  EXPECT_EQ(busy.code, 75) << busy.err;
  EXPECT_TRUE(contains(busy.err, "fleet lock: " + base + "/slots/0,")) << busy.err;
  for (auto& holder : holders) {
    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0);
  }
}

TEST_F(CommandNames, FencesIncreaseAcrossSuccessiveHolders) {
  const auto name = unique("fences");
  long long last = 0;
  for (int i = 0; i < 5; ++i) {
    const auto r = run({pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), name, "--", "sh",
                        "-c", "echo $PIDLOCK_FENCE"});
    ASSERT_EQ(r.code, 0) << r.err;
    const long long fence = std::stoll(r.out);
    EXPECT_GT(fence, last);
    last = fence;
  }
}

TEST_F(CommandNames, APrefixKeepsLocksApart) {
  const auto name = unique("prefixed");
  Child holder = hold(name, {"--prefix", "team-a/"});
  ASSERT_FALSE(holder.read_line().empty());
  auto r = run({pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), "--prefix", "team-b/",
                name, "--", "true"});
  EXPECT_EQ(r.code, 0) << r.err;
  r = run({pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), "--prefix", "team-a/", name,
           "--", "true"});
  EXPECT_EQ(r.code, 75) << r.err;
  r = run({pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), "--prefix", "no-slash", name,
           "--", "true"});
  EXPECT_EQ(r.code, 64) << r.err;
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

// Any fleet option means fleet mode, checked and configured as --etcd or --fleet are: with the
// environment's endpoints, never a default one nobody configured.
TEST_F(CommandNames, AnyFleetOptionMeansFleetModeWithTheConfiguredEndpoints) {
  const std::vector<std::vector<std::string>> options = {
      {"--ttl", "5"}, {"--kill-after", "1"}, {"--on-lease-loss", "warn"}};
  for (const auto& option : options) {
    const auto name = unique("option-" + option[0].substr(2));
    std::vector<std::string> args{"run"};
    args.insert(args.end(), option.begin(), option.end());
    args.insert(args.end(), {name, "--", "sh", "-c", "echo \"$PIDLOCK_NAME $PIDLOCK_FENCE\""});
    const auto r = run(with_environment({"PIDLOCK_ETCD_ENDPOINTS=" + cluster_->endpoint(0)}, args));
    EXPECT_EQ(r.code, 0) << option[0] << ": " << r.err;
    EXPECT_TRUE(r.out.starts_with(name + " ")) << option[0] << ": " << r.out;
  }
}

TEST_F(CommandNames, AFleetOptionWithoutEndpointsIsAUsageError) {
  for (const std::string option : {"--ttl", "--kill-after", "--slots", "--prefix"}) {
    const std::string value = option == "--prefix" ? "p/" : "2";
    const auto r = run({"env", "-u", "PIDLOCK_ETCD_ENDPOINTS", pidlock_binary(), "run", option,
                        value, unique("no-endpoints"), "--", "true"});
    EXPECT_EQ(r.code, 64) << option << ": " << r.err;
    EXPECT_TRUE(
        r.err.starts_with("pidlock: fleet mode needs etcd endpoints: --etcd URL[,URL...] "
                          "or PIDLOCK_ETCD_ENDPOINTS\n"))
        << option << ": " << r.err;
  }
  const auto shared =
      run(with_environment({"PIDLOCK_ETCD_ENDPOINTS=" + cluster_->endpoint(0)},
                           {"run", "-s", "--ttl", "5", unique("shared"), "--", "true"}));
  EXPECT_EQ(shared.code, 64) << shared.err;
  EXPECT_TRUE(shared.err.starts_with("pidlock: -s: fleet locks have no readers")) << shared.err;
}

TEST_F(CommandNames, EndpointsAreUrlsOrHostPorts) {
  for (const std::string bad : {"", "ftp://127.0.0.1:2379", " http://127.0.0.1:2379", "http://"}) {
    const auto r = run({pidlock_binary(), "run", "--etcd", bad, unique("bad-url"), "--", "true"});
    EXPECT_EQ(r.code, 64) << "'" << bad << "': " << r.err;
  }
  // As etcdctl takes them: host:port is http.
  auto bare = cluster_->endpoint(0);
  bare.erase(0, bare.find("//") + 2);
  const auto r = run({pidlock_binary(), "run", "--etcd", bare, unique("bare"), "--", "true"});
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(CommandNames, ASlotCountThatDisagreesIsExit78) {
  const auto name = unique("count");
  Child holder = hold(name, {"--slots", "3"});
  ASSERT_FALSE(holder.read_line().empty());
  const auto r = run({pidlock_binary(), "run", "--etcd", cluster_->endpoint(0), "--slots", "2",
                      name, "--", "true"});
  EXPECT_EQ(r.code, 78) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "the fleet lock has 3 slots, as its holders were started with; "
                       "this one asked for 2"))
      << r.err;
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

}  // namespace
}  // namespace pidlock
