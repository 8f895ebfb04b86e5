// A typed client for etcd's v3 JSON gateway (POST /v3/...), with endpoint failover.
//
// Why the gateway and not gRPC: etcd has served it since 3.3 and documents it as the way to use
// v3 without gRPC; libcurl and nlohmann-json are in Debian and small, while a gRPC client would
// need etcd's .proto files generated into this tree, and its runtime. What pidlock needs — lease
// grant, keep-alive and revoke, a transaction, a range and a watch — is all there.
//
// The client owns the wire format (wire.hpp), the choice of endpoint and the token; the transport
// (etcd_transport.hpp) does the HTTP. Its callers see typed answers or a typed Failure
// (etcd_failure.hpp). Nothing here throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "etcd_failure.hpp"
#include "etcd_transport.hpp"
#include "pidlock/fleet.hpp"
#include "wire.hpp"

namespace pidlock::fleet::etcd {

// What ended a watch.
enum class WatchEnd {
  stopped,    // on_event returned false
  timed_out,  // the stream was up, and nothing stopped it before the timeout
  ended,      // etcd ended or canceled the stream (a compacted start revision, a member leaving)
};

// How to reach the cluster.
struct Settings {
  std::vector<std::string> endpoints;       // at least one: there is no default
  std::chrono::milliseconds timeout{2000};  // per HTTP request
  Tls tls;
  std::string user;  // empty: no authentication
  std::string password;
};

class Client {
 public:
  // Fails only when libcurl cannot be set up, or without endpoints.
  [[nodiscard]] static std::expected<Client, Failure> open(Settings settings);
  [[nodiscard]] static std::expected<Client, Failure> open(std::vector<std::string> endpoints,
                                                           std::chrono::milliseconds timeout);
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  std::expected<Lease, Failure> grant(std::chrono::seconds ttl);
  // The TTL etcd restarted; zero when it no longer knows the lease.
  std::expected<std::chrono::seconds, Failure> keep_alive(LeaseId lease);
  // A lease etcd does not know counts as revoked.
  std::expected<void, Failure> revoke(LeaseId lease);
  // Puts `key` bound to `lease` only if it does not exist (and, given `unchanged`, only if
  // nothing in its range changed since its revision); otherwise says who has it, if anyone.
  std::expected<Created, Failure> create_if_absent(
      std::string_view key, std::string_view value, LeaseId lease,
      const std::optional<Unchanged>& unchanged = std::nullopt);
  std::expected<Revision, Failure> put(std::string_view key, std::string_view value, LeaseId lease);
  std::expected<std::optional<KeyValue>, Failure> get(std::string_view key, bool keys_only = false);
  std::expected<Range, Failure> range_prefix(std::string_view prefix);
  // Several ranges in one request, all as of the same revision.
  std::expected<std::vector<Range>, Failure> read(const std::vector<RangeSpec>& ranges);
  std::expected<std::int64_t, Failure> delete_key(std::string_view key);
  // Deletes `key` only if it is the one created at `created`; whether it did.
  std::expected<bool, Failure> delete_if_created(std::string_view key, Revision created);
  // Streams the changes to keys in [key, range_end) from `start` on, calling `on_events` with
  // each message's events (all of one revision, or of several in order) until it returns false,
  // etcd ends the stream, or `timeout` passes. What on_events throws ends the watch as a
  // Failure (client_setup), never through libcurl.
  using OnEvents = std::function<bool(const std::vector<WatchEvent>& events)>;
  std::expected<WatchEnd, Failure> watch(std::string_view key, std::string_view range_end,
                                         Revision start, std::chrono::milliseconds timeout,
                                         const OnEvents& on_events);
  // As watch(), over every key under `prefix`, one event at a time.
  std::expected<WatchEnd, Failure> watch_prefix(
      std::string_view prefix, Revision start, std::chrono::milliseconds timeout,
      const std::function<bool(const WatchEvent&)>& on_event);

  // The endpoint the next request goes to: the last one that answered, or the next to try.
  const std::string& endpoint() const noexcept { return settings_.endpoints[current_]; }
  // How many tokens etcd has handed us: one, plus one per renewal of an expired one.
  int authentications() const noexcept { return authentications_; }

  // While one lives, no call on the client runs past `until`: requests are cut short and
  // endpoints left untried. A lease holder's renewal must not outlast the lease.
  class Deadline {
   public:
    Deadline(Client& client, std::chrono::steady_clock::time_point until) noexcept
        : client_(client) {
      client_.deadline_ = until;
    }
    ~Deadline() { client_.deadline_.reset(); }
    Deadline(const Deadline&) = delete;
    Deadline& operator=(const Deadline&) = delete;

   private:
    Client& client_;
  };

 private:
  Client(Transport transport, Settings settings) noexcept;

  template <class T, class Attempt>
  std::expected<T, Failure> on_endpoints(std::string_view operation,
                                         std::chrono::milliseconds timeout, Attempt attempt);
  template <class T, class Send>
  std::expected<T, Failure> authenticated(const std::string& endpoint,
                                          std::chrono::milliseconds allowed, Send send);
  std::expected<void, Failure> authenticate(const std::string& endpoint,
                                            std::chrono::milliseconds allowed);
  template <class T>
  std::expected<T, Failure> unary(std::string_view operation, std::string_view path,
                                  const std::string& body,
                                  wire::Parsed<T> (*parse)(std::string_view));

  Transport transport_;
  Settings settings_;
  std::size_t current_ = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  // Sent as the Authorization header. Unset until etcd is first asked for one (with
  // credentials); empty when etcd said it has authentication off.
  std::optional<std::string> token_;
  int authentications_ = 0;
  // The last request that failed since one last succeeded: named when a deadline leaves no time
  // to ask anyone, rather than an endpoint that was not even tried.
  std::optional<Failure> last_failure_;
};

}  // namespace pidlock::fleet::etcd
