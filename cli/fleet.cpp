// pidlock run --etcd and pidlock status --etcd: the fleet lock. Built into pidlock-fleet only,
// so that the plain command does not load libcurl and its dependencies on every run.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "pidlock/fleet.hpp"
#include "process.hpp"

namespace pidlock::cli {

int run_fleet(const RunRequest& request) {
  fleet::Options options;
  options.endpoints = request.etcd;
  options.slots = request.slots;
  options.ttl = std::chrono::seconds(request.ttl_seconds);
  options.wait = to_wait(request.wait_seconds);
  options.role = request.role;
  options.command = join(request.command);
  // A renewal must give up well within the TTL, or a hung member would eat the whole lease.
  const auto third_of_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(options.ttl) / 3;
  options.request_timeout = std::min<std::chrono::milliseconds>(std::chrono::seconds(2), third_of_ttl);
  // A waiter retries while etcd does not answer; say so, once each way.
  bool etcd_silent = false;
  options.on_wait = [&](const fleet::WaitProgress& progress) {
    if (progress.failure && !etcd_silent) {
      fmt::print(stderr, "{} — still waiting for the fleet lock {}\n", progress.failure->message(),
                 request.file);
    } else if (!progress.failure && etcd_silent) {
      fmt::print(stderr, "pidlock: etcd answers again; waiting for the fleet lock {}\n",
                 request.file);
    }
    etcd_silent = progress.failure.has_value();
  };
  auto slot = fleet::Slot::acquire(request.file, options);
  if (!slot) {
    fmt::print(stderr, "{}\n", slot.error().message());
    return slot.error().held() ? request.busy_exit_code : exit_code::unavailable;
  }
  bool warned = false;
  const Watchdog watchdog{
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(100), third_of_ttl),
      [&]() {
        auto renewed = slot->keep_alive();
        if (renewed) {
          if (warned) fmt::print(stderr, "pidlock: etcd answers again; renewing the fleet lock {}\n", request.file);
          warned = false;
          return true;
        }
        if (!slot->expired()) return true;  // not yet past the TTL: try again next tick
        if (request.warn_on_lease_loss) {
          if (!warned) {
            fmt::print(stderr, "pidlock: warning: the fleet lock {} may be lost ({}); the command goes on\n",
                       request.file, renewed.error().message());
          }
          warned = true;
          return true;
        }
        fmt::print(stderr, "pidlock: lost the fleet lock {} ({}); sending SIGTERM to the command\n",
                   request.file, renewed.error().message());
        return false;
      },
      exit_code::lease_lost};
  const int code = fork_and_supervise(request.command, &watchdog);
  slot->release();
  return code;
}

// Ordered, so that "name" comes first for the human who reads the JSON too.
using json = nlohmann::ordered_json;

int status_fleet(const StatusRequest& request) {
  fleet::Options options;
  options.endpoints = request.etcd;
  options.slots = request.slots;
  auto found = fleet::inspect(request.file, options);
  if (!found) {
    fmt::print(stderr, "{}\n", found.error().message());
    return exit_code::unavailable;
  }
  const bool full = static_cast<int>(found->holders.size()) >= found->slots;
  if (request.json) {
    json holders = json::array();
    for (const auto& h : found->holders) {
      holders.push_back({{"slot", h.slot}, {"host", h.host}, {"pid", h.pid}, {"command", h.command},
                         {"started_at", h.started_at}, {"held_for_seconds", h.held_for.count()},
                         {"lease", std::to_string(h.lease)}, {"malformed", h.malformed}});
      if (h.malformed) {
        holders.back()["problem"] = h.problem;
        holders.back()["raw"] = h.raw;
      }
    }
    json waiters = json::array();
    for (const auto& w : found->waiters) {
      waiters.push_back(
          {{"host", w.host}, {"pid", w.pid}, {"command", w.command}, {"malformed", w.malformed}});
      if (w.malformed) {
        waiters.back()["problem"] = w.problem;
        waiters.back()["raw"] = w.raw;
      }
    }
    fmt::print("{}\n", json{{"name", found->name},
                            {"slots", found->slots},
                            {"held", !found->holders.empty()},
                            {"full", full},
                            {"holders", holders},
                            {"waiters", waiters},
                            {"endpoint", found->endpoint}}
                           .dump());
  } else {
    fmt::print("fleet lock {}: {} of {} slots held (etcd {})\n", found->name, found->holders.size(),
               found->slots, found->endpoint);
    for (const auto& h : found->holders) {
      if (h.malformed) {
        fmt::print("  slot {}: malformed record ({}): {}\n", h.slot, h.problem, h.raw);
        continue;
      }
      fmt::print("  slot {}: pid {} on {}, for {}{}\n", h.slot, h.pid, h.host, format_duration(h.held_for),
                 h.command.empty() ? "" : ": " + h.command);
    }
    for (const auto& w : found->waiters) {
      if (w.malformed) {
        fmt::print("  waiting: malformed record ({}): {}\n", w.problem, w.raw);
        continue;
      }
      fmt::print("  waiting: pid {} on {}{}\n", w.pid, w.host, w.command.empty() ? "" : ": " + w.command);
    }
  }
  return full ? exit_code::busy : exit_code::ok;
}

}  // namespace pidlock::cli
