// What a client certificate file says about itself, to explain a TLS refusal that the server
// does not explain: etcd answers an expired client certificate with a bare "bad certificate"
// alert. Reads PEM text only; no I/O, no TLS library, nothing trusted (the file is ours, but may
// hold anything).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pidlock::fleet::certificate {

// A certificate's validity period, in Unix seconds (UTC).
struct Validity {
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
};

// The validity of the first certificate in `pem`, or nothing when there is none it can read.
std::optional<Validity> validity(std::string_view pem);

// Whether `pem` holds a private key ("-----BEGIN … PRIVATE KEY-----"), as a certificate file
// given without a key file must.
bool holds_private_key(std::string_view pem);

// "2020-01-02 00:00:00 UTC".
std::string utc(std::int64_t unix_seconds);

}  // namespace pidlock::fleet::certificate
