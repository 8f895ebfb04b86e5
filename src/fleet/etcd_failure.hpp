// What a failed call to etcd was, in the etcd client's own terms: a kind, where, and the words
// of whoever failed. The fleet turns a Failure into an Error (errors.hpp); here it is only told
// whether it may pass, and whether another endpoint may do better.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wire.hpp"

namespace pidlock::fleet::etcd {

enum class FailureKind {
  unreachable,         // no connection, or it broke before a whole answer came
  timeout,             // no whole answer within the request timeout
  etcd_error,          // etcd answered with an error: its gRPC status is in the Failure
  malformed_response,  // the answer is not etcd's: detail says what was wrong with it
  client_setup,        // libcurl could not be set up (out of memory)
  tls,                 // no TLS session: a certificate not verified, or refused; no TLS at all
  auth,                // etcd refused the credentials, or wants some
  permission,          // etcd refused the user access to a key
};

struct Failure {
  FailureKind kind = FailureKind::unreachable;
  std::string operation;  // "lease grant", "txn", "watch", …
  std::string endpoint;   // the last one tried
  std::string detail;     // curl's words, etcd's message, or what was wrong with the answer
  int grpc_code = 0;      // etcd_error: the gRPC status code
  long http_status = 0;   // 0 when no HTTP answer came
  // When every endpoint tried in the call failed: those tried before `endpoint`, and what each
  // said, so that a message blames no single member for an outage of several.
  std::vector<std::pair<std::string, std::string>> earlier;  // endpoint, cause()

  // Whether trying again later may succeed: nothing answered, or something answered that it is
  // unavailable for now (HTTP 5xx, gRPC Unavailable or DeadlineExceeded).
  bool transient() const noexcept;
  // Whether another endpoint may do better: a transient failure, or an answer that is not
  // etcd's. An error etcd gave is final: another member would say the same.
  bool worth_another_endpoint() const noexcept;
  // etcd says the lease does not exist (any more).
  bool lease_not_found() const noexcept;
  // etcd no longer takes the token we sent (expired, or issued before a change to users or
  // roles), or wants one: authenticating again may help.
  bool token_rejected() const noexcept;
  // etcd says the revision asked for has been compacted: read again, at a newer one.
  bool revision_compacted() const noexcept;
  // "etcd: Couldn't connect to server", "etcd: NotFound: etcdserver: requested lease not
  // found", "not an etcd answer (HTTP 200): header: missing"; with the earlier endpoints' causes
  // after it: "etcd: Timeout was reached (before it, http://10.0.0.1:2379: etcd: Couldn't
  // connect to server)".
  std::string cause() const;
};

Failure make_failure(FailureKind kind, std::string_view operation, const std::string& endpoint,
                     std::string detail);
// An answer that is not etcd's: `problem` says what is wrong with it.
Failure malformed(std::string_view operation, const std::string& endpoint, long http_status,
                  std::string_view problem);
// etcd's refusal, as its gRPC status says it (in an error body, a stream's error, a watch's
// cancel reason).
Failure refusal(const Status& error, long http_status, std::string_view operation,
                const std::string& endpoint);
// A non-200 answer: etcd's error when it is one, else whatever answered, shown as it is.
Failure http_failure(long http_status, std::string_view body, std::string_view operation,
                     const std::string& endpoint);

}  // namespace pidlock::fleet::etcd
