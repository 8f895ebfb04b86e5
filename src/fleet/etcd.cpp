#include "etcd.hpp"

#include <curl/curl.h>

#include <array>
#include <charconv>
#include <mutex>

namespace pidlock::fleet::etcd {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::error_code code_of(CURLcode result) {
  switch (result) {
    case CURLE_COULDNT_CONNECT: return std::make_error_code(std::errc::connection_refused);
    case CURLE_OPERATION_TIMEDOUT: return std::make_error_code(std::errc::timed_out);
    case CURLE_COULDNT_RESOLVE_HOST: return std::make_error_code(std::errc::host_unreachable);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return std::make_error_code(std::errc::invalid_argument);
    default: return std::make_error_code(std::errc::io_error);
  }
}

// Streams arrive as JSON objects separated by newlines; a message may straddle two writes.
struct StreamState {
  std::string buffer;
  const std::function<bool(const json&)>* on_message = nullptr;
  bool stopped = false;
};

std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::size_t stream(char* data, std::size_t size, std::size_t count, void* user) {
  auto* state = static_cast<StreamState*>(user);
  state->buffer.append(data, size * count);
  std::size_t newline = 0;
  while ((newline = state->buffer.find('\n')) != std::string::npos) {
    const auto message = json::parse(state->buffer.substr(0, newline), nullptr, false);
    state->buffer.erase(0, newline + 1);
    if (!message.is_discarded() && !(*state->on_message)(message)) {
      state->stopped = true;
      return 0;  // ends the transfer: curl reports CURLE_WRITE_ERROR, which we expect
    }
  }
  return size * count;
}

}  // namespace

struct Client::Handle {
  CURL* curl = nullptr;
  curl_slist* headers = nullptr;
  Handle() {
    global_init();
    curl = curl_easy_init();
    headers = curl_slist_append(nullptr, "Content-Type: application/json");
  }
  ~Handle() {
    curl_slist_free_all(headers);
    if (curl != nullptr) curl_easy_cleanup(curl);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  CURLcode post(const std::string& url, const std::string& body, long timeout_ms,
                curl_write_callback write, void* user, long& status) {
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 1000L));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: we are a library
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, user);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    const CURLcode result = curl_easy_perform(curl);
    status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    return result;
  }
};

Client::Client(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout), handle_(std::make_unique<Handle>()) {
  if (endpoints_.empty()) endpoints_.emplace_back("http://127.0.0.1:2379");
  for (auto& endpoint : endpoints_) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  }
}

Client::~Client() = default;

std::expected<json, Failure> Client::call(std::string_view path, const json& body) {
  const std::string payload = body.dump();
  Failure failure;
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    const std::string url = endpoint() + "/v3/" + std::string(path);
    std::string response;
    long status = 0;
    const CURLcode result = handle_->post(url, payload, static_cast<long>(timeout_.count()), collect,
                                          &response, status);
    if (result == CURLE_OK) {
      auto parsed = json::parse(response, nullptr, false);
      if (status == 200 && !parsed.is_discarded()) return parsed;
      failure = {std::make_error_code(std::errc::protocol_error), endpoint(),
                 "HTTP " + std::to_string(status) + ": " +
                     (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()
                          ? parsed["error"].get<std::string>()
                          : response.substr(0, 200))};
      // A member without a leader, or shutting down, answers 5xx: another may do better. Any
      // other answer from etcd is final: another member would say the same.
      if (status < 500) return std::unexpected(failure);
      current_ = (current_ + 1) % endpoints_.size();
      continue;
    }
    failure = {code_of(result), endpoint(), curl_easy_strerror(result)};
    current_ = (current_ + 1) % endpoints_.size();
  }
  return std::unexpected(failure);
}

std::expected<bool, Failure> Client::watch(const json& create_request, std::chrono::milliseconds timeout,
                                           const std::function<bool(const json&)>& on_message) {
  const std::string payload = json{{"create_request", create_request}}.dump();
  Failure failure;
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    StreamState state;
    state.on_message = &on_message;
    long status = 0;
    const CURLcode result = handle_->post(endpoint() + "/v3/watch", payload,
                                          std::max<long>(1, static_cast<long>(timeout.count())),
                                          stream, &state, status);
    if (state.stopped) return true;
    if (result == CURLE_OPERATION_TIMEDOUT && status == 200) return false;  // the stream was up
    // The server ended the stream (a compacted start revision, a member shutting down): report
    // a wake-up, so that the caller looks at the slots again and watches from a fresh revision
    // instead of reopening the same stream in a loop.
    if (result == CURLE_OK) return true;
    failure = {code_of(result), endpoint(), curl_easy_strerror(result)};
    current_ = (current_ + 1) % endpoints_.size();
  }
  return std::unexpected(failure);
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto byte = [&](std::size_t i) { return i < bytes.size() ? static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) : 0U; };
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const unsigned v = byte(i) << 16U | byte(i + 1) << 8U | byte(i + 2);
    const std::size_t left = bytes.size() - i;  // 1, 2, or 3 and more
    out += alphabet[v >> 18U & 63U];
    out += alphabet[v >> 12U & 63U];
    out += left > 1 ? alphabet[v >> 6U & 63U] : '=';
    out += left > 2 ? alphabet[v & 63U] : '=';
  }
  return out;
}

std::string base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int v = value(c);
    if (v < 0) break;  // '=' padding, or junk: stop
    buffer = buffer << 6 | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(buffer >> bits & 0xFF);
    }
  }
  return out;
}

std::int64_t int64_of(const json& value) {
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (!value.is_string()) return 0;
  const auto& text = value.get_ref<const std::string&>();
  std::int64_t out = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size() ? out : 0;
}

std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = prefix.back();
    if (static_cast<unsigned char>(last) < 0xFF) {
      last = static_cast<char>(static_cast<unsigned char>(last) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

}  // namespace pidlock::fleet::etcd
