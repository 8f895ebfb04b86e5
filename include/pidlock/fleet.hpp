// pidlock fleet mode: "at most N hosts at once", on etcd.
//
// A lock file cannot see other hosts. A fleet lock is a name in an etcd cluster with N slots;
// each holder owns one slot through a key created only if absent, in a transaction, and bound to
// a lease with a short TTL that the holder keeps alive. If the holder dies, or loses etcd for
// longer than the TTL, the lease expires, etcd deletes the key, and a waiter, watching the
// slots, takes it at once.
//
//   pidlock::fleet::Options options;
//   options.endpoints = {"http://10.0.0.1:2379", "http://10.0.0.2:2379"};
//   options.slots = 2;                                   // at most two hosts updating at once
//   auto slot = pidlock::fleet::Slot::acquire("firewall-update", options);
//   if (!slot) { std::cerr << slot.error().message() << '\n'; return 75; }
//   while (working) { if (!slot->keep_alive() && slot->expired()) stop(); … }
//
// Talks to etcd's v3 JSON gateway over HTTP with libcurl. Nothing here throws.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pidlock/pidlock.hpp"

namespace pidlock::fleet {

struct Options {
  // etcd client URLs, tried in order; a request that cannot reach one fails over to the next.
  std::vector<std::string> endpoints;
  int slots = 1;                              // how many holders at once
  std::chrono::seconds ttl{5};                // the lease: how long a dead holder keeps its slot
  std::chrono::nanoseconds wait{0};           // as pidlock::Options::wait
  std::string role = "installer";             // the noun in "another <role> is running"
  std::string command;                        // recorded with the holder, for status
  std::string key_prefix = "pidlock/";        // where the names live in etcd's key space
  std::chrono::milliseconds request_timeout{2000};  // per HTTP request
};

// One slot's holder, as recorded in etcd.
struct SlotHolder {
  int slot = 0;
  std::string host;
  pid_t pid = 0;
  std::string command;
  std::int64_t started_at = 0;      // Unix seconds, on the holder's clock
  std::chrono::seconds held_for{0};  // on ours: clocks across hosts may differ
  std::int64_t lease = 0;
  int slots = 0;                     // the slot count it was started with; 0 if not recorded
};

struct FleetWaiter {
  std::string host;
  pid_t pid = 0;
  std::string command;
};

struct Status {
  std::string name;
  int slots = 0;                    // the larger of Options::slots and what holders recorded
  std::vector<SlotHolder> holders;  // by slot
  std::vector<FleetWaiter> waiters;
  std::string endpoint;             // the member that answered
};

// A held slot. Move-only; the destructor releases it.
class Slot {
 public:
  // Takes a free slot of `name`, waiting up to options.wait for one to free. Busy: an Error with
  // held() true, naming every holder ("another installer is running (pid 4242 on web-1, for
  // 3m12s) — fleet lock: NAME, 1 of 1 slots held").
  [[nodiscard]] static std::expected<Slot, Error> acquire(std::string_view name, const Options& options);

  Slot() noexcept;
  Slot(Slot&&) noexcept;
  Slot& operator=(Slot&&) noexcept;
  ~Slot();

  // Renews the lease (call every TTL/3). Fails when no endpoint answers, or when etcd says the
  // lease is gone: then the slot may already belong to someone else.
  std::expected<void, Error> keep_alive();
  // True once the lease may be about to run out on the server: no renewal sent within the last
  // two thirds of the TTL. Stop using the slot then: etcd may hand it over a third later.
  bool expired() const noexcept;
  // Revokes the lease: the slot frees at once. Idempotent.
  std::error_code release() noexcept;

  int index() const noexcept;
  bool held() const noexcept;

 private:
  struct State;
  explicit Slot(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

// Lists the holders and waiters of `name`. Read-only.
[[nodiscard]] std::expected<Status, Error> inspect(std::string_view name, const Options& options);

}  // namespace pidlock::fleet
