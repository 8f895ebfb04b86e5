// etcd's v3 JSON gateway on the wire: the requests pidlock sends, and checked readings of the
// answers. Nothing here trusts an answer: a member, a proxy or something that is not etcd at
// all may send any bytes, so every field is type-checked and a wrong one makes the whole answer
// malformed (with what was wrong), never an exception. Fields left out are proto3 defaults.
// No I/O: the etcd client does that, the fuzzers call these directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pidlock::fleet::etcd {

using LeaseId = std::int64_t;
using Revision = std::int64_t;

struct KeyValue {
  std::string key;
  std::string value;
  Revision create_revision = 0;
  Revision mod_revision = 0;
  std::int64_t version = 0;
  LeaseId lease = 0;  // 0: bound to no lease
};

struct Lease {
  LeaseId id = 0;
  std::chrono::seconds ttl{0};
};

// A condition on a create-if-absent: no key in [key, range_end) was created or changed after
// `revision` (keys deleted since do not count).
struct Unchanged {
  std::string key;
  std::string range_end;
  Revision revision = 0;
};

// What a create-if-absent transaction did.
struct Created {
  bool created = false;
  Revision revision = 0;             // the store's, after the transaction: our key's creation
  std::optional<KeyValue> existing;  // when not created: the key that was there, if any (none:
                                     // the Unchanged condition failed)
};

struct Range {
  std::vector<KeyValue> kvs;
  Revision revision = 0;
};

// One range of a read: [key, range_end) (range_end empty: the key alone), with or without the
// values, as of `revision` (0: the latest).
struct RangeSpec {
  std::string key;
  std::string range_end;
  bool keys_only = false;
  Revision revision = 0;
};

// etcd refuses a lease longer than this (MaxLeaseTTL); an answer that grants or renews one for
// longer is not etcd's, and would overflow any deadline counted in nanoseconds.
inline constexpr std::chrono::seconds max_lease_ttl{9'000'000'000};

// The gRPC status codes the client acts on, as etcd's errors carry them.
namespace grpc {
inline constexpr int unknown = 2;
inline constexpr int invalid_argument = 3;
inline constexpr int deadline_exceeded = 4;
inline constexpr int not_found = 5;
inline constexpr int permission_denied = 7;
inline constexpr int failed_precondition = 9;
inline constexpr int out_of_range = 11;  // a read at a revision etcd has compacted
inline constexpr int unavailable = 14;
inline constexpr int unauthenticated = 16;  // the last code gRPC defines
}  // namespace grpc

// A gRPC status, as the gateway reports etcd's errors.
struct Status {
  int code = 0;  // 5 NotFound, 14 Unavailable, …
  std::string message;
};

// A lease keep-alive answer: the TTL etcd restarted, 0 when it no longer knows the lease.
struct KeepAlive {
  std::chrono::seconds ttl{0};
  std::optional<Status> error;  // the stream failed instead
};

enum class EventType { put, del };

struct WatchEvent {
  EventType type = EventType::put;
  KeyValue kv;
};

// One message of a watch stream.
struct WatchMessage {
  std::optional<Status> error;  // the stream failed; nothing else is set
  Revision revision = 0;
  bool created = false;
  bool canceled = false;  // etcd ended the watch (e.g. the start revision was compacted)
  Revision compact_revision = 0;
  std::string cancel_reason;
  std::vector<WatchEvent> events;
};

namespace wire {

// What was wrong with an answer, e.g. "kvs[0].lease: not a 64-bit integer".
struct Problem {
  std::string what;
};

// An answer read, or the Problem with it: std::expected's shape, but not std::expected, whose
// libstdc++ 12 header the fuzz targets' clang 14 cannot compile.
template <class T>
class Parsed {
 public:
  // Implicit, as std::expected's from a value and from std::unexpected.
  Parsed(T value) : value_(std::move(value)) {}
  Parsed(Problem problem) : problem_(std::move(problem.what)) {}
  explicit operator bool() const noexcept { return value_.has_value(); }
  // As with std::expected, only on an answer (operator bool): not checked again.
  T& operator*() { return *value_; }                // NOLINT(bugprone-unchecked-optional-access)
  const T& operator*() const { return *value_; }    // NOLINT(bugprone-unchecked-optional-access)
  T* operator->() { return &*value_; }              // NOLINT(bugprone-unchecked-optional-access)
  const T* operator->() const { return &*value_; }  // NOLINT(bugprone-unchecked-optional-access)
  const std::string& error() const noexcept { return problem_; }

 private:
  std::optional<T> value_;
  std::string problem_;
};

std::string grant_request(std::chrono::seconds ttl);
std::string lease_request(LeaseId lease);  // keep-alive and revoke
// A transaction that puts `key` only if it has never been created (create_revision == 0), and
// otherwise reads it.
std::string create_if_absent_request(std::string_view key, std::string_view value, LeaseId lease,
                                     const std::optional<Unchanged>& unchanged = std::nullopt);
std::string put_request(std::string_view key, std::string_view value, LeaseId lease);
std::string range_request(std::string_view key, std::string_view range_end, bool keys_only);
// One transaction that reads every range at the same revision (a txn without conditions).
std::string read_request(const std::vector<RangeSpec>& ranges);
std::string delete_request(std::string_view key);
// A transaction that deletes `key` only if it is the one created at `created`.
std::string delete_if_created_request(std::string_view key, Revision created);
std::string watch_request(std::string_view key, std::string_view range_end, Revision start);
std::string authenticate_request(std::string_view user, std::string_view password);

// The first key after every key that starts with `prefix`: the range_end of a prefix range.
std::string prefix_end(std::string prefix);

Parsed<Lease> parse_grant(std::string_view body);
Parsed<KeepAlive> parse_keep_alive(std::string_view body);
Parsed<Revision> parse_revoke(std::string_view body);
Parsed<Created> parse_create_if_absent(std::string_view body);
Parsed<Revision> parse_put(std::string_view body);
Parsed<Range> parse_range(std::string_view body);
// A read's ranges, in the order asked, each with the transaction's revision.
Parsed<std::vector<Range>> parse_read(std::string_view body);
// Whether a conditional transaction's condition held (delete_if_created).
Parsed<bool> parse_succeeded(std::string_view body);
Parsed<std::int64_t> parse_delete(std::string_view body);  // how many keys were deleted
Parsed<WatchMessage> parse_watch_message(std::string_view line);
// The token of an authenticate answer. It goes back in an HTTP header, so anything but a short
// run of visible ASCII (a CR or LF would inject headers) is refused.
Parsed<std::string> parse_authenticate(std::string_view body);
// etcd's error body for a non-200 answer ({"error": …, "message": …, "code": N}).
std::optional<Status> parse_error(std::string_view body);

// A watch etcd refused at its creation says why only in cancel_reason, as a gRPC error's text:
// "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token". Other reasons (a
// compacted revision) are no gRPC status: nullopt.
std::optional<Status> parse_cancel_reason(std::string_view reason);

// "NotFound", "Unavailable", …: the gRPC name of a status code, or "code N".
std::string grpc_code_name(int code);

}  // namespace wire
}  // namespace pidlock::fleet::etcd
