// Type-checked reading of untrusted JSON objects, field by field, naming the first wrong one.
#include "json_fields.hpp"

#include <charconv>
#include <limits>
#include <optional>

#include "../base64.hpp"

namespace pidlock::fleet {
namespace {

using json = JsonFields::json;

std::optional<std::int64_t> int64_of(const json& value) {
  if (value.is_number_unsigned()) {
    const auto n = value.get<std::uint64_t>();
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return {};
    return static_cast<std::int64_t>(n);
  }
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (!value.is_string()) return {};
  // proto3 JSON writes int64 as a string of decimal digits.
  const auto& text = value.get_ref<const std::string&>();
  std::int64_t n = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (error != std::errc{} || end != text.data() + text.size() || text.empty()) return {};
  return n;
}

// An integer JSON number in [low, high], or nothing: get<>() would silently wrap or truncate
// floats and out-of-range values.
std::optional<std::int64_t> integer_in(const json& value, std::int64_t low, std::int64_t high) {
  std::int64_t n = 0;
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(high)) return std::nullopt;
    n = static_cast<std::int64_t>(u);
  } else if (value.is_number_integer()) {
    n = value.get<std::int64_t>();
  } else {
    return std::nullopt;
  }
  if (n < low || n > high) return std::nullopt;
  return n;
}

}  // namespace

JsonFields::JsonFields(const json& object, std::string context, Null null)
    : object_(object), context_(std::move(context)), null_(null) {
  if (!object_.is_object()) fail("", "not a JSON object");
}

std::int64_t JsonFields::int64(const char* name) {
  const json* value = find(name);
  if (value == nullptr) return 0;
  if (const auto n = int64_of(*value)) return *n;
  fail(name, "not a 64-bit integer");
  return 0;
}

std::int64_t JsonFields::integer(const char* name, std::int64_t low, std::int64_t high,
                                 Presence presence) {
  const json* value = find(name, presence);
  if (value == nullptr) return 0;
  if (const auto n = integer_in(*value, low, high)) return *n;
  fail(name, "not an integer from " + std::to_string(low) + " to " + std::to_string(high));
  return 0;
}

bool JsonFields::boolean(const char* name) {
  const json* value = find(name);
  if (value == nullptr) return false;
  if (value->is_boolean()) return value->get<bool>();
  fail(name, "not a boolean");
  return false;
}

std::string JsonFields::text(const char* name, Presence presence) {
  const json* value = find(name, presence);
  if (value == nullptr) return {};
  if (value->is_string()) return value->get<std::string>();
  fail(name, "not a string");
  return {};
}

std::string JsonFields::bytes(const char* name) {
  const json* value = find(name);
  if (value == nullptr) return {};
  if (value->is_string()) {
    if (auto decoded = base64::decode(value->get_ref<const std::string&>())) return *decoded;
  }
  fail(name, "not base64");
  return {};
}

const JsonFields::json* JsonFields::object(const char* name) {
  const json* value = find(name);
  if (value == nullptr) {
    fail(name, "missing");
    return nullptr;
  }
  if (value->is_object()) return value;
  fail(name, "not a JSON object");
  return nullptr;
}

const JsonFields::json* JsonFields::array(const char* name) {
  static const json empty = json::array();
  const json* value = find(name);
  if (value == nullptr) return &empty;
  if (value->is_array()) return value;
  fail(name, "not a JSON array");
  return nullptr;
}

void JsonFields::fail(std::string_view name, std::string_view what) {
  if (!problem_.empty()) return;
  std::string path = context_ + std::string(name);
  if (!path.empty() && path.back() == '.') path.pop_back();
  problem_ = path.empty() ? std::string(what) : path + ": " + std::string(what);
}

void JsonFields::fail_with(std::string problem) {
  if (problem_.empty()) problem_ = std::move(problem);
}

const JsonFields::json* JsonFields::find(const char* name) const {
  if (!object_.is_object()) return nullptr;
  const auto it = object_.find(name);
  if (it == object_.end() || (it->is_null() && null_ == Null::absent)) return nullptr;
  return &*it;
}

const JsonFields::json* JsonFields::find(const char* name, Presence presence) {
  const json* value = find(name);
  if (value == nullptr && presence == Presence::required) fail(name, "missing");
  return value;
}

}  // namespace pidlock::fleet
