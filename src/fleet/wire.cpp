// etcd's v3 JSON gateway on the wire: the requests pidlock sends, and checked readings of answers.
#include "wire.hpp"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "../base64.hpp"
#include "json_fields.hpp"

namespace pidlock::fleet::etcd::wire {
namespace {

using json = nlohmann::json;

// Requests carry base64 and digits only, but a caller's bytes must never make dump() throw.
std::string dumped(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// etcd's answers are proto3's JSON: a field set to null is one left at its default.
using Fields = JsonFields;

Parsed<json> parse_json(std::string_view text) {
  auto value = json::parse(text.begin(), text.end(), nullptr, false);
  if (value.is_discarded()) return Problem{"not JSON"};
  return value;
}

// Every etcd answer carries a header with the store's revision; something without one is not
// etcd (an endpoint answering `{}` must not pass for "no keys").
Revision read_header(Fields& fields) {
  const json* header = fields.object("header");
  if (header == nullptr) return 0;
  Fields inner(*header, fields.context() + "header.");
  const Revision revision = inner.int64("revision");
  if (!inner.ok()) fields.fail_with(inner.take_problem());
  return revision;
}

KeyValue read_key_value(const json& object, std::string context, Fields& outer) {
  Fields fields(object, std::move(context));
  KeyValue kv;
  kv.key = fields.bytes("key");
  kv.value = fields.bytes("value");
  kv.create_revision = fields.int64("create_revision");
  kv.mod_revision = fields.int64("mod_revision");
  kv.version = fields.int64("version");
  kv.lease = fields.int64("lease");
  if (!fields.ok()) outer.fail_with(fields.take_problem());
  return kv;
}

std::vector<KeyValue> read_key_values(Fields& fields, const char* name) {
  std::vector<KeyValue> kvs;
  const json* array = fields.array(name);
  if (array == nullptr) return kvs;
  for (std::size_t i = 0; i < array->size() && fields.ok(); ++i) {
    kvs.push_back(read_key_value((*array)[i],
                                 fields.context() + name + "[" + std::to_string(i) + "].", fields));
  }
  return kvs;
}

std::optional<Status> read_status(const json& object) {
  if (!object.is_object()) return std::nullopt;
  Fields fields(object, "");
  Status status;
  // Unary errors say "code", stream errors "grpc_code"; both say "message".
  // Checked as read, before it is narrowed: 2^32 + 5 must not pass for 5 (NotFound).
  const std::int64_t code =
      fields.has("grpc_code") ? fields.int64("grpc_code") : fields.int64("code");
  status.message = fields.text("message");
  if (status.message.empty()) status.message = fields.text("error");
  if (!fields.ok() || code < 0 || code > grpc::unauthenticated) return std::nullopt;
  status.code = static_cast<int>(code);
  if (status.code == 0) {
    if (status.message.empty()) return std::nullopt;  // no error at all: not etcd's
    status.code = grpc::unknown;                      // an error without a code
  }
  return status;
}

// A streamed message is {"result": …} or {"error": …}; `error` is set for the latter.
Parsed<const json*> stream_result(Fields& fields, std::optional<Status>& error) {
  if (fields.has("error")) {
    const json* body = fields.object("error");
    if (body != nullptr) error = read_status(*body);
    if (!error) return Problem{fields.context() + "error: not a gRPC status"};
    return nullptr;
  }
  const json* result = fields.object("result");
  if (result == nullptr) return Problem{fields.take_problem()};
  return result;
}

template <class T>
Parsed<T> checked(Fields& fields, T value) {
  if (!fields.ok()) return Problem{fields.take_problem()};
  return value;
}

// Streams answer one JSON object per line; a unary call on a stream (keep-alive) gets one.
std::string_view first_line(std::string_view body) {
  while (!body.empty() && (body.front() == '\n' || body.front() == '\r')) body.remove_prefix(1);
  return body.substr(0, body.find('\n'));
}

}  // namespace

std::string grant_request(std::chrono::seconds ttl) {
  return dumped({{"TTL", std::to_string(ttl.count())}});
}

std::string lease_request(LeaseId lease) { return dumped({{"ID", std::to_string(lease)}}); }

std::string create_if_absent_request(std::string_view key, std::string_view value, LeaseId lease,
                                     const std::optional<Unchanged>& unchanged) {
  const std::string encoded_key = base64::encode(key);
  const json put = {
      {"request_put",
       {{"key", encoded_key}, {"value", base64::encode(value)}, {"lease", std::to_string(lease)}}}};
  const json range = {{"request_range", {{"key", encoded_key}}}};
  json compare =
      json::array({{{"target", "CREATE"}, {"key", encoded_key}, {"create_revision", "0"}}});
  if (unchanged) {
    // Every key in the range last changed before revision + 1 (an empty range passes: etcd
    // compares a missing key as revision 0).
    compare.push_back({{"target", "MOD"},
                       {"key", base64::encode(unchanged->key)},
                       {"range_end", base64::encode(unchanged->range_end)},
                       {"result", "LESS"},
                       {"mod_revision", std::to_string(unchanged->revision + 1)}});
  }
  return dumped({{"compare", std::move(compare)},
                 {"success", json::array({put})},
                 {"failure", json::array({range})}});
}

std::string put_request(std::string_view key, std::string_view value, LeaseId lease) {
  return dumped({{"key", base64::encode(key)},
                 {"value", base64::encode(value)},
                 {"lease", std::to_string(lease)}});
}

std::string range_request(std::string_view key, std::string_view range_end, bool keys_only) {
  json request = {{"key", base64::encode(key)}};
  if (!range_end.empty()) request["range_end"] = base64::encode(range_end);
  if (keys_only) request["keys_only"] = true;
  return dumped(request);
}

namespace {
json range_object(const RangeSpec& range) {
  json request = {{"key", base64::encode(range.key)}};
  if (!range.range_end.empty()) request["range_end"] = base64::encode(range.range_end);
  if (range.keys_only) request["keys_only"] = true;
  if (range.revision > 0) request["revision"] = std::to_string(range.revision);
  return request;
}
}  // namespace

std::string read_request(const std::vector<RangeSpec>& ranges) {
  json success = json::array();
  for (const auto& range : ranges) success.push_back({{"request_range", range_object(range)}});
  return dumped({{"success", std::move(success)}});
}

std::string delete_request(std::string_view key) { return dumped({{"key", base64::encode(key)}}); }

std::string delete_if_created_request(std::string_view key, Revision created) {
  const std::string encoded_key = base64::encode(key);
  return dumped({{"compare", json::array({{{"target", "CREATE"},
                                           {"key", encoded_key},
                                           {"create_revision", std::to_string(created)}}})},
                 {"success", json::array({{{"request_delete_range", {{"key", encoded_key}}}}})}});
}

std::string watch_request(std::string_view key, std::string_view range_end, Revision start) {
  return dumped({{"create_request",
                  {{"key", base64::encode(key)},
                   {"range_end", base64::encode(range_end)},
                   {"start_revision", std::to_string(start)}}}});
}

std::string authenticate_request(std::string_view user, std::string_view password) {
  return dumped({{"name", std::string(user)}, {"password", std::string(password)}});
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

Parsed<Lease> parse_grant(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  read_header(fields);
  Lease lease;
  lease.id = fields.int64("ID");
  lease.ttl = std::chrono::seconds(fields.int64("TTL"));
  if (const auto refused = fields.text("error"); !refused.empty()) fields.fail("error", refused);
  if (fields.ok() && lease.id == 0) fields.fail("ID", "missing: etcd granted no lease");
  if (fields.ok() && lease.ttl.count() <= 0) fields.fail("TTL", "not positive");
  if (fields.ok() && lease.ttl > max_lease_ttl) fields.fail("TTL", "beyond etcd's longest lease");
  return checked(fields, lease);
}

Parsed<KeepAlive> parse_keep_alive(std::string_view body) {
  auto root = parse_json(first_line(body));
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  KeepAlive answer;
  auto result = stream_result(fields, answer.error);
  if (!result) return Problem{result.error()};
  if (*result == nullptr) return answer;
  Fields inner(**result, "result.");
  read_header(inner);
  answer.ttl = std::chrono::seconds(std::max<std::int64_t>(0, inner.int64("TTL")));
  if (inner.ok() && answer.ttl > max_lease_ttl) inner.fail("TTL", "beyond etcd's longest lease");
  return checked(inner, answer);
}

Parsed<Revision> parse_revoke(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  const Revision revision = read_header(fields);
  return checked(fields, revision);
}

Parsed<Created> parse_create_if_absent(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  Created created;
  created.revision = read_header(fields);
  created.created = fields.boolean("succeeded");
  const json* responses = fields.array("responses");
  if (!created.created && responses != nullptr && !responses->empty()) {
    Fields response((*responses)[0], "responses[0].");
    if (const json* range = response.object("response_range")) {
      Fields range_fields(*range, "responses[0].response_range.");
      auto kvs = read_key_values(range_fields, "kvs");
      if (!range_fields.ok()) response.fail_with(range_fields.take_problem());
      if (!kvs.empty()) created.existing = std::move(kvs.front());
    }
    if (!response.ok()) fields.fail_with(response.take_problem());
  }
  return checked(fields, std::move(created));
}

Parsed<Revision> parse_put(std::string_view body) { return parse_revoke(body); }

Parsed<Range> parse_range(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  Range range;
  range.revision = read_header(fields);
  range.kvs = read_key_values(fields, "kvs");
  return checked(fields, std::move(range));
}

Parsed<std::vector<Range>> parse_read(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  const Revision revision = read_header(fields);
  std::vector<Range> ranges;
  const json* responses = fields.array("responses");
  for (std::size_t i = 0; responses != nullptr && i < responses->size() && fields.ok(); ++i) {
    const std::string context = "responses[" + std::to_string(i) + "].";
    Fields response((*responses)[i], context);
    if (const json* range = response.object("response_range")) {
      Fields range_fields(*range, context + "response_range.");
      Range read;
      read.revision = revision;
      read.kvs = read_key_values(range_fields, "kvs");
      if (!range_fields.ok()) response.fail_with(range_fields.take_problem());
      ranges.push_back(std::move(read));
    }
    if (!response.ok()) fields.fail_with(response.take_problem());
  }
  return checked(fields, std::move(ranges));
}

Parsed<bool> parse_succeeded(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  read_header(fields);
  const bool succeeded = fields.boolean("succeeded");
  return checked(fields, succeeded);
}

Parsed<std::int64_t> parse_delete(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  read_header(fields);
  const std::int64_t deleted = fields.int64("deleted");
  return checked(fields, deleted);
}

Parsed<WatchMessage> parse_watch_message(std::string_view line) {
  auto root = parse_json(line);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  WatchMessage message;
  auto result = stream_result(fields, message.error);
  if (!result) return Problem{result.error()};
  if (*result == nullptr) return message;
  Fields inner(**result, "result.");
  message.revision = read_header(inner);
  message.created = inner.boolean("created");
  message.canceled = inner.boolean("canceled");
  message.compact_revision = inner.int64("compact_revision");
  message.cancel_reason = inner.text("cancel_reason");
  const json* events = inner.array("events");
  for (std::size_t i = 0; events != nullptr && i < events->size() && inner.ok(); ++i) {
    Fields event((*events)[i], "result.events[" + std::to_string(i) + "].");
    WatchEvent parsed;
    // The gateway writes enums by name and leaves out the default (PUT).
    const std::string type = event.text("type");
    if (type == "DELETE") {
      parsed.type = EventType::del;
    } else if (!type.empty() && type != "PUT") {
      event.fail("type", "neither PUT nor DELETE");
    }
    if (const json* kv = event.object("kv"))
      parsed.kv = read_key_value(*kv, event.context() + "kv.", event);
    if (!event.ok()) inner.fail_with(event.take_problem());
    message.events.push_back(std::move(parsed));
  }
  return checked(inner, std::move(message));
}

Parsed<std::string> parse_authenticate(std::string_view body) {
  // etcd's are 16 letters (simple) or a JWT of a few hundred bytes.
  constexpr std::size_t max_token = 8192;
  auto root = parse_json(body);
  if (!root) return Problem{root.error()};
  Fields fields(*root, "");
  read_header(fields);
  std::string token = fields.text("token");
  if (fields.ok() && token.empty()) fields.fail("token", "missing");
  if (fields.ok() && token.size() > max_token) fields.fail("token", "longer than 8 KiB");
  const bool visible = std::all_of(token.begin(), token.end(), [](char c) {
    return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7F;
  });
  if (fields.ok() && !visible) fields.fail("token", "not visible ASCII");
  return checked(fields, std::move(token));
}

std::optional<Status> parse_error(std::string_view body) {
  auto root = parse_json(body);
  if (!root) return std::nullopt;
  return read_status(*root);
}

namespace {
constexpr std::array<std::string_view, 17> grpc_names = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};
}  // namespace

std::optional<Status> parse_cancel_reason(std::string_view reason) {
  constexpr std::string_view lead = "rpc error: code = ";
  constexpr std::string_view separator = " desc = ";
  if (!reason.starts_with(lead)) return std::nullopt;
  reason.remove_prefix(lead.size());
  const auto end = reason.find(separator);
  if (end == std::string_view::npos) return std::nullopt;
  const auto name = std::find(grpc_names.begin(), grpc_names.end(), reason.substr(0, end));
  if (name == grpc_names.end() || name == grpc_names.begin()) return std::nullopt;
  return Status{static_cast<int>(name - grpc_names.begin()),
                std::string(reason.substr(end + separator.size()))};
}

std::string grpc_code_name(int code) {
  if (code >= 0 && static_cast<std::size_t>(code) < grpc_names.size())
    return std::string(grpc_names[static_cast<std::size_t>(code)]);
  return "code " + std::to_string(code);
}

}  // namespace pidlock::fleet::etcd::wire
