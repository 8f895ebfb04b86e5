// Fleet lock names written into etcd keys, so that no two names ever share a key.
#include "keys.hpp"

namespace pidlock::fleet::keys {
namespace {

// As written by encode(): upper-case hex, so that each name has one encoding only.
std::optional<char> escaped(std::string_view digits) {
  if (digits == "25") return '%';
  if (digits == "2F") return '/';
  return std::nullopt;
}

std::string under(std::string_view prefix, std::string_view name, std::string_view kind) {
  std::string key(prefix);
  key += encode(name);
  key += kind;
  return key;
}

}  // namespace

std::string encode(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (const char c : name) {
    if (c == '%') {
      out += "%25";
    } else if (c == '/') {
      out += "%2F";
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<std::string> decode(std::string_view encoded) {
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    const char c = encoded[i];
    if (c == '/') return std::nullopt;
    if (c != '%') {
      out += c;
      continue;
    }
    if (encoded.size() - i < 3) return std::nullopt;
    const auto original = escaped(encoded.substr(i + 1, 2));
    if (!original) return std::nullopt;
    out += *original;
    i += 2;
  }
  return out;
}

std::string check_prefix(std::string_view prefix) {
  // Without the closing '/', prefix "app" and the name "x" would make keys under "appx/", which
  // an operator's `etcdctl role grant-permission --prefix ROLE readwrite app/` does not cover,
  // and which another prefix, "appx/", would share.
  if (prefix.empty() || prefix.back() != '/') return "the key prefix must end with '/'";
  return {};
}

std::string slots_prefix(std::string_view prefix, std::string_view name) {
  return under(prefix, name, "/slots/");
}

std::string waiters_prefix(std::string_view prefix, std::string_view name) {
  return under(prefix, name, "/waiters/");
}

}  // namespace pidlock::fleet::keys
