#include "etcd.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <climits>
#include <mutex>

namespace pidlock::fleet::etcd {
namespace {

// No answer pidlock needs comes near this; something that sends more is not etcd, and must not
// make us buffer without bound.
constexpr std::size_t max_answer_bytes = std::size_t{64} << 20U;

constexpr int grpc_deadline_exceeded = 4;
constexpr int grpc_not_found = 5;
constexpr int grpc_unavailable = 14;

// curl_global_init is not thread-safe; once per process, and its failure remembered.
CURLcode global_init() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return result;
}

long to_curl_milliseconds(std::chrono::milliseconds timeout) {
  // Zero would mean "no timeout" to curl.
  return static_cast<long>(
      std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 1, LONG_MAX));
}

Failure make_failure(FailureKind kind, std::string_view operation, const std::string& endpoint,
                     std::string detail) {
  Failure failure;
  failure.kind = kind;
  failure.operation = std::string(operation);
  failure.endpoint = endpoint;
  failure.detail = std::move(detail);
  return failure;
}

Failure transport_failure(CURLcode result, std::string_view operation,
                          const std::string& endpoint) {
  const FailureKind kind =
      result == CURLE_OPERATION_TIMEDOUT ? FailureKind::timeout : FailureKind::unreachable;
  return make_failure(kind, operation, endpoint, curl_easy_strerror(result));
}

Failure malformed(std::string_view operation, const std::string& endpoint, long status,
                  std::string_view problem) {
  Failure failure =
      make_failure(FailureKind::malformed_response, operation, endpoint, std::string(problem));
  failure.http_status = status;
  return failure;
}

// A non-200 answer: etcd's error when it is one, else whatever answered, shown as it is.
Failure http_failure(long status, std::string_view body, std::string_view operation,
                     const std::string& endpoint) {
  if (const auto error = wire::parse_error(body)) {
    Failure failure =
        make_failure(FailureKind::etcd_error, operation, endpoint, wire::printable(error->message));
    failure.grpc_code = error->code;
    failure.http_status = status;
    return failure;
  }
  return malformed(operation, endpoint, status, "not etcd's error: " + wire::printable(body));
}

Failure stream_failure(const Status& error, std::string_view operation,
                       const std::string& endpoint) {
  Failure failure =
      make_failure(FailureKind::etcd_error, operation, endpoint, wire::printable(error.message));
  failure.grpc_code = error.code;
  failure.http_status = 200;
  return failure;
}

struct Collected {
  std::string body;
  bool too_large = false;
};

std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) {
  auto* collected = static_cast<Collected*>(user);
  const std::size_t bytes = size * count;
  if (collected->body.size() + bytes > max_answer_bytes) {
    collected->too_large = true;
    return 0;  // ends the transfer (CURLE_WRITE_ERROR)
  }
  collected->body.append(data, bytes);
  return bytes;
}

// A watch stream: one JSON message per line, which may straddle two writes.
struct Stream {
  CURL* curl = nullptr;
  const std::function<bool(const WatchEvent&)>* on_event = nullptr;
  std::string operation;
  std::string endpoint;
  std::string buffer;
  bool stopped = false;
  bool ended = false;
  std::optional<Failure> failure;

  // False ends the stream.
  bool take(std::string_view line) {
    auto message = wire::parse_watch_message(line);
    if (!message) {
      failure = malformed(operation, endpoint, 200, message.error());
      return false;
    }
    if (const auto& error = message->error) {
      failure = stream_failure(*error, operation, endpoint);
      return false;
    }
    for (const auto& event : message->events) {
      if (!(*on_event)(event)) {
        stopped = true;
        return false;
      }
    }
    if (message->canceled) ended = true;
    return !message->canceled;
  }
};

long response_code(CURL* curl) {
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

std::size_t stream(char* data, std::size_t size, std::size_t count, void* user) {
  auto* state = static_cast<Stream*>(user);
  const std::size_t bytes = size * count;
  if (state->buffer.size() + bytes > max_answer_bytes) {
    state->failure = malformed(state->operation, state->endpoint, response_code(state->curl),
                               "a message longer than 64 MiB");
    return 0;
  }
  state->buffer.append(data, bytes);
  if (response_code(state->curl) != 200) return bytes;  // an error body: read after the transfer
  std::size_t start = 0;
  for (std::size_t newline = 0; (newline = state->buffer.find('\n', start)) != std::string::npos;
       start = newline + 1) {
    const std::string_view line = std::string_view(state->buffer).substr(start, newline - start);
    if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
    if (!state->take(line)) return 0;  // ends the transfer: curl says CURLE_WRITE_ERROR
  }
  state->buffer.erase(0, start);
  return bytes;
}

}  // namespace

bool Failure::transient() const noexcept {
  switch (kind) {
    case FailureKind::unreachable:
    case FailureKind::timeout:
      return true;
    case FailureKind::etcd_error:
      return http_status >= 500 || grpc_code == grpc_unavailable ||
             grpc_code == grpc_deadline_exceeded;
    case FailureKind::malformed_response:
      return http_status >= 500;
    case FailureKind::client_setup:
      return false;
  }
  return false;
}

bool Failure::worth_another_endpoint() const noexcept {
  return transient() || kind == FailureKind::malformed_response;
}

bool Failure::lease_not_found() const noexcept {
  return kind == FailureKind::etcd_error && grpc_code == grpc_not_found &&
         detail.find("lease not found") != std::string::npos;
}

std::string Failure::cause() const {
  switch (kind) {
    case FailureKind::unreachable:
    case FailureKind::timeout:
    case FailureKind::client_setup:
      return "etcd: " + detail;
    case FailureKind::etcd_error:
      return "etcd: " + wire::grpc_code_name(grpc_code) + ": " + detail;
    case FailureKind::malformed_response:
      return "not an etcd answer (HTTP " + std::to_string(http_status) + "): " + detail;
  }
  return detail;
}

struct Client::Transport {
  CURL* curl = nullptr;
  curl_slist* headers = nullptr;

  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  ~Transport() {
    curl_slist_free_all(headers);
    if (curl != nullptr) curl_easy_cleanup(curl);
  }

  static std::expected<std::unique_ptr<Transport>, std::string> create() {
    if (const CURLcode result = global_init(); result != CURLE_OK) {
      return std::unexpected(std::string("curl_global_init: ") + curl_easy_strerror(result));
    }
    auto transport = std::make_unique<Transport>();
    transport->curl = curl_easy_init();
    if (transport->curl == nullptr)
      return std::unexpected("curl_easy_init failed (out of memory?)");
    transport->headers = curl_slist_append(nullptr, "Content-Type: application/json");
    if (transport->headers == nullptr)
      return std::unexpected("curl_slist_append failed (out of memory?)");
    return transport;
  }

  struct Exchange {
    CURLcode result = CURLE_OK;
    long status = 0;
  };

  Exchange post(const std::string& url, const std::string& body, std::chrono::milliseconds timeout,
                curl_write_callback write, void* user) {
    curl_easy_reset(curl);  // keeps the connection cache: renewals reuse one connection
    const long timeout_ms = to_curl_milliseconds(timeout);
    const CURLcode set =
        first_error({curl_easy_setopt(curl, CURLOPT_URL, url.c_str()),
                     curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers),
                     curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str()),
                     curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size())),
                     curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms),
                     curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 1000L)),
                     // No SIGALRM for timeouts: we are a library, in someone else's process.
                     curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L),
                     curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write),
                     curl_easy_setopt(curl, CURLOPT_WRITEDATA, user),
                     curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https")});
    if (set != CURLE_OK) return {set, 0};
    const CURLcode result = curl_easy_perform(curl);
    return {result, response_code(curl)};
  }

  static CURLcode first_error(std::initializer_list<CURLcode> results) {
    for (const CURLcode result : results) {
      if (result != CURLE_OK) return result;
    }
    return CURLE_OK;
  }
};

std::expected<Client, Failure> Client::open(std::vector<std::string> endpoints,
                                            std::chrono::milliseconds timeout) {
  if (endpoints.empty()) endpoints.emplace_back("http://127.0.0.1:2379");
  for (auto& endpoint : endpoints) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  }
  auto transport = Transport::create();
  if (!transport) {
    return std::unexpected(
        make_failure(FailureKind::client_setup, "connect", endpoints.front(), transport.error()));
  }
  return Client(std::move(*transport), std::move(endpoints), timeout);
}

Client::Client(std::unique_ptr<Transport> transport, std::vector<std::string> endpoints,
               std::chrono::milliseconds timeout) noexcept
    : transport_(std::move(transport)), endpoints_(std::move(endpoints)), timeout_(timeout) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

// The one place that picks endpoints: each is tried at most once per call, from the last one
// that answered; the first that answers, or fails in a way another could not fix, ends the call.
template <class T, class Attempt>
std::expected<T, Failure> Client::on_endpoints(std::string_view operation,
                                               std::chrono::milliseconds timeout, Attempt attempt) {
  std::optional<std::expected<T, Failure>> outcome;
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    if (outcome) {
      if (*outcome || !outcome->error().worth_another_endpoint()) return std::move(*outcome);
      current_ = (current_ + 1) % endpoints_.size();
    }
    auto allowed = timeout;
    if (deadline_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *deadline_ - std::chrono::steady_clock::now());
      if (left <= std::chrono::milliseconds::zero()) break;
      allowed = std::min(allowed, left);
    }
    outcome = attempt(endpoints_[current_], allowed);
  }
  if (outcome) return std::move(*outcome);
  return std::unexpected(make_failure(FailureKind::timeout, operation, endpoint(),
                                      "no time left to ask (the caller's deadline has passed)"));
}

template <class T>
std::expected<T, Failure> Client::unary(std::string_view operation, std::string_view path,
                                        const std::string& body,
                                        wire::Parsed<T> (*parse)(std::string_view)) {
  return on_endpoints<T>(
      operation, timeout_,
      [&](const std::string& endpoint,
          std::chrono::milliseconds allowed) -> std::expected<T, Failure> {
        Collected answer;
        const auto exchange = transport_->post(endpoint + "/v3/" + std::string(path), body, allowed,
                                               collect, &answer);
        if (answer.too_large) {
          return std::unexpected(
              malformed(operation, endpoint, exchange.status, "larger than 64 MiB"));
        }
        if (exchange.result != CURLE_OK) {
          return std::unexpected(transport_failure(exchange.result, operation, endpoint));
        }
        if (exchange.status != 200) {
          return std::unexpected(http_failure(exchange.status, answer.body, operation, endpoint));
        }
        auto parsed = parse(answer.body);
        if (!parsed) return std::unexpected(malformed(operation, endpoint, 200, parsed.error()));
        return std::move(*parsed);
      });
}

std::expected<Lease, Failure> Client::grant(std::chrono::seconds ttl) {
  return unary("lease grant", "lease/grant", wire::grant_request(ttl), wire::parse_grant);
}

std::expected<std::chrono::seconds, Failure> Client::keep_alive(LeaseId lease) {
  auto answer = unary("lease keepalive", "lease/keepalive", wire::lease_request(lease),
                      wire::parse_keep_alive);
  if (!answer) return std::unexpected(answer.error());
  if (const auto& error = answer->error) {
    return std::unexpected(stream_failure(*error, "lease keepalive", endpoint()));
  }
  return answer->ttl;
}

std::expected<void, Failure> Client::revoke(LeaseId lease) {
  auto answer =
      unary("lease revoke", "lease/revoke", wire::lease_request(lease), wire::parse_revoke);
  if (!answer && !answer.error().lease_not_found()) return std::unexpected(answer.error());
  return {};
}

std::expected<Created, Failure> Client::create_if_absent(std::string_view key,
                                                         std::string_view value, LeaseId lease) {
  return unary("txn", "kv/txn", wire::create_if_absent_request(key, value, lease),
               wire::parse_create_if_absent);
}

std::expected<Revision, Failure> Client::put(std::string_view key, std::string_view value,
                                             LeaseId lease) {
  return unary("put", "kv/put", wire::put_request(key, value, lease), wire::parse_put);
}

std::expected<std::optional<KeyValue>, Failure> Client::get(std::string_view key, bool keys_only) {
  auto range =
      unary("range", "kv/range", wire::range_request(key, {}, keys_only), wire::parse_range);
  if (!range) return std::unexpected(range.error());
  for (auto& kv : range->kvs) {
    if (kv.key == key) return std::move(kv);
  }
  return std::nullopt;
}

std::expected<Range, Failure> Client::range_prefix(std::string_view prefix) {
  return unary("range", "kv/range",
               wire::range_request(prefix, wire::prefix_end(std::string(prefix)), false),
               wire::parse_range);
}

std::expected<std::int64_t, Failure> Client::delete_key(std::string_view key) {
  return unary("delete", "kv/deleterange", wire::delete_request(key), wire::parse_delete);
}

std::expected<WatchEnd, Failure> Client::watch_prefix(
    std::string_view prefix, Revision start, std::chrono::milliseconds timeout,
    const std::function<bool(const WatchEvent&)>& on_event) {
  const std::string body =
      wire::watch_request(prefix, wire::prefix_end(std::string(prefix)), start);
  return on_endpoints<WatchEnd>(
      "watch", timeout,
      [&](const std::string& endpoint,
          std::chrono::milliseconds allowed) -> std::expected<WatchEnd, Failure> {
        Stream state;
        state.curl = transport_->curl;
        state.on_event = &on_event;
        state.operation = "watch";
        state.endpoint = endpoint;
        const auto exchange =
            transport_->post(endpoint + "/v3/watch", body, allowed, stream, &state);
        if (state.stopped) return WatchEnd::stopped;
        if (state.ended) return WatchEnd::ended;
        if (state.failure) return std::unexpected(*state.failure);
        if (exchange.status == 200) {
          if (exchange.result == CURLE_OPERATION_TIMEDOUT) return WatchEnd::timed_out;
          // The server closed the stream (a member shutting down): report it, so that the caller
          // looks at the keys again and watches from a fresh revision.
          if (exchange.result == CURLE_OK) return WatchEnd::ended;
        } else if (exchange.result == CURLE_OK) {
          return std::unexpected(http_failure(exchange.status, state.buffer, "watch", endpoint));
        }
        return std::unexpected(transport_failure(exchange.result, "watch", endpoint));
      });
}

}  // namespace pidlock::fleet::etcd
