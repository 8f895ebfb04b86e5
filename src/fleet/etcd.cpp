#include "etcd.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <type_traits>

#include "../escape.hpp"

namespace pidlock::fleet::etcd {
namespace {

// No answer pidlock needs comes near this; something that sends more is not etcd, and must not
// make us buffer without bound.
constexpr std::size_t max_answer_bytes = std::size_t{64} << 20U;

constexpr int grpc_invalid_argument = 3;
constexpr int grpc_deadline_exceeded = 4;
constexpr int grpc_not_found = 5;
constexpr int grpc_permission_denied = 7;
constexpr int grpc_failed_precondition = 9;
constexpr int grpc_unavailable = 14;
constexpr int grpc_unauthenticated = 16;

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

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// What to check after a TLS failure, by what curl said.
std::string_view tls_hint(CURLcode result) {
  switch (result) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return "check that the CA file (or the system's CAs) signed the server's certificate, and "
             "that the certificate names the host in the endpoint's URL";
    case CURLE_SSL_CERTPROBLEM:
      return "check the client certificate and key files";
    case CURLE_SSL_CACERT_BADFILE:
      return "check the CA file";
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      return "the server refused the session: does it want a client certificate (cert and key "
             "files) signed by a CA it trusts?";
    default:
      return "check that the endpoint speaks TLS, and the CA, client certificate and key files";
  }
}

// Whether a curl failure is TLS refusing, rather than a network or a server going away: those
// may pass, a certificate that does not verify will not.
bool is_tls_failure(CURLcode result, std::string_view message) {
  switch (result) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return true;
    case CURLE_SSL_CONNECT_ERROR:
      // A connection reset or cut during the handshake is a server going away, not TLS.
      return !contains(message, "SSL_ERROR_SYSCALL") && !contains(message, "reset") &&
             !contains(message, "unexpected eof") && !contains(message, "timed out");
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      // A TLS 1.3 server refuses a client certificate (or its absence) after the handshake,
      // with an alert that curl sees on the next read or write.
      return contains(message, " alert ");
    default:
      return false;
  }
}

Failure transport_failure(CURLcode result, std::string_view message, std::string_view operation,
                          const std::string& endpoint) {
  if (is_tls_failure(result, message)) {
    return make_failure(FailureKind::tls, operation, endpoint,
                        std::string(message) + "; " + std::string(tls_hint(result)));
  }
  FailureKind kind = FailureKind::unreachable;
  if (result == CURLE_OPERATION_TIMEDOUT) kind = FailureKind::timeout;
  if (result == CURLE_OUT_OF_MEMORY) kind = FailureKind::client_setup;
  // curl's generic words: the network's failures need no more, and read the same every time.
  std::string detail = curl_easy_strerror(result);
  // etcd's plain port closes a TLS hello without a word: as a member going away does, so it
  // stays worth retrying, but the likelier cause is worth a mention.
  // (OpenSSL words it as SSL_ERROR_SYSCALL or as an unexpected EOF, depending on timing.)
  if (result == CURLE_SSL_CONNECT_ERROR) {
    detail += " (if this endpoint does not serve TLS, give it as http://)";
  }
  // etcd closes a plain HTTP connection to its TLS port without a word: as a member shutting
  // down does, so it stays worth retrying, but the likelier cause is worth a mention.
  if (result == CURLE_GOT_NOTHING && endpoint.starts_with("http://")) {
    detail += " (if this endpoint serves TLS, give it as https://)";
  }
  return make_failure(kind, operation, endpoint, std::move(detail));
}

Failure malformed(std::string_view operation, const std::string& endpoint, long status,
                  std::string_view problem) {
  Failure failure =
      make_failure(FailureKind::malformed_response, operation, endpoint, std::string(problem));
  failure.http_status = status;
  return failure;
}

// Which of etcd's refusals are about who asks: those have errc values of their own, and are
// never retried.
FailureKind kind_of(const Status& error) {
  if (error.code == grpc_permission_denied) return FailureKind::permission;
  if (error.code == grpc_unauthenticated) return FailureKind::auth;
  // What an etcd with authentication on says to a request without a token.
  if (error.code == grpc_invalid_argument && contains(error.message, "user name is empty")) {
    return FailureKind::auth;
  }
  return FailureKind::etcd_error;
}

Failure etcd_failure(const Status& error, long status, std::string_view operation,
                     const std::string& endpoint) {
  Failure failure =
      make_failure(kind_of(error), operation, endpoint, text::printable_ascii(error.message));
  failure.grpc_code = error.code;
  failure.http_status = status;
  return failure;
}

// A non-200 answer: etcd's error when it is one, else whatever answered, shown as it is.
Failure http_failure(long status, std::string_view body, std::string_view operation,
                     const std::string& endpoint) {
  if (const auto error = wire::parse_error(body)) {
    return etcd_failure(*error, status, operation, endpoint);
  }
  // Go's HTTP server, when a TLS listener gets plain HTTP.
  if (status == 400 && contains(body, "HTTP request to an HTTPS server")) {
    Failure failure = make_failure(FailureKind::tls, operation, endpoint,
                                   "the endpoint speaks TLS: give it as https://");
    failure.http_status = status;
    return failure;
  }
  return malformed(operation, endpoint, status, "not etcd's error: " + text::printable_ascii(body));
}

Failure stream_failure(const Status& error, std::string_view operation,
                       const std::string& endpoint) {
  return etcd_failure(error, 200, operation, endpoint);
}

// What an exception thrown inside a libcurl callback was: it must not unwind through curl's C
// frames, so the callback catches it, ends the transfer, and the call fails with this.
std::string exception_text() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return "out of memory";
  } catch (const std::exception& e) {
    return std::string("an exception in the answer's handling: ") + e.what();
  } catch (...) {
    return "an exception in the answer's handling";
  }
}

Failure thrown_failure(std::string_view operation, const std::string& endpoint,
                       std::string detail) {
  return make_failure(FailureKind::client_setup, operation, endpoint, std::move(detail));
}

struct Collected {
  std::string body;
  bool too_large = false;
  std::optional<std::string> thrown;  // what a callback caught
};

std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* collected = static_cast<Collected*>(user);
  const std::size_t bytes = size * count;
  if (collected->body.size() + bytes > max_answer_bytes) {
    collected->too_large = true;
    return 0;  // ends the transfer (CURLE_WRITE_ERROR)
  }
  try {
    collected->body.append(data, bytes);
  } catch (...) {
    collected->thrown = exception_text();
    return 0;
  }
  return bytes;
}

// A watch stream: one JSON message per line, which may straddle two writes.
struct Stream {
  CURL* curl = nullptr;
  const Client::OnEvents* on_events = nullptr;
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
    if (!message->events.empty() && !(*on_events)(message->events)) {
      stopped = true;
      return false;
    }
    if (message->canceled) {
      // Refused at its creation: for who asks (a token, a permission), not a stream that ended.
      if (auto refused = wire::parse_cancel_reason(message->cancel_reason)) {
        failure = stream_failure(*refused, operation, endpoint);
        return false;
      }
      ended = true;
    }
    return !message->canceled;
  }
};

long response_code(CURL* curl) {
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

std::size_t take_lines(Stream& state, const char* data, std::size_t bytes) {
  if (state.buffer.size() + bytes > max_answer_bytes) {
    state.failure = malformed(state.operation, state.endpoint, response_code(state.curl),
                              "a message longer than 64 MiB");
    return 0;
  }
  state.buffer.append(data, bytes);
  if (response_code(state.curl) != 200) return bytes;  // an error body: read after the transfer
  std::size_t start = 0;
  for (std::size_t newline = 0; (newline = state.buffer.find('\n', start)) != std::string::npos;
       start = newline + 1) {
    const std::string_view line = std::string_view(state.buffer).substr(start, newline - start);
    if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
    if (!state.take(line)) return 0;  // ends the transfer: curl says CURLE_WRITE_ERROR
  }
  state.buffer.erase(0, start);
  return bytes;
}

std::size_t stream(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* state = static_cast<Stream*>(user);
  try {
    return take_lines(*state, data, size * count);
  } catch (...) {
    state->failure = thrown_failure(state->operation, state->endpoint, exception_text());
    return 0;
  }
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
    case FailureKind::tls:
    case FailureKind::auth:
    case FailureKind::permission:
      return false;
  }
  return false;
}

// A TLS failure may be one member's certificate; a refused user is refused by all.
bool Failure::worth_another_endpoint() const noexcept {
  return transient() || kind == FailureKind::malformed_response || kind == FailureKind::tls;
}

bool Failure::token_rejected() const noexcept {
  return grpc_code == grpc_unauthenticated || contains(detail, "auth store is old") ||
         (kind == FailureKind::auth && contains(detail, "user name is empty"));
}

bool Failure::lease_not_found() const noexcept {
  return kind == FailureKind::etcd_error && grpc_code == grpc_not_found &&
         detail.find("lease not found") != std::string::npos;
}

namespace {
std::string own_cause(const Failure& failure) {
  switch (failure.kind) {
    case FailureKind::unreachable:
    case FailureKind::timeout:
    case FailureKind::client_setup:
    case FailureKind::tls:
      return "etcd: " + failure.detail;
    case FailureKind::etcd_error:
    case FailureKind::auth:
    case FailureKind::permission:
      if (failure.grpc_code == 0) return "etcd: " + failure.detail;
      return "etcd: " + wire::grpc_code_name(failure.grpc_code) + ": " + failure.detail;
    case FailureKind::malformed_response:
      return "not an etcd answer (HTTP " + std::to_string(failure.http_status) +
             "): " + failure.detail;
  }
  return failure.detail;
}
}  // namespace

std::string Failure::cause() const {
  std::string text = own_cause(*this);
  if (earlier.empty()) return text;
  text += " (before it, ";
  for (std::size_t i = 0; i < earlier.size(); ++i) {
    text += (i > 0 ? "; " : "") + earlier[i].first + ": " + earlier[i].second;
  }
  return text + ")";
}

struct Client::Transport {
  CURL* curl = nullptr;

  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  ~Transport() {
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
    return transport;
  }

  struct Request {
    std::string url;
    const std::string& body;
    std::chrono::milliseconds timeout;
    std::string_view token;  // empty: no Authorization header
    const Tls& tls;
  };

  struct Exchange {
    CURLcode result = CURLE_OK;
    long status = 0;
    std::string error;  // curl's own words on a failure: which certificate, which host name
    bool new_connection = false;  // made for this request, rather than reused
  };

  // A TLS 1.3 server refuses a client certificate (or its absence) only after the handshake, with
  // an alert; when the server's close overtakes our request, curl sees a broken connection, not
  // the alert, as when a member goes away. So a new https connection broken that way is tried
  // once more with TLS 1.2 at most, whose handshake itself asks for the certificate and says why
  // it refuses it. The server is still verified as before: nothing is weakened for the attacker.
  Exchange post(const Request& request, curl_write_callback write, void* user) {
    Exchange exchange = post_once(request, write, user, TlsVersions::any);
    if ((exchange.result == CURLE_SEND_ERROR || exchange.result == CURLE_RECV_ERROR) &&
        exchange.new_connection && request.url.starts_with("https://") &&
        !contains(exchange.error, " alert ")) {
      exchange = post_once(request, write, user, TlsVersions::up_to_1_2);
    }
    return exchange;
  }

  enum class TlsVersions { any, up_to_1_2 };
  // CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2, spelled out: curl's macro shifts an
  // enumerator past its enumeration's range, which -Wconversion rejects.
  static_assert(CURL_SSLVERSION_TLSv1_2 == 6);
  static constexpr long tls_1_2_at_most = 6L | (6L << 16);

  Exchange post_once(const Request& request, curl_write_callback write, void* user,
                     TlsVersions versions) {
    curl_easy_reset(curl);  // keeps the connection cache: renewals reuse one connection
    Headers headers;
    if (!headers.add("Content-Type: application/json") ||
        (!request.token.empty() && !headers.add("Authorization: " + std::string(request.token)))) {
      return {CURLE_OUT_OF_MEMORY, 0, "curl_slist_append failed (out of memory?)"};
    }
    std::array<char, CURL_ERROR_SIZE> error{};
    const long timeout_ms = to_curl_milliseconds(request.timeout);
    const CURLcode set = first_error(
        {curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error.data()),
         curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str()),
         curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.list),
         curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.c_str()),
         curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size())),
         curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms),
         curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 1000L)),
         // No SIGALRM for timeouts: we are a library, in someone else's process.
         curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L),
         curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write),
         curl_easy_setopt(curl, CURLOPT_WRITEDATA, user),
         curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https"), set_tls(request.tls),
         versions == TlsVersions::any ? CURLE_OK
                                      : curl_easy_setopt(curl, CURLOPT_SSLVERSION, tls_1_2_at_most),
         versions == TlsVersions::any ? CURLE_OK
                                      : curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L)});
    if (set != CURLE_OK) return {set, 0, curl_easy_strerror(set)};
    const CURLcode result = curl_easy_perform(curl);
    Exchange exchange{result, response_code(curl), {}};
    long connects = 0;
    exchange.new_connection =
        curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0;
    if (result != CURLE_OK) {
      exchange.error =
          error.front() != '\0' ? std::string(error.data()) : curl_easy_strerror(result);
      while (!exchange.error.empty() && exchange.error.back() == '\n') exchange.error.pop_back();
    }
    return exchange;
  }

  // Verification is curl's default; it is set anyway, so that no reset or build default can
  // turn it off unasked.
  CURLcode set_tls(const Tls& tls) {
    const long verify = tls.insecure_skip_verify ? 0L : 1L;
    const long verify_host = tls.insecure_skip_verify ? 0L : 2L;
    return first_error(
        {curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, verify),
         curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, verify_host),
         tls.ca_file.empty() ? CURLE_OK
                             : curl_easy_setopt(curl, CURLOPT_CAINFO, tls.ca_file.c_str()),
         tls.cert_file.empty() ? CURLE_OK
                               : curl_easy_setopt(curl, CURLOPT_SSLCERT, tls.cert_file.c_str()),
         tls.key_file.empty() ? CURLE_OK
                              : curl_easy_setopt(curl, CURLOPT_SSLKEY, tls.key_file.c_str())});
  }

  // One request's headers: the token changes when it is renewed.
  struct Headers {
    curl_slist* list = nullptr;
    Headers() = default;
    Headers(const Headers&) = delete;
    Headers& operator=(const Headers&) = delete;
    ~Headers() { curl_slist_free_all(list); }
    bool add(const std::string& header) {
      curl_slist* extended = curl_slist_append(list, header.c_str());
      if (extended == nullptr) return false;
      list = extended;
      return true;
    }
  };

  static CURLcode first_error(std::initializer_list<CURLcode> results) {
    for (const CURLcode result : results) {
      if (result != CURLE_OK) return result;
    }
    return CURLE_OK;
  }
};

std::expected<Client, Failure> Client::open(Settings settings) {
  if (settings.endpoints.empty()) {
    return std::unexpected(
        make_failure(FailureKind::client_setup, "connect", "", "no etcd endpoints given"));
  }
  for (auto& endpoint : settings.endpoints) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  }
  auto transport = Transport::create();
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

Client::Client(std::unique_ptr<Transport> transport, Settings settings) noexcept
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
  Collected answer;
  const auto exchange = transport_->post(
      {endpoint + "/v3/auth/authenticate", body, allowed, {}, settings_.tls}, collect, &answer);
  if (answer.thrown) return std::unexpected(thrown_failure(operation, endpoint, *answer.thrown));
  if (answer.too_large) {
    return std::unexpected(malformed(operation, endpoint, exchange.status, "larger than 64 MiB"));
  }
  if (exchange.result != CURLE_OK) {
    return std::unexpected(transport_failure(exchange.result, exchange.error, operation, endpoint));
  }
  if (exchange.status != 200) {
    Failure failure = http_failure(exchange.status, answer.body, operation, endpoint);
    // Credentials for an etcd that checks none: nothing to send.
    if (failure.grpc_code == grpc_failed_precondition &&
        contains(failure.detail, "authentication is not enabled")) {
      token_.emplace();
      return {};
    }
    // Whatever else etcd says no to here, it is saying no to the user and password.
    if (failure.kind == FailureKind::etcd_error && !failure.transient()) {
      failure.kind = FailureKind::auth;
    }
    return std::unexpected(std::move(failure));
  }
  auto token = wire::parse_authenticate(answer.body);
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
        Collected answer;
        const auto exchange = transport_->post({endpoint + "/v3/" + std::string(path), body,
                                                allowed, token_.value_or(""), settings_.tls},
                                               collect, &answer);
        if (answer.thrown)
          return std::unexpected(thrown_failure(operation, endpoint, *answer.thrown));
        if (answer.too_large) {
          return std::unexpected(
              malformed(operation, endpoint, exchange.status, "larger than 64 MiB"));
        }
        if (exchange.result != CURLE_OK) {
          return std::unexpected(
              transport_failure(exchange.result, exchange.error, operation, endpoint));
        }
        if (exchange.status != 200) {
          return std::unexpected(http_failure(exchange.status, answer.body, operation, endpoint));
        }
        auto parsed = parse(answer.body);
        if (!parsed) return std::unexpected(malformed(operation, endpoint, 200, parsed.error()));
        // A stream's error (keep-alive is one) comes with HTTP 200; it counts as etcd's refusal,
        // so that a rejected token is renewed as for any other call.
        if constexpr (std::is_same_v<T, KeepAlive>) {
          if (const auto& error = parsed->error) {
            return std::unexpected(stream_failure(*error, operation, endpoint));
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
        Stream state;
        state.curl = transport_->curl;
        state.on_events = &on_events;
        state.operation = "watch";
        state.endpoint = endpoint;
        const auto exchange = transport_->post(
            {endpoint + "/v3/watch", body, allowed, token_.value_or(""), settings_.tls}, stream,
            &state);
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
        return std::unexpected(
            transport_failure(exchange.result, exchange.error, "watch", endpoint));
      });
}

}  // namespace pidlock::fleet::etcd
