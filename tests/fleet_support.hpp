// Fleet test support: a real etcd on loopback ports, and fake endpoints that are not etcd.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace pidlock::test {

int free_port();
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
  // client-key.pem, and other-ca.pem and stranger.pem/stranger-key.pem, a CA and a client
  // certificate etcd does not trust.
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
// answer, from a thread of the test process. Or, given a port to relay to, a go-between that
// passes each request on to the etcd there (one connection per request) after calling
// `before_relaying` with its path: a test's way to act between two requests of a client.
class FakeEndpoint {
 public:
  struct Answer {
    int status = 200;
    std::string body;
    bool hang = false;   // read the request, never answer
    bool close = false;  // close the connection without a word
    int relay_to_port = 0;
    std::function<void(const std::string& path)> before_relaying = nullptr;
  };
  explicit FakeEndpoint(Answer answer);
  ~FakeEndpoint();
  FakeEndpoint(const FakeEndpoint&) = delete;
  FakeEndpoint& operator=(const FakeEndpoint&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }

 private:
  void serve();
  void answer(int connection);
  void relay(int connection, std::string request);
  bool wait_readable(int fd) const;  // false once stopping

  Answer answer_;
  int listener_ = -1;
  int port_ = 0;
  int stop_[2] = {-1, -1};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace pidlock::test
