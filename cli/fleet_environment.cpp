// Fleet settings from PIDLOCK_ETCD_* where the command line left them unset, and their checks.
#include "fleet_environment.hpp"

#include <cstdlib>
#include <string_view>

namespace pidlock::cli {
namespace {

const char* environment(const char* name) {
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): one thread here
  return value != nullptr && *value != '\0' ? value : nullptr;
}

}  // namespace

std::optional<std::string> take_environment(FleetRequest& fleet,
                                            const std::function<bool(const std::string&)>& given) {
  if (fleet.endpoints.empty()) {
    if (const char* endpoints = environment("PIDLOCK_ETCD_ENDPOINTS")) {
      std::string_view rest = endpoints;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        if (comma != 0) fleet.endpoints.push_back(std::string(rest.substr(0, comma)));
        rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 1);
      }
    }
    if (fleet.endpoints.empty()) {
      return "fleet mode needs etcd endpoints: --etcd URL[,URL...] or PIDLOCK_ETCD_ENDPOINTS";
    }
  }
  const auto take = [&given](const std::string& option, const char* variable, std::string& value) {
    if (given(option)) return;
    if (const char* from_environment = environment(variable)) value = from_environment;
  };
  take("--prefix", "PIDLOCK_ETCD_PREFIX", fleet.prefix);
  take("--cacert", "PIDLOCK_ETCD_CACERT", fleet.cacert);
  take("--cert", "PIDLOCK_ETCD_CERT", fleet.cert);
  take("--key", "PIDLOCK_ETCD_KEY", fleet.key);
  take("--user", "PIDLOCK_ETCD_USER", fleet.user);
  if (fleet.user.find(':') != std::string::npos) {
    return std::string(given("--user") ? "--user" : "PIDLOCK_ETCD_USER") +
           " takes a name only: a password on the command line is readable by every user (ps); "
           "use --password-file FILE or PIDLOCK_ETCD_PASSWORD";
  }
  return std::nullopt;
}

}  // namespace pidlock::cli
