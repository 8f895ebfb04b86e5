// A slot's record in etcd: written as JSON, read back field by field without trusting it.
#include "slot_record.hpp"

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

#include "../record.hpp"
#include "json_fields.hpp"

namespace pidlock::fleet::record {

using json = nlohmann::json;

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
  // pidlock writes no null: one is a field of the wrong type, not one left out.
  JsonFields check(root, "", JsonFields::Null::wrong_type);
  constexpr auto required = JsonFields::Presence::required;
  auto& r = reading.record;
  r.host = check.text("host", required);
  r.pid = static_cast<pid_t>(check.integer("pid", 1, pidlock::record::max_pid, required));
  r.command = check.text("command");
  r.started_at = check.integer("started_at", 0, std::numeric_limits<std::int64_t>::max());
  r.role = check.text("role");
  r.slots = static_cast<int>(check.integer("slots", 1, std::numeric_limits<int>::max()));
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
