// libcurl for the etcd client: one handle's POSTs, and what curl's failures mean (TLS guessing).
#include "etcd_transport.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <climits>
#include <initializer_list>
#include <mutex>
#include <new>
#include <stdexcept>

#include "etcd_texts.hpp"

namespace pidlock::fleet::etcd {
namespace {

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

long response_code(CURL* curl) {
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  return status;
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
      return std::none_of(
          texts::handshake_cut_short.begin(), texts::handshake_cut_short.end(),
          [message](std::string_view words) { return texts::says(message, words); });
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      return texts::says(message, texts::tls_alert);
    default:
      return false;
  }
}

Failure curl_failure(CURLcode result, std::string_view message, std::string_view operation,
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

// One transfer's way from curl's write callback to the Receiver.
struct Delivery {
  const Transport::Receiver* receive = nullptr;
  CURL* curl = nullptr;
  bool stopped = false;               // the receiver ended the transfer
  std::optional<std::string> thrown;  // what the receiver threw
};

std::size_t deliver(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* delivery = static_cast<Delivery*>(user);
  const std::size_t bytes = size * count;
  try {
    if ((*delivery->receive)(std::string_view(data, bytes), response_code(delivery->curl))) {
      return bytes;
    }
    delivery->stopped = true;
  } catch (...) {
    delivery->thrown = exception_text();
  }
  return 0;  // ends the transfer (CURLE_WRITE_ERROR)
}

CURLcode first_error(std::initializer_list<CURLcode> results) {
  for (const CURLcode result : results) {
    if (result != CURLE_OK) return result;
  }
  return CURLE_OK;
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

}  // namespace

struct Transport::Handle {
  CURL* curl = nullptr;

  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (curl != nullptr) curl_easy_cleanup(curl);
  }

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
  Exchange post(const Request& request, const std::string& url, Delivery& delivery) {
    Exchange exchange = post_once(request, url, delivery, TlsVersions::any);
    if ((exchange.result == CURLE_SEND_ERROR || exchange.result == CURLE_RECV_ERROR) &&
        exchange.new_connection && url.starts_with("https://") &&
        !texts::says(exchange.error, texts::tls_alert)) {
      exchange = post_once(request, url, delivery, TlsVersions::up_to_1_2);
    }
    return exchange;
  }

  enum class TlsVersions { any, up_to_1_2 };
  // CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2, spelled out: curl's macro shifts an
  // enumerator past its enumeration's range, which -Wconversion rejects.
  static_assert(CURL_SSLVERSION_TLSv1_2 == 6);
  static constexpr long tls_1_2_at_most = 6L | (6L << 16);

  Exchange post_once(const Request& request, const std::string& url, Delivery& delivery,
                     TlsVersions versions) {
    curl_easy_reset(curl);  // keeps the connection cache: renewals reuse one connection
    Headers headers;
    if (!headers.add("Content-Type: application/json") ||
        (!request.token.empty() && !headers.add("Authorization: " + std::string(request.token)))) {
      return {CURLE_OUT_OF_MEMORY, 0, "curl_slist_append failed (out of memory?)"};
    }
    std::array<char, CURL_ERROR_SIZE> error{};
    const long timeout_ms = to_curl_milliseconds(request.timeout);
    curl_write_callback write = deliver;
    const CURLcode set = first_error(
        {curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error.data()),
         curl_easy_setopt(curl, CURLOPT_URL, url.c_str()),
         curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.list),
         curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.c_str()),
         curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size())),
         curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms),
         curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 1000L)),
         // No SIGALRM for timeouts: we are a library, in someone else's process.
         curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L),
         curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write),
         curl_easy_setopt(curl, CURLOPT_WRITEDATA, &delivery),
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
};

std::expected<Transport, std::string> Transport::open() {
  if (const CURLcode result = global_init(); result != CURLE_OK) {
    return std::unexpected(std::string("curl_global_init: ") + curl_easy_strerror(result));
  }
  auto handle = std::make_unique<Handle>();
  handle->curl = curl_easy_init();
  if (handle->curl == nullptr) return std::unexpected("curl_easy_init failed (out of memory?)");
  return Transport(std::move(handle));
}

Transport::Transport(std::unique_ptr<Handle> handle) noexcept : handle_(std::move(handle)) {}
Transport::Transport(Transport&&) noexcept = default;
Transport& Transport::operator=(Transport&&) noexcept = default;
Transport::~Transport() = default;

Transport::Outcome Transport::post(const Request& request, const Receiver& receive) {
  const std::string url = request.endpoint + request.path;
  Delivery delivery{&receive, handle_->curl, false, std::nullopt};
  const auto exchange = handle_->post(request, url, delivery);
  Outcome outcome{exchange.status, std::nullopt};
  if (delivery.thrown) {
    outcome.failure = make_failure(FailureKind::client_setup, request.operation, request.endpoint,
                                   std::move(*delivery.thrown));
  } else if (!delivery.stopped && exchange.result != CURLE_OK) {
    outcome.failure =
        curl_failure(exchange.result, exchange.error, request.operation, request.endpoint);
  }
  return outcome;
}

}  // namespace pidlock::fleet::etcd
