// What a fleet lock's Options must be before etcd is asked anything, and what the etcd client
// is given of them. Refusals name what to fix; nothing that is refused is sent.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "etcd_client.hpp"
#include "pidlock/fleet.hpp"

namespace pidlock::fleet {

// Why inspect may not ask etcd with these Options (a name, endpoints, a usable prefix, and
// credentials and TLS files that hang together), or nothing when it may.
std::optional<Error> refusal_to_inspect(std::string_view name, const Options& options);
// The same for acquire, which needs a slot count and a lease TTL etcd takes too.
std::optional<Error> refusal_to_acquire(std::string_view name, const Options& options);

// How the etcd client reaches the cluster the Options name.
etcd::Settings settings_of(const Options& options);

// Up to 1 MiB of a file the Options name (a certificate), or nothing when it cannot be opened.
std::optional<std::string> small_file(const std::string& path);

}  // namespace pidlock::fleet
