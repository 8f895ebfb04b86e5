// HTTP POSTs to etcd's endpoints over libcurl, one at a time on one handle that keeps its
// connections, and what curl's failures mean (TLS refusing, or a network or member going away).
// The only file that sees curl: the client (etcd_client.hpp) hands it requests and reads the
// answers' bytes through a Receiver.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "etcd_failure.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet::etcd {

class Transport {
 public:
  struct Request {
    const std::string& endpoint;  // "https://10.0.0.1:2379", named by a Failure
    std::string path;             // "/v3/kv/range"
    std::string_view operation;   // "range", named by a Failure
    const std::string& body;
    std::chrono::milliseconds timeout;
    std::string_view token;  // empty: no Authorization header
    const Tls& tls;
  };

  // Takes the answer's bytes as they come, with the HTTP status so far. False ends the transfer:
  // the receiver has seen enough, or too much. What it throws ends the transfer too, never
  // through curl's C frames: the post fails with what it was (a client_setup Failure).
  using Receiver = std::function<bool(std::string_view bytes, long http_status)>;

  struct Outcome {
    long http_status = 0;  // 0 when no HTTP answer came
    // Why the transfer did not complete: curl's failure, classified, or what the receiver
    // threw. Unset when it completed, or the receiver ended it.
    std::optional<Failure> failure;
  };

  // Fails only when libcurl cannot be set up: why.
  [[nodiscard]] static std::expected<Transport, std::string> open();
  Transport(Transport&&) noexcept;
  Transport& operator=(Transport&&) noexcept;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  ~Transport();

  Outcome post(const Request& request, const Receiver& receive);

 private:
  struct Handle;  // the curl handle, with its connection cache
  explicit Transport(std::unique_ptr<Handle> handle) noexcept;
  std::unique_ptr<Handle> handle_;
};

}  // namespace pidlock::fleet::etcd
