// Fleet mode on a production-like etcd: clients over TLS with certificates the test makes, and
// authentication with users and roles. Each refusal must be its own clear error, at once: never
// "busy", never a waiter retrying until its deadline.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "fleet/etcd_client.hpp"
#include "fleet_support.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock {
namespace {

using namespace std::chrono_literals;
using test::Cluster;
using test::ClusterConfig;
using Clock = std::chrono::steady_clock;

using test::contains;

std::string unique(const std::string& base) { return test::unique_name(base); }

// A refusal that no waiting fixes: the error, and how long acquire took to give it, with a
// wait long enough that retrying would show.
struct Refusal {
  fleet::Error error;
  Clock::duration took;
};

std::optional<Refusal> refused(const std::string& name, fleet::Options options) {
  options.wait = 30s;
  const auto started = Clock::now();
  auto slot = fleet::Slot::acquire(name, options);
  if (slot) return std::nullopt;
  return Refusal{slot.error(), Clock::now() - started};
}

// --- TLS ---

class FleetTls : public test::SharedCluster<FleetTls> {
 public:
  static ClusterConfig config() {
    ClusterConfig tls;
    tls.tls = true;
    return tls;
  }

 protected:
  // Everything right: the CA that signed the server's certificate, and a client certificate.
  static fleet::Options options(const std::string& endpoint = cluster_->endpoint(0)) {
    fleet::Options o;
    o.endpoints = {endpoint};
    o.tls.ca_file = cluster_->file("ca.pem");
    o.tls.cert_file = cluster_->file("client.pem");
    o.tls.key_file = cluster_->file("client-key.pem");
    return o;
  }
  static void expect_tls_failure(const fleet::Options& o, const std::string& says) {
    const auto refusal = refused(unique("tls"), o);
    ASSERT_TRUE(refusal) << "TLS let it through";
    const fleet::Error& error = refusal->error;
    EXPECT_EQ(error.code(), fleet::errc::tls_failed) << error.message();
    EXPECT_EQ(error.code(), std::errc::protocol_error);
    EXPECT_FALSE(error.held());
    EXPECT_TRUE(contains(error.message(), o.endpoints.back())) << error.message();
    EXPECT_TRUE(contains(error.message(), says)) << error.message();
    EXPECT_LT(refusal->took, 5s) << "a TLS failure was retried";
  }
};

TEST_F(FleetTls, WorksWithTheRightCaAndClientCertificate) {
  const auto name = unique("tls-ok");
  auto slot = fleet::Slot::acquire(name, options());
  ASSERT_TRUE(slot) << slot.error().message();
  EXPECT_TRUE(slot->keep_alive());
  const auto status = fleet::inspect(name, options());
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_EQ(status->holders.size(), 1u);
  EXPECT_EQ(status->holders[0].fence, slot->fence());
  EXPECT_FALSE(slot->release());
}

TEST_F(FleetTls, AServerCertificateFromAnotherCaIsRefused) {
  auto o = options();
  o.tls.ca_file = cluster_->file("other-ca.pem");
  expect_tls_failure(o, "check that the CA file");
}

TEST_F(FleetTls, WithoutAClientCertificateItIsRefused) {
  auto o = options();
  o.tls.cert_file.clear();
  o.tls.key_file.clear();
  expect_tls_failure(o, "client certificate");
}

TEST_F(FleetTls, AClientCertificateFromAnotherCaIsRefused) {
  auto o = options();
  o.tls.cert_file = cluster_->file("stranger.pem");
  o.tls.key_file = cluster_->file("stranger-key.pem");
  expect_tls_failure(o, "client certificate");
}

TEST_F(FleetTls, AHostTheCertificateDoesNotNameIsRefused) {
  // The member listens on 127.0.0.2 too, but its certificate names 127.0.0.1 and localhost.
  expect_tls_failure(options(cluster_->endpoint(0, "127.0.0.2")), "127.0.0.2");
}

// etcd closes such a connection without a word, as a member shutting down would: it stays
// "unreachable", worth retrying, but the message says what is likelier.
TEST_F(FleetTls, PlainHttpToATlsEndpointHintsAtHttps) {
  auto endpoint = cluster_->endpoint(0);
  endpoint.replace(0, 5, "http");  // https:// -> http://
  auto slot = fleet::Slot::acquire(unique("tls-plain"), options(endpoint));
  ASSERT_FALSE(slot);
  EXPECT_EQ(slot.error().code(), fleet::errc::unreachable) << slot.error().message();
  EXPECT_TRUE(contains(slot.error().message(), "if this endpoint serves TLS, give it as https://"))
      << slot.error().message();
}

// Likewise the other way round.
TEST_F(FleetTls, TlsToAPlainEndpointHintsAtHttp) {
  Cluster plain(1);
  auto url = plain.endpoint(0);
  url.replace(0, 4, "https");
  auto slot = fleet::Slot::acquire(unique("tls-plain"), options(url));
  ASSERT_FALSE(slot);
  EXPECT_EQ(slot.error().code(), fleet::errc::unreachable) << slot.error().message();
  EXPECT_TRUE(contains(slot.error().message(),
                       "if this endpoint does not serve TLS, give it as "
                       "http://"))
      << slot.error().message();
}

TEST_F(FleetTls, AMemberWhoseCertificateFailsIsSkippedForTheNext) {
  auto o = options();
  o.endpoints = {cluster_->endpoint(0, "127.0.0.2"), cluster_->endpoint(0)};
  auto slot = fleet::Slot::acquire(unique("tls-failover"), o);
  ASSERT_TRUE(slot) << slot.error().message();
}

// A certificate file without its key, and no key file: said so, not in the TLS library's words,
// which name the certificate file as the key.
TEST_F(FleetTls, ACertificateWithoutItsKeyIsSaidSo) {
  auto o = options();
  o.tls.key_file.clear();
  const auto refusal = refused(unique("tls-no-key"), o);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->error.code(), fleet::errc::tls_failed) << refusal->error.message();
  EXPECT_EQ(refusal->error.message(),
            "pidlock: acquire " + std::string(refusal->error.place()) +
                ": the client certificate file " + cluster_->file("client.pem") +
                " holds no private key, and no key file was given (--key)");
  // A file that holds both is enough alone.
  const auto both = cluster_->file("client-and-key.pem");
  {
    std::ofstream out(both);
    out << std::ifstream(cluster_->file("client.pem")).rdbuf()
        << std::ifstream(cluster_->file("client-key.pem")).rdbuf();
  }
  o.tls.cert_file = both;
  auto slot = fleet::Slot::acquire(unique("tls-cert-and-key"), o);
  EXPECT_TRUE(slot) << slot.error().message();
}

// etcd refuses an expired client certificate with a bare "bad certificate" alert: the message
// says what the certificate itself says, that it expired, and when.
TEST_F(FleetTls, AnExpiredClientCertificateIsCalledExpired) {
  auto o = options();
  o.tls.cert_file = cluster_->file("expired.pem");
  o.tls.key_file = cluster_->file("expired-key.pem");
  expect_tls_failure(o, "; the client certificate " + cluster_->file("expired.pem") +
                            " expired on 2020-01-02 00:00:00 UTC: renew it");
}

TEST_F(FleetTls, InsecureSkipVerifyIsAnExplicitChoice) {
  auto o = options(cluster_->endpoint(0, "127.0.0.2"));
  o.tls.ca_file = cluster_->file("other-ca.pem");
  o.tls.insecure_skip_verify = true;
  auto slot = fleet::Slot::acquire(unique("tls-insecure"), o);
  ASSERT_TRUE(slot) << slot.error().message();
}

// --- Authentication ---

class FleetAuth : public test::SharedCluster<FleetAuth> {
 public:
  // Simple tokens that expire after a second unused: every test here outlives a few.
  static ClusterConfig config() {
    ClusterConfig auth;
    auth.flags = {"--auth-token simple", "--auth-token-ttl 1"};
    auth.auth = true;
    return auth;
  }

 protected:
  static fleet::Options as(const std::string& user, const std::string& password) {
    fleet::Options o;
    o.endpoints = {cluster_->endpoint(0)};
    o.user = user;
    o.password = password;
    return o;
  }
};

TEST_F(FleetAuth, WorksWithTheRightPassword) {
  const auto name = unique("auth-ok");
  auto slot = fleet::Slot::acquire(name, as("alice", "alice-pw"));
  ASSERT_TRUE(slot) << slot.error().message();
  EXPECT_TRUE(slot->keep_alive());
  auto second = fleet::Slot::acquire(name, as("alice", "alice-pw"));
  ASSERT_FALSE(second);
  EXPECT_TRUE(second.error().held()) << second.error().message();
  const auto status = fleet::inspect(name, as("alice", "alice-pw"));
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(status->holders.size(), 1u);
  EXPECT_FALSE(slot->release());
}

TEST_F(FleetAuth, AWrongPasswordIsAnAuthFailureNotBusyAndNotRetried) {
  const auto refusal = refused(unique("auth-wrong"), as("alice", "not-the-password"));
  ASSERT_TRUE(refusal);
  const fleet::Error& error = refusal->error;
  EXPECT_EQ(error.code(), fleet::errc::auth_failed) << error.message();
  EXPECT_EQ(error.code(), std::errc::permission_denied);
  EXPECT_FALSE(error.held());
  EXPECT_LT(refusal->took, 5s);
  EXPECT_TRUE(contains(error.message(), cluster_->endpoint(0))) << error.message();
  EXPECT_TRUE(contains(error.message(), "check the password of etcd user alice"))
      << error.message();
  EXPECT_FALSE(contains(error.message(), "not-the-password")) << error.message();
  const auto status = fleet::inspect("x", as("alice", "not-the-password"));
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), fleet::errc::auth_failed);
}

TEST_F(FleetAuth, NoCredentialsForAnEtcdThatWantsThemIsAnAuthFailure) {
  fleet::Options o;
  o.endpoints = {cluster_->endpoint(0)};
  const auto refusal = refused(unique("auth-none"), o);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->error.code(), fleet::errc::auth_failed) << refusal->error.message();
  EXPECT_TRUE(contains(refusal->error.message(), "give a user and password"))
      << refusal->error.message();
  EXPECT_LT(refusal->took, 5s);
}

TEST_F(FleetAuth, AUserWithoutPermissionOnThePrefixIsDenied) {
  const auto refusal = refused(unique("auth-bob"), as("bob", "bob-pw"));
  ASSERT_TRUE(refusal);
  const fleet::Error& error = refusal->error;
  EXPECT_EQ(error.code(), fleet::errc::permission_denied) << error.message();
  EXPECT_EQ(error.code(), std::errc::operation_not_permitted);
  EXPECT_FALSE(error.held());
  EXPECT_LT(refusal->took, 5s);
  EXPECT_TRUE(contains(error.message(),
                       "etcd user bob needs a role with readwrite on the keys "
                       "under pidlock/"))
      << error.message();
  EXPECT_FALSE(contains(error.message(), "bob-pw")) << error.message();
  const auto status = fleet::inspect("x", as("bob", "bob-pw"));
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), fleet::errc::permission_denied);
}

TEST_F(FleetAuth, APrefixOutsideTheUsersRoleIsDenied) {
  auto o = as("alice", "alice-pw");
  o.key_prefix = "elsewhere/";
  const auto refusal = refused(unique("auth-prefix"), o);
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->error.code(), fleet::errc::permission_denied) << refusal->error.message();
  o.key_prefix = "other/";
  auto slot = fleet::Slot::acquire(unique("auth-prefix"), o);
  ASSERT_TRUE(slot) << slot.error().message();
}

// The token expires only when unused for its TTL: the wait is the point, not a synchronisation.
void let_the_token_expire() { std::this_thread::sleep_for(2500ms); }

TEST_F(FleetAuth, AHolderOutlivesItsTokenAndReauthenticates) {
  auto o = as("alice", "alice-pw");
  o.ttl = 6s;  // renewal due every 2 s; expired() only after 4 s without one
  const auto name = unique("auth-ttl");
  auto slot = fleet::Slot::acquire(name, o);
  ASSERT_TRUE(slot) << slot.error().message();
  for (int i = 0; i < 2; ++i) {
    let_the_token_expire();
    const auto renewed = slot->keep_alive();
    ASSERT_TRUE(renewed) << renewed.error().message();
    EXPECT_FALSE(slot->expired());
  }
  EXPECT_FALSE(slot->release());
  auto again = fleet::Slot::acquire(name, o);
  EXPECT_TRUE(again) << again.error().message();
}

TEST_F(FleetAuth, TheClientRenewsAnExpiredTokenOnceAndRetries) {
  fleet::etcd::Settings settings;
  settings.endpoints = {cluster_->endpoint(0)};
  settings.user = "alice";
  settings.password = "alice-pw";
  auto client = fleet::etcd::Client::open(settings);
  ASSERT_TRUE(client);
  const std::string key = "pidlock/" + unique("auth-client");
  ASSERT_TRUE(client->put(key, "v", 0));
  EXPECT_EQ(client->authentications(), 1);
  let_the_token_expire();
  const auto read = client->get(key);
  ASSERT_TRUE(read) << read.error().cause();
  ASSERT_TRUE(*read);
  EXPECT_EQ((*read)->value, "v");
  EXPECT_EQ(client->authentications(), 2);
  // A watch too: the token goes in its stream's request.
  let_the_token_expire();
  const auto watched = client->watch_prefix(key, 1, 2s, [](const auto&) { return false; });
  ASSERT_TRUE(watched) << watched.error().cause();
  EXPECT_EQ(*watched, fleet::etcd::WatchEnd::stopped);
  EXPECT_EQ(client->authentications(), 3);
}

// A user of its own, with readwrite on pidlock/ through a role of its own, that a test may take
// away: "carol-PID-N", password "carol-pw".
std::string user_with_a_role(test::Cluster& cluster) {
  const std::string user = unique("carol");
  const std::string role = user + "-rw";
  for (const std::vector<std::string>& step :
       {std::vector<std::string>{"role", "add", role},
        {"role", "grant-permission", role, "--prefix=true", "readwrite", "pidlock/"},
        {"user", "add", user, "--new-user-password", "carol-pw"},
        {"user", "grant-role", user, role}}) {
    const auto done = cluster.etcdctl(step);
    EXPECT_EQ(done.code, 0) << step[0] << " " << step[1] << ": " << done.err;
  }
  return user;
}

// A role revoked while the slot is held: the next renewal finds the user may no longer check its
// key, and the slot is given up, saying what etcd refused and what the user needs; releasing it
// says that etcd refused that too, and that the slot frees with the lease.
TEST_F(FleetAuth, ARoleRevokedDuringAHoldIsNoticedAndSaid) {
  const std::string user = user_with_a_role(*cluster_);
  auto o = as(user, "carol-pw");
  auto slot = fleet::Slot::acquire(unique("auth-revoked"), o);
  ASSERT_TRUE(slot) << slot.error().message();
  ASSERT_TRUE(slot->keep_alive());
  ASSERT_EQ(cluster_->etcdctl({"user", "revoke-role", user, user + "-rw"}).code, 0);
  const auto renewed = slot->keep_alive();
  ASSERT_FALSE(renewed) << "the revoked role went unnoticed";
  EXPECT_EQ(renewed.error().code(), fleet::errc::slot_lost);
  EXPECT_EQ(renewed.error().kind(), fleet::ErrorKind::lease_lost);
  EXPECT_TRUE(slot->lost());
  EXPECT_TRUE(contains(renewed.error().message(), "etcd: PermissionDenied: "))
      << renewed.error().message();
  EXPECT_TRUE(
      contains(renewed.error().message(), "etcd user " + user +
                                              " needs a role with readwrite on the keys under "
                                              "pidlock/"))
      << renewed.error().message();
  EXPECT_TRUE(contains(renewed.error().message(), "the slot can no longer be checked"))
      << renewed.error().message();
  const auto released = slot->revoke();
  ASSERT_FALSE(released) << "the release failed silently";
  EXPECT_EQ(released.error().code(), fleet::errc::permission_denied) << released.error().message();
  EXPECT_TRUE(
      contains(released.error().message(), "the slot frees when the lease expires, within 5 s"))
      << released.error().message();
}

TEST_F(FleetAuth, CredentialsForAnEtcdWithoutAuthAreNotNeeded) {
  Cluster plain(1);
  fleet::Options o;
  o.endpoints = {plain.endpoint(0)};
  o.user = "alice";
  o.password = "whatever";
  auto slot = fleet::Slot::acquire(unique("no-auth"), o);
  ASSERT_TRUE(slot) << slot.error().message();
}

}  // namespace
}  // namespace pidlock
