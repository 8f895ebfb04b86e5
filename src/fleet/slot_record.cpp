#include "slot_record.hpp"

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

namespace pidlock::fleet::record {
namespace {

using json = nlohmann::json;

// An integer JSON number in [low, high], or nothing: floats, strings and out-of-range values are
// not read as integers (get<>() would silently wrap or truncate them).
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

class Checker {
 public:
  explicit Checker(const json& object) : object_(object) {}

  std::optional<std::string> text(const char* name, bool required) {
    const json* value = find(name, required);
    if (value == nullptr) return std::nullopt;
    if (value->is_string()) return value->get<std::string>();
    fail(name, "not a string");
    return std::nullopt;
  }

  std::optional<std::int64_t> integer(const char* name, bool required, std::int64_t low,
                                      std::int64_t high) {
    const json* value = find(name, required);
    if (value == nullptr) return std::nullopt;
    if (auto n = integer_in(*value, low, high)) return n;
    fail(name, "not an integer from " + std::to_string(low) + " to " + std::to_string(high));
    return std::nullopt;
  }

  std::string take_problem() { return std::move(problem_); }

 private:
  const json* find(const char* name, bool required) {
    const auto it = object_.find(name);
    if (it != object_.end()) return &*it;
    if (required) fail(name, "missing");
    return nullptr;
  }
  void fail(const char* name, const std::string& what) {
    if (problem_.empty()) problem_ = std::string(name) + ": " + what;
  }

  const json& object_;
  std::string problem_;
};

}  // namespace

std::string format(const SlotRecord& record) {
  json value = {{"host", record.host},
                {"pid", record.pid},
                {"command", record.command},
                {"started_at", record.started_at},
                {"role", record.role}};
  if (record.slots > 0) value["slots"] = record.slots;
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Reading parse(std::string_view value) {
  Reading reading;
  const auto root = json::parse(value.begin(), value.end(), nullptr, false);
  if (root.is_discarded()) {
    reading.problem = "not JSON";
    return reading;
  }
  if (!root.is_object()) {
    reading.problem = "not a JSON object";
    return reading;
  }
  Checker check(root);
  auto& r = reading.record;
  if (auto host = check.text("host", true)) r.host = std::move(*host);
  if (auto pid = check.integer("pid", true, 1, max_pid)) r.pid = static_cast<pid_t>(*pid);
  if (auto command = check.text("command", false)) r.command = std::move(*command);
  if (auto started =
          check.integer("started_at", false, 0, std::numeric_limits<std::int64_t>::max())) {
    r.started_at = *started;
  }
  if (auto role = check.text("role", false)) r.role = std::move(*role);
  if (auto slots = check.integer("slots", false, 1, std::numeric_limits<int>::max())) {
    r.slots = static_cast<int>(*slots);
  }
  reading.problem = check.take_problem();
  return reading;
}

std::optional<int> slot_index(std::string_view key, std::string_view prefix) {
  if (!key.starts_with(prefix)) return std::nullopt;
  const std::string_view digits = key.substr(prefix.size());
  if (digits.empty() || (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
  int slot = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), slot);
  if (error != std::errc{} || end != digits.data() + digits.size() || slot < 0) return std::nullopt;
  return slot;
}

}  // namespace pidlock::fleet::record
