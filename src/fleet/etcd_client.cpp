// The etcd client: typed calls, endpoint failover and authentication, over the transport.
#include "etcd_client.hpp"

#include <algorithm>
#include <type_traits>

#include "etcd_texts.hpp"

namespace pidlock::fleet::etcd {
namespace {

// No answer pidlock needs comes near this; something that sends more is not etcd, and must not
// make us buffer without bound.
constexpr std::size_t max_answer_bytes = std::size_t{64} << 20U;

struct Collected {
  std::string body;
  bool too_large = false;
};

// Collects a unary answer, up to max_answer_bytes.
Transport::Receiver collect(Collected& collected) {
  return [&collected](std::string_view bytes, long /*http_status*/) {
    if (collected.body.size() + bytes.size() > max_answer_bytes) {
      collected.too_large = true;
      return false;
    }
    collected.body.append(bytes);
    return true;
  };
}

// A watch stream: one JSON message per line, which may straddle two writes.
struct Stream {
  Stream(const Client::OnEvents& events, std::string_view operation_name,
         const std::string& endpoint_url)
      : on_events(events), operation(operation_name), endpoint(endpoint_url) {}

  const Client::OnEvents& on_events;
  std::string_view operation;
  const std::string& endpoint;
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
      failure = refusal(*error, 200, operation, endpoint);
      return false;
    }
    if (!message->events.empty() && !on_events(message->events)) {
      stopped = true;
      return false;
    }
    if (message->canceled) {
      // Refused at its creation: for who asks (a token, a permission), not a stream that ended.
      if (auto refused = wire::parse_cancel_reason(message->cancel_reason)) {
        failure = refusal(*refused, 200, operation, endpoint);
        return false;
      }
      ended = true;
    }
    return !message->canceled;
  }

  // False ends the transfer.
  bool take_lines(std::string_view bytes, long http_status) {
    if (buffer.size() + bytes.size() > max_answer_bytes) {
      failure = malformed(operation, endpoint, http_status, "a message longer than 64 MiB");
      return false;
    }
    buffer.append(bytes);
    if (http_status != 200) return true;  // an error body: read after the transfer
    std::size_t start = 0;
    for (std::size_t newline = 0; (newline = buffer.find('\n', start)) != std::string::npos;
         start = newline + 1) {
      const std::string_view line = std::string_view(buffer).substr(start, newline - start);
      if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
      if (!take(line)) return false;
    }
    buffer.erase(0, start);
    return true;
  }
};

// A unary call's answer: the body of an HTTP 200, or why there is none.
std::expected<std::string, Failure> answer_to(Transport& transport,
                                              const Transport::Request& request) {
  Collected answer;
  const auto outcome = transport.post(request, collect(answer));
  if (outcome.failure) return std::unexpected(*outcome.failure);
  if (answer.too_large) {
    return std::unexpected(
        malformed(request.operation, request.endpoint, outcome.http_status, "larger than 64 MiB"));
  }
  if (outcome.http_status != 200) {
    return std::unexpected(
        http_failure(outcome.http_status, answer.body, request.operation, request.endpoint));
  }
  return std::move(answer.body);
}

}  // namespace

std::expected<Client, Failure> Client::open(Settings settings) {
  if (settings.endpoints.empty()) {
    return std::unexpected(
        make_failure(FailureKind::client_setup, "connect", "", "no etcd endpoints given"));
  }
  for (auto& endpoint : settings.endpoints) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  }
  auto transport = Transport::open();
  if (!transport) {
    return std::unexpected(make_failure(FailureKind::client_setup, "connect",
                                        settings.endpoints.front(), transport.error()));
  }
  return Client(std::move(*transport), std::move(settings));
}

std::expected<Client, Failure> Client::open(std::vector<std::string> endpoints,
                                            std::chrono::milliseconds timeout) {
  Settings settings;
  settings.endpoints = std::move(endpoints);
  settings.timeout = timeout;
  return open(std::move(settings));
}

Client::Client(Transport transport, Settings settings) noexcept
    : transport_(std::move(transport)), settings_(std::move(settings)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

// The one place that picks endpoints: each is tried at most once per call, from the last one
// that answered; the first that answers, or fails in a way another could not fix, ends the call.
template <class T, class Attempt>
std::expected<T, Failure> Client::on_endpoints(std::string_view operation,
                                               std::chrono::milliseconds timeout, Attempt attempt) {
  std::optional<std::expected<T, Failure>> outcome;
  std::vector<std::pair<std::string, std::string>> failed;  // this call's, each worth another
  const std::size_t count = settings_.endpoints.size();
  for (std::size_t tried = 0; tried < count; ++tried) {
    if (outcome) {
      if (*outcome || !outcome->error().worth_another_endpoint()) return std::move(*outcome);
      failed.emplace_back(outcome->error().endpoint, outcome->error().cause());
      current_ = (current_ + 1) % count;
    }
    auto allowed = timeout;
    if (deadline_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *deadline_ - std::chrono::steady_clock::now());
      if (left <= std::chrono::milliseconds::zero()) break;
      allowed = std::min(allowed, left);
    }
    const std::string& endpoint = settings_.endpoints[current_];
    outcome = authenticated<T>(
        endpoint, allowed, [&](std::chrono::milliseconds left) { return attempt(endpoint, left); });
    if (*outcome) {
      last_failure_.reset();
    } else {
      last_failure_ = outcome->error();
    }
  }
  if (outcome) {
    if (*outcome || !outcome->error().worth_another_endpoint()) return std::move(*outcome);
    // Every endpoint tried failed: each is named, not only the last.
    if (!failed.empty() && failed.back().first == outcome->error().endpoint) failed.pop_back();
    outcome->error().earlier = std::move(failed);
    return std::move(*outcome);
  }
  // Nobody was asked: name whoever failed last, not an endpoint that was not even tried.
  if (last_failure_) {
    return std::unexpected(make_failure(
        FailureKind::timeout, operation, last_failure_->endpoint,
        "no time left to ask (the caller's deadline has passed); the last try there: " +
            last_failure_->cause()));
  }
  return std::unexpected(make_failure(FailureKind::timeout, operation, endpoint(),
                                      "no time left to ask (the caller's deadline has passed)"));
}

// One request at one endpoint, with a token when there are credentials: fetched first when we
// have none, and once more when etcd says the one we sent is no longer good (simple tokens
// expire after --auth-token-ttl unused; any token, after a change to users or roles).
template <class T, class Send>
std::expected<T, Failure> Client::authenticated(const std::string& endpoint,
                                                std::chrono::milliseconds allowed, Send send) {
  if (settings_.user.empty()) return send(allowed);
  const auto until = std::chrono::steady_clock::now() + allowed;
  const auto left = [&] {
    return std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                        until - std::chrono::steady_clock::now()),
                    std::chrono::milliseconds(1));
  };
  const bool fresh = !token_.has_value();
  if (fresh) {
    if (auto got = authenticate(endpoint, allowed); !got) return std::unexpected(got.error());
  }
  auto outcome = send(left());
  if (outcome || fresh || !outcome.error().token_rejected()) return outcome;
  token_.reset();
  if (auto got = authenticate(endpoint, left()); !got) return std::unexpected(got.error());
  return send(left());
}

std::expected<void, Failure> Client::authenticate(const std::string& endpoint,
                                                  std::chrono::milliseconds allowed) {
  static constexpr std::string_view operation = "authenticate";
  const std::string body = wire::authenticate_request(settings_.user, settings_.password);
  auto answer = answer_to(
      transport_, {endpoint, "/v3/auth/authenticate", operation, body, allowed, {}, settings_.tls});
  if (!answer) {
    Failure& failure = answer.error();
    // Credentials for an etcd that checks none: nothing to send.
    if (failure.grpc_code == grpc::failed_precondition &&
        texts::says(failure.detail, texts::authentication_is_not_enabled)) {
      token_.emplace();
      return {};
    }
    // Whatever else etcd says no to here, it is saying no to the user and password.
    if (failure.kind == FailureKind::etcd_error && !failure.transient()) {
      failure.kind = FailureKind::auth;
    }
    return std::unexpected(std::move(failure));
  }
  auto token = wire::parse_authenticate(*answer);
  if (!token) return std::unexpected(malformed(operation, endpoint, 200, token.error()));
  token_ = std::move(*token);
  ++authentications_;
  return {};
}

template <class T>
std::expected<T, Failure> Client::unary(std::string_view operation, std::string_view path,
                                        const std::string& body,
                                        wire::Parsed<T> (*parse)(std::string_view)) {
  return on_endpoints<T>(
      operation, settings_.timeout,
      [&](const std::string& endpoint,
          std::chrono::milliseconds allowed) -> std::expected<T, Failure> {
        auto answer = answer_to(transport_, {endpoint, "/v3/" + std::string(path), operation, body,
                                             allowed, token_.value_or(""), settings_.tls});
        if (!answer) return std::unexpected(std::move(answer.error()));
        auto parsed = parse(*answer);
        if (!parsed) return std::unexpected(malformed(operation, endpoint, 200, parsed.error()));
        // A stream's error (keep-alive is one) comes with HTTP 200; it counts as etcd's refusal,
        // so that a rejected token is renewed as for any other call.
        if constexpr (std::is_same_v<T, KeepAlive>) {
          if (const auto& error = parsed->error) {
            return std::unexpected(refusal(*error, 200, operation, endpoint));
          }
        }
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
  return answer->ttl;
}

std::expected<void, Failure> Client::revoke(LeaseId lease) {
  auto answer =
      unary("lease revoke", "lease/revoke", wire::lease_request(lease), wire::parse_revoke);
  if (!answer && !answer.error().lease_not_found()) return std::unexpected(answer.error());
  return {};
}

std::expected<Created, Failure> Client::create_if_absent(
    std::string_view key, std::string_view value, LeaseId lease,
    const std::optional<Unchanged>& unchanged) {
  return unary("txn", "kv/txn", wire::create_if_absent_request(key, value, lease, unchanged),
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

std::expected<std::vector<Range>, Failure> Client::read(const std::vector<RangeSpec>& ranges) {
  auto read = unary("range", "kv/txn", wire::read_request(ranges), wire::parse_read);
  if (read && read->size() != ranges.size()) {
    return std::unexpected(malformed("range", endpoint(), 200,
                                     "responses: " + std::to_string(read->size()) + " for " +
                                         std::to_string(ranges.size()) + " ranges asked"));
  }
  return read;
}

std::expected<std::int64_t, Failure> Client::delete_key(std::string_view key) {
  return unary("delete", "kv/deleterange", wire::delete_request(key), wire::parse_delete);
}

std::expected<bool, Failure> Client::delete_if_created(std::string_view key, Revision created) {
  return unary("delete", "kv/txn", wire::delete_if_created_request(key, created),
               wire::parse_succeeded);
}

std::expected<WatchEnd, Failure> Client::watch_prefix(
    std::string_view prefix, Revision start, std::chrono::milliseconds timeout,
    const std::function<bool(const WatchEvent&)>& on_event) {
  return watch(prefix, wire::prefix_end(std::string(prefix)), start, timeout,
               [&on_event](const std::vector<WatchEvent>& events) {
                 return std::all_of(events.begin(), events.end(), on_event);
               });
}

std::expected<WatchEnd, Failure> Client::watch(std::string_view key, std::string_view range_end,
                                               Revision start, std::chrono::milliseconds timeout,
                                               const OnEvents& on_events) {
  const std::string body = wire::watch_request(key, range_end, start);
  return on_endpoints<WatchEnd>(
      "watch", timeout,
      [&](const std::string& endpoint,
          std::chrono::milliseconds allowed) -> std::expected<WatchEnd, Failure> {
        static constexpr std::string_view operation = "watch";
        Stream state(on_events, operation, endpoint);
        const auto outcome = transport_.post(
            {endpoint, "/v3/watch", operation, body, allowed, token_.value_or(""), settings_.tls},
            [&state](std::string_view bytes, long http_status) {
              return state.take_lines(bytes, http_status);
            });
        if (state.stopped) return WatchEnd::stopped;
        if (state.ended) return WatchEnd::ended;
        if (state.failure) return std::unexpected(*state.failure);
        const std::optional<Failure>& failed = outcome.failure;
        if (outcome.http_status == 200) {
          // The server closed the stream (a member shutting down): report it, so that the caller
          // looks at the keys again and watches from a fresh revision.
          if (!failed) return WatchEnd::ended;
          if (failed->kind == FailureKind::timeout) return WatchEnd::timed_out;
        } else if (!failed) {
          return std::unexpected(
              http_failure(outcome.http_status, state.buffer, operation, endpoint));
        }
        return std::unexpected(*failed);
      });
}

}  // namespace pidlock::fleet::etcd
