// Fleet test support: a real etcd on loopback ports, and fake endpoints that are not etcd.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace pidlock::test {

int free_port();
// The port of "http://127.0.0.1:2379".
int port_of(const std::string& url);
bool etcd_available();
bool etcdctl_available();

#define REQUIRE_ETCD()                    \
  if (!::pidlock::test::etcd_available()) \
  GTEST_SKIP() << "etcd is not installed (Debian: etcd-server)"
#define REQUIRE_ETCDCTL()                    \
  if (!::pidlock::test::etcdctl_available()) \
  GTEST_SKIP() << "etcdctl is not installed (Debian: etcd-client)"

bool openssl_available();

// "BASE-PID-N": a fleet lock name no other test, here or in another test process, uses.
std::string unique_name(const std::string& base);

bool contains(const std::string& text, const std::string& part);

struct ClusterConfig {
  int size = 1;
  // Clients over TLS, with a client certificate required: certificates made by the test with
  // openssl (see Cluster::file), and the members listening on 127.0.0.1 and 127.0.0.2, for which
  // the server certificate is not valid.
  bool tls = false;
  std::vector<std::string> flags;  // more etcd flags, e.g. {"--auth-token-ttl", "1"}
  // Users and roles, then authentication on: see Cluster::enable_auth().
  bool auth = false;
};

// What a cluster so configured needs that is not installed ("etcd is not installed (Debian:
// etcd-server)"), or empty.
std::string missing_for(const ClusterConfig& config);

// A real etcd cluster of `size` members on 127.0.0.1, each in its own data directory.
class Cluster {
 public:
  explicit Cluster(int size);
  explicit Cluster(const ClusterConfig& config);

  std::string endpoint(int i, const std::string& host = "127.0.0.1") const;
  std::string endpoints() const;  // comma-separated
  bool answers(int i) const;
  // In the cluster's directory. With tls: ca.pem (signed the server's and client's
  // certificates), server.pem (for IP:127.0.0.1 and DNS:localhost), client.pem and
  // client-key.pem, other-ca.pem and stranger.pem/stranger-key.pem, a CA and a client
  // certificate etcd does not trust, and expired.pem/expired-key.pem, a client certificate
  // signed by ca.pem that expired on 2020-01-02.
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  // Users and roles, then `auth enable`: root (password root-pw), alice (alice-pw) with readwrite
  // on pidlock/ and other/, and bob (bob-pw) without any role. From then on, etcdctl() runs as
  // root.
  bool enable_auth();
  void stop(int i);
  // SIGSTOP: a partition, as the client sees it: connections are accepted, nothing answers.
  void pause(int i);
  void resume(int i);
  // `etcdctl --endpoints ENDPOINT ARGS…`, as an operator would run it.
  Result etcdctl(const std::vector<std::string>& args) const;

 private:
  struct Member {
    std::string name;
    int client;
    int peer;
    std::optional<Child> process;
  };
  bool make_certificates() const;
  std::vector<std::string> etcdctl_argv(int i) const;

  TempDir dir_;
  ClusterConfig config_;
  std::vector<Member> members_;
  bool auth_ = false;
};

// A test suite whose tests share one cluster, started before the first and stopped after the
// last: `Suite::config()` says which (plain, TLS, with users and roles). A test skips when etcd,
// or what the configuration needs besides (etcdctl, openssl), is not installed.
template <class Suite>
class SharedCluster : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    const ClusterConfig config = Suite::config();
    if (!missing_for(config).empty()) return;
    cluster_ = new Cluster(config);
    if (config.auth) auth_enabled_ = cluster_->enable_auth();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (const auto missing = missing_for(Suite::config()); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    if (Suite::config().auth) {
      ASSERT_TRUE(auth_enabled_) << "could not set up users and roles";
    }
  }
  static inline Cluster* cluster_ = nullptr;
  static inline bool auth_enabled_ = false;
};

// Something on 127.0.0.1 that speaks HTTP but is not etcd: it gives every request the same
// answer. Or, given a port to relay to, a go-between that passes each request on to the etcd
// there (one connection per request) after calling `before_relaying` with its path: a test's way
// to act between two requests of a client, to count a client's requests, or to lose an answer.
// Each connection is served on a thread of its own, so that watches held open through it do not
// hold up other requests, from other clients or the same.
class FakeEndpoint {
 public:
  struct Answer {
    int status = 200;
    std::string body;
    bool hang = false;   // read the request, never answer
    bool close = false;  // close the connection without a word
    int relay_to_port = 0;
    std::function<void(const std::string& path)> before_relaying = nullptr;
    // Relaying: when it says so for a request, etcd carries the request out but its answer is
    // not passed on (the connection is closed instead), after `after_dropping` is called: an
    // answer lost on the way back.
    std::function<bool(const std::string& path, const std::string& body)> drop_answer = nullptr;
    std::function<void(const std::string& path)> after_dropping = nullptr;
    // Relaying: when it says so for a request, the request is held, unanswered, until the test
    // ends: a member that stopped answering.
    std::function<bool(const std::string& path, const std::string& body)> hang_if = nullptr;
  };
  explicit FakeEndpoint(Answer answer);
  ~FakeEndpoint();
  FakeEndpoint(const FakeEndpoint&) = delete;
  FakeEndpoint& operator=(const FakeEndpoint&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }
  // Requests to `path` ("/v3/kv/txn") so far, and those whose connection is still open.
  int requests(const std::string& path) const;
  int open(const std::string& path) const;
  // Every request so far, by path.
  std::map<std::string, int> requests_by_path() const;

 private:
  void serve();
  void answer(int connection);
  void relay(int connection, std::string request, const std::string& path);
  bool wait_readable(int fd) const;  // false once stopping

  Answer answer_;
  int listener_ = -1;
  int port_ = 0;
  int stop_[2] = {-1, -1};
  std::atomic<int> requests_{0};
  mutable std::mutex paths_mutex_;
  std::map<std::string, int> by_path_;
  std::map<std::string, int> open_by_path_;
  std::thread thread_;
  std::vector<std::thread> connections_;
};

}  // namespace pidlock::test
