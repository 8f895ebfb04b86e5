// A small client for etcd's v3 JSON gateway (POST /v3/...), with endpoint failover.
//
// Why the gateway and not gRPC: etcd has served it since 3.3 and documents it as the way to use
// v3 without gRPC; libcurl and nlohmann-json are in Debian and small, while a gRPC client would
// need etcd's .proto files generated into this tree, and its runtime. What pidlock needs — lease
// grant, keep-alive and revoke, a transaction, a range and a watch — is all there.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

namespace pidlock::fleet::etcd {

using nlohmann::json;

struct Failure {
  std::error_code code;
  std::string endpoint;  // the last one tried
  std::string detail;    // what curl or etcd said
};

class Client {
 public:
  Client(std::vector<std::string> endpoints, std::chrono::milliseconds timeout);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // POSTs `body` to /v3/<path>. A transport failure moves on to the next endpoint, each tried
  // at most once per call; an answer from etcd (even an error) ends the call.
  std::expected<json, Failure> call(std::string_view path, const json& body);

  // Opens a watch and calls `on_message` for each message etcd streams, until it returns false
  // or etcd ends the stream (true is returned), or `timeout` passes (false), or the stream
  // fails (a Failure).
  std::expected<bool, Failure> watch(const json& create_request, std::chrono::milliseconds timeout,
                                     const std::function<bool(const json&)>& on_message);

  const std::string& endpoint() const { return endpoints_[current_]; }

 private:
  struct Handle;
  std::vector<std::string> endpoints_;
  std::size_t current_ = 0;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Handle> handle_;
};

std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text);  // invalid input decodes to what it can
// etcd encodes int64 as JSON strings; this reads either form, 0 when absent or malformed.
std::int64_t int64_of(const json& value);
// The first key after every key that starts with `prefix`: the range_end of a prefix range.
std::string prefix_end(std::string prefix);

}  // namespace pidlock::fleet::etcd
