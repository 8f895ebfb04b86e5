// The checks a fleet lock's Options pass before etcd is asked, and the client settings they make.
#include "options.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <utility>

#include "../escape.hpp"
#include "certificate.hpp"
#include "errors.hpp"
#include "keys.hpp"

namespace pidlock::fleet {
namespace {

// Empty when `path` can be opened for reading, else why not: a missing certificate is better
// named now than as a TLS failure at the first request.
std::string unreadable(std::string_view what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return "cannot read the " + std::string(what) + " " + text::printable_ascii(path) + ": " +
           std::system_category().message(error);
  }
  ::close(fd);
  return {};
}

// `endpoint` fit for a message: the password in user:password@ (refused, but it must not be
// repeated in the refusal, a log or a terminal's scrollback) replaced with ***.
std::string redacted(const std::string& endpoint) {
  const auto scheme_end = endpoint.find("://");
  const std::size_t authority = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  const auto at = endpoint.find('@', authority);
  const auto slash = endpoint.find('/', authority);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) return endpoint;
  const auto colon = endpoint.find(':', authority);
  std::string shown = endpoint;
  if (colon != std::string::npos && colon < at) shown.replace(colon + 1, at - colon - 1, "***");
  return shown;
}

// Empty when `endpoint` is a URL the client may be given, else why not. Credentials in it
// (user:password@) would sit in every message and, from a command line, in /proc/PID/cmdline.
std::string bad_endpoint(const std::string& endpoint) {
  const auto shown = [&endpoint] {
    return "etcd endpoint '" + text::printable_ascii(redacted(endpoint)) + "'";
  };
  if (endpoint.empty()) return "an empty etcd endpoint";
  for (const char c : endpoint) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return shown() + ": a URL has no spaces or control characters";
    }
  }
  const auto scheme_end = endpoint.find("://");
  std::string_view authority = endpoint;
  if (scheme_end != std::string::npos) {
    const std::string_view scheme(endpoint.data(), scheme_end);
    if (scheme != "http" && scheme != "https") {
      return shown() + ": the scheme must be http:// or https://";
    }
    authority.remove_prefix(scheme_end + 3);
  }
  authority = authority.substr(0, authority.find('/'));
  if (authority.empty()) return shown() + ": no host";
  if (authority.find('@') != std::string_view::npos) {
    return shown() +
           ": no credentials in the URL; use a user and password (--user, "
           "--password-file)";
  }
  return {};
}

// Why acquire and inspect may not go on, and as what kind of error.
struct Unusable {
  ErrorKind kind = ErrorKind::invalid_argument;
  std::string why;
};

// TLS files that cannot be read, or a client certificate without its key, are TLS set up wrong,
// as one that does not verify: named now, not as the TLS library's words at the first request
// (which, for a certificate file without a key, call the certificate file the key).
std::optional<Unusable> check_tls(const Tls& tls) {
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a client key file needs its certificate file"};
  }
  const std::pair<std::string_view, const std::string*> files[] = {
      {"CA file", &tls.ca_file},
      {"client certificate file", &tls.cert_file},
      {"client key file", &tls.key_file}};
  for (const auto& [what, path] : files) {
    if (path->empty()) continue;
    if (auto bad = unreadable(what, *path); !bad.empty()) return Unusable{ErrorKind::tls, bad};
  }
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    const auto pem = small_file(tls.cert_file);
    if (pem && !certificate::holds_private_key(*pem)) {
      return Unusable{ErrorKind::tls, "the client certificate file " +
                                          text::printable_ascii(tls.cert_file) +
                                          " holds no private key, and no key file was given "
                                          "(--key)"};
    }
  }
  return std::nullopt;
}

// What acquire and inspect both need: a name, endpoints, a usable prefix, and credentials and
// TLS files that hang together.
std::optional<Unusable> check_connection(std::string_view name, const Options& options) {
  if (name.empty()) return Unusable{ErrorKind::invalid_argument, "a fleet lock needs a name"};
  // Never a default: a lock taken in whatever cluster happens to listen on this host's
  // 127.0.0.1:2379 would exclude nobody.
  if (options.endpoints.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a fleet lock needs etcd endpoints (none given)"};
  }
  for (const auto& endpoint : options.endpoints) {
    if (auto bad = bad_endpoint(endpoint); !bad.empty()) {
      return Unusable{ErrorKind::invalid_argument, bad};
    }
  }
  if (auto bad = keys::check_prefix(options.key_prefix); !bad.empty()) {
    return Unusable{ErrorKind::invalid_argument, bad};
  }
  if (options.request_timeout <= std::chrono::milliseconds::zero()) {
    return Unusable{ErrorKind::invalid_argument, "the request timeout must be positive"};
  }
  if (options.user.empty() && !options.password.empty()) {
    return Unusable{ErrorKind::invalid_argument, "a password needs a user name"};
  }
  if (!options.user.empty() && options.password.empty()) {
    return Unusable{ErrorKind::invalid_argument,
                    "etcd user " + text::printable_ascii(options.user) + " needs a password"};
  }
  // etcd's API carries them as JSON text: other bytes would reach it altered, and a password
  // altered on the way comes back as the wrong password.
  if (!text::valid_utf8(options.user)) {
    return Unusable{ErrorKind::invalid_argument,
                    "etcd user " + text::printable_ascii(options.user) +
                        ": not UTF-8 text, which etcd's API cannot carry"};
  }
  if (!text::valid_utf8(options.password)) {
    return Unusable{ErrorKind::invalid_argument,
                    "the password of etcd user " + text::printable_ascii(options.user) +
                        " is not UTF-8 text, which etcd's API cannot carry"};
  }
  return check_tls(options.tls);
}

Error unusable(std::string_view operation, std::string_view name, const Unusable& problem) {
  if (problem.kind == ErrorKind::tls) {
    return Errors::failure(errc::tls_failed, operation, std::string(name), problem.why);
  }
  return Errors::invalid(operation, name, problem.why);
}

}  // namespace

// Up to 1 MiB of a file we were given (a certificate), or nothing.
std::optional<std::string> small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  constexpr std::size_t limit = std::size_t{1} << 20U;
  std::string text;
  std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n <= 0 || text.size() + static_cast<std::size_t>(n) > limit) break;
    text.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::optional<Error> refusal_to_inspect(std::string_view name, const Options& options) {
  if (auto problem = check_connection(name, options)) return unusable("inspect", name, *problem);
  return std::nullopt;
}

std::optional<Error> refusal_to_acquire(std::string_view name, const Options& options) {
  if (auto problem = check_connection(name, options)) return unusable("acquire", name, *problem);
  if (options.slots < 1) {
    return Errors::invalid("acquire", name, "a fleet lock needs at least one slot");
  }
  if (options.ttl < std::chrono::seconds(1) || options.ttl > etcd::max_lease_ttl) {
    return Errors::invalid("acquire", name,
                           "the lease TTL must be from 1 s to 9000000000 s (etcd's limit)");
  }
  return std::nullopt;
}

etcd::Settings settings_of(const Options& options) {
  etcd::Settings settings;
  // As etcdctl: an endpoint without a scheme is http.
  for (const auto& endpoint : options.endpoints) {
    settings.endpoints.push_back(endpoint.find("://") == std::string::npos ? "http://" + endpoint
                                                                           : endpoint);
  }
  settings.timeout = options.request_timeout;
  settings.tls = options.tls;
  settings.user = options.user;
  settings.password = options.password;
  return settings;
}

}  // namespace pidlock::fleet
