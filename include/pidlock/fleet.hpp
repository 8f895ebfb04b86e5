// pidlock fleet mode: "at most N hosts at once", on etcd.
//
// A lock file cannot see other hosts. A fleet lock is a name in an etcd cluster with N slots;
// each holder owns one slot through a key created only if absent, in a transaction, and bound to
// a lease with a short TTL that the holder keeps alive. If the holder dies, or loses etcd for
// longer than the TTL, the lease expires, etcd deletes the key, and the first waiter in line,
// watching the lock, takes it at once.
//
//   pidlock::fleet::Options options;
//   options.endpoints = {"https://10.0.0.1:2379", "https://10.0.0.2:2379"};
//   options.tls.ca_file = "/etc/pidlock/etcd-ca.pem";    // plus cert_file and key_file, if asked
//   options.user = "pidlock";                            // if etcd has authentication enabled
//   options.password = read_secret();
//   options.slots = 2;                                   // at most two hosts updating at once
//   auto slot = pidlock::fleet::Slot::acquire("firewall-update", options);
//   if (!slot) { std::cerr << slot.error().message() << '\n'; return 75; }
//   while (working) {                                    // every TTL/3
//     if (!slot->keep_alive() && slot->expired()) { stop(slot->kill_after()); break; }
//   }
//
// Talks to etcd's v3 JSON gateway over HTTP or HTTPS with libcurl. Nothing here throws, and nothing
// read from etcd is trusted: a record that anyone with write access to the prefix may have written,
// or an answer from an endpoint that is not etcd at all, is checked field by field.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "pidlock/pidlock.hpp"

namespace pidlock::fleet {

// Error::code() of a fleet failure (besides std::errc::invalid_argument for unusable Options,
// operation_canceled when on_wait threw and resource_unavailable_try_again when busy). Each
// compares equal to the std::errc in brackets, and decides the Error's kind (ErrorKind).
enum class errc {
  unreachable = 1,     // no endpoint could be reached (host_unreachable)
  timed_out,           // no endpoint answered within Options::request_timeout (timed_out)
  etcd_error,          // etcd refused the request; the message has its gRPC status (io_error)
  malformed_response,  // an endpoint answered something that is not etcd's (bad_message)
  client_setup,        // libcurl could not be set up (not_enough_memory)
  slot_lost,           // a held slot is gone: its lease expired or was revoked, or its key was
                       // deleted or replaced; someone else may hold it now (owner_dead)
  // The failures below do not pass by themselves: a waiter gives up on them at once, whatever
  // Options::wait says. The message names the endpoint and what to check.
  tls_failed,   // no TLS session with an https:// endpoint: its certificate is not signed by the
                // CA, or does not name the host in the URL; it wants a client certificate that
                // was not given, or refused the one that was; it answers, but not in TLS
                // (protocol_error). An endpoint that closes the connection without a word, as
                // etcd does to plain HTTP on its TLS port, is `unreachable`, with a hint.
  auth_failed,  // etcd did not accept Options::user and password, or wants credentials
                // that were not given (permission_denied)
  permission_denied,    // the user is authenticated, but its roles do not let it read and write
                        // the keys under Options::key_prefix (operation_not_permitted)
  slot_count_mismatch,  // the lock's holders were started with another Options::slots: taking a
                        // slot anyway would break their limit or ours (invalid_argument)
};
const std::error_category& category() noexcept;
std::error_code make_error_code(errc value) noexcept;

// One slot's holder, as recorded in etcd.
struct SlotHolder {
  int slot = 0;
  std::string key;  // the slot's key in etcd: PREFIX NAME/slots/N
  std::string host;
  pid_t pid = 0;
  std::string command;
  std::int64_t started_at = 0;       // Unix seconds, on the holder's clock
  std::chrono::seconds held_for{0};  // on ours: clocks across hosts may differ
  std::int64_t lease = 0;  // 0: the key has no lease (written by hand), so it never expires
  int slots = 0;           // the slot count it was started with; 0 if not recorded
  // The slot key's creation revision in etcd: as Slot::fence() told the holder.
  std::int64_t fence = 0;
  // The key exists, so the slot is held (etcd lets no one else create it), but its value is not
  // a record pidlock would write: not JSON, a field of the wrong type, a PID out of range…
  // The fields above that were right are filled in, the others left at their defaults.
  bool malformed = false;
  std::string problem;  // what is wrong with it, e.g. "pid: not an integer from 1 to 4194304"
  std::string raw;      // the value, cut at 200 bytes, bytes other than printable ASCII as \xNN
};

// A waiter, as recorded in etcd. Waiters are served in the order they came, per lock.
struct SlotWaiter {
  std::string host;
  pid_t pid = 0;
  std::string command;
  int slots = 0;           // the slot count it was started with; 0 if not recorded
  bool malformed = false;  // as SlotHolder
  std::string problem;
  std::string raw;
};

struct Status {
  std::string name;
  // The largest of Options::slots, what holders and waiters recorded, and the highest slot held
  // plus one.
  int slots = 0;
  std::vector<SlotHolder> holders;  // by slot
  std::vector<SlotWaiter> waiters;
  std::string endpoint;  // the member that answered
};

// What kind of failure a fleet Error is: what a caller acts on. pidlock(1) maps each to one exit
// code (its EXIT STATUS table), as it does pidlock::ErrorKind; to_string() gives the JSON and test
// spelling. The kinds the local lock has too (busy, invalid_argument, permission_denied, system,
// cancelled) mean the same here, and are spelt the same.
enum class ErrorKind {
  busy,                 // every slot is held, or a free one is promised to waiters that came first
  invalid_argument,     // refused before anything was tried: a name, an endpoint, Options
  unreachable,          // no etcd endpoint answered in time, or each said it cannot serve now
                        // (errc::unreachable, timed_out)
  etcd_error,           // etcd refused the request, or something that is not etcd answered
                        // (errc::etcd_error, malformed_response)
  lease_lost,           // a held slot is gone: its lease expired or its key was deleted
                        // (errc::slot_lost)
  tls,                  // no TLS session: a certificate not trusted, for another host, or missing
  authentication,       // etcd did not accept the user and password, or wants them
  permission_denied,    // an etcd user whose roles do not cover the key prefix
  slot_count_mismatch,  // the lock's holders were started with another slot count
  system,               // libcurl could not be set up (errc::client_setup)
  cancelled,            // Options::on_wait threw: the wait was stopped, no slot taken
};

// "busy", "invalid_argument", "unreachable", "etcd_error", "lease_lost", "tls", "authentication",
// "permission_denied", "slot_count_mismatch", "system", "cancelled". Inline, so that the
// command's exit-code table and its test need not link the fleet library.
constexpr std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::busy:
      return "busy";
    case ErrorKind::invalid_argument:
      return "invalid_argument";
    case ErrorKind::unreachable:
      return "unreachable";
    case ErrorKind::etcd_error:
      return "etcd_error";
    case ErrorKind::lease_lost:
      return "lease_lost";
    case ErrorKind::tls:
      return "tls";
    case ErrorKind::authentication:
      return "authentication";
    case ErrorKind::permission_denied:
      return "permission_denied";
    case ErrorKind::slot_count_mismatch:
      return "slot_count_mismatch";
    case ErrorKind::system:
      return "system";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "system";
}

// Why acquire, keep_alive, revoke or inspect failed: a kind, the failed operation ("lease grant",
// "acquire"), the place (the etcd endpoint, or the fleet lock's name), a code (a fleet::errc, or
// a std::errc) and a message for operators: "pidlock: lease grant http://10.0.0.1:2379: etcd:
// Couldn't connect to server". Either the lock is busy (kind() busy, held() true, and message()
// names every holder), or something failed. Built by the library only.
//
// Fleet calls used to return a pidlock::Error, whose pidlock::ErrorKind had the fleet's kinds
// too: code that names pidlock::Error, or pidlock::ErrorKind::unreachable and the like, for a
// fleet call names fleet::Error and fleet::ErrorKind now. held(), message(), code(), operation()
// and place() are as they were; holder() is the SlotHolder it names, not a pidlock::Holder.
class Error {
 public:
  Error() = default;

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& message() const noexcept { return message_; }
  std::error_code code() const noexcept { return code_; }
  bool held() const noexcept { return kind_ == ErrorKind::busy; }
  // Busy: the first holder it names whose record is well-formed, if any.
  const std::optional<SlotHolder>& holder() const noexcept { return holder_; }
  // The etcd endpoint (a URL), or the fleet lock's name.
  const std::string& place() const noexcept { return place_; }
  const std::string& operation() const noexcept { return operation_; }

 private:
  friend class Errors;  // the library's one way to make them (src/fleet/errors.hpp)
  ErrorKind kind_ = ErrorKind::system;
  std::string message_;
  std::error_code code_;
  std::optional<SlotHolder> holder_;
  std::string place_;
  std::string operation_;
};

// What a waiter reports through Options::on_wait.
struct WaitProgress {
  std::chrono::nanoseconds waited{0};
  std::vector<SlotHolder> holders;  // as last seen; empty before etcd first answered
  // Set while etcd cannot be asked (no endpoint answers, or each says it cannot serve): the last
  // failure. A waiter holds nothing, so it keeps trying, with backoff, until its deadline.
  std::optional<Error> failure;
};

// TLS for https:// endpoints, as etcdctl's --cacert, --cert and --key. http:// endpoints ignore
// it (and send the password, if any, in the clear).
struct Tls {
  // PEM file of the CA(s) that signed the servers' certificates. Empty: the system's CAs.
  std::string ca_file;
  // PEM files of the client certificate and its private key, for an etcd started with
  // --client-cert-auth. key_file may be left empty when cert_file holds the key too.
  std::string cert_file;
  std::string key_file;
  // Accept any server certificate, for any host name. Only for tests and trials: anyone on the
  // path can then pose as etcd, and read the password.
  bool insecure_skip_verify = false;
};

struct Options {
  // etcd client URLs (http:// or https://), tried in order; a request that cannot reach one fails
  // over to the next. At least one: there is no default (a lock taken in whatever etcd listens
  // on this host would exclude nobody).
  std::vector<std::string> endpoints;
  Tls tls;
  // For an etcd with authentication enabled (`etcdctl auth enable`): the user's name and
  // password, exchanged for a token at the first request and again whenever etcd says the token
  // has expired. The password is sent only to /v3/auth/authenticate, and never appears in an
  // Error. Empty user: no authentication. The user's roles need readwrite on key_prefix.
  std::string user;
  std::string password;
  // How many holders at once. Every holder of a name must agree on it: see
  // errc::slot_count_mismatch.
  int slots = 1;
  std::chrono::seconds ttl{5};  // the lease: how long a dead holder keeps its slot
  // As pidlock::Options::wait: zero fails at once, wait_forever (or anything too long for the
  // clock) never gives up. Until then, failures that may pass (etcd unreachable, timing out, or
  // saying it is unavailable) are retried with capped exponential backoff.
  std::chrono::nanoseconds wait{0};
  std::string role = "installer";  // the noun in "another <role> is running"
  std::string command;             // recorded with the holder, for status
  // Where the names live in etcd's key space: NAME's keys are PREFIX + NAME + "/slots/N" and
  // PREFIX + NAME + "/waiters/…", with '%' and '/' in NAME written as %25 and %2F, so that any
  // two names keep apart. Must be non-empty and end with '/'.
  std::string key_prefix = "pidlock/";
  std::chrono::milliseconds request_timeout{2000};  // per HTTP request
  // Called while waiting for a slot, on the calling thread: when the wait starts, every
  // progress_interval, and at once when etcd stops or starts answering. What it throws stops the
  // wait: the lease is revoked (our place in the queue with it), and acquire returns an Error of
  // kind cancelled (operation "on_wait", ECANCELED), as the local lock does.
  std::function<void(const WaitProgress& progress)> on_wait;
  std::chrono::nanoseconds progress_interval = std::chrono::seconds(1);
};

// A held slot. Move-only; the destructor releases it.
//
// Waiters are served first come, first served: each registers in the lock's queue (a key whose
// creation revision is its place), and a free slot goes to the earliest waiter; one that asks
// while others wait queues behind them, even with a slot free for a moment. Each waiter follows
// the slots and the queue through one watch and asks etcd nothing while others are served, so
// that a hand-off costs a few requests (the holder's revoke, the next one's create, and its
// leaving the queue) however many wait.
class Slot {
 public:
  // Takes a free slot of `name` (any non-empty bytes, '/' included), waiting up to options.wait
  // for one to free. Busy: an Error with kind busy, naming every holder as describe() does
  // ("another installer is running (pid 4242 on web-1, running app-installer --upgrade, for
  // 3m12s) — fleet lock: NAME, 1 of 1 slots held"), or a slot free but promised to waiters that
  // came first ("another installer is next … 1 waiter first in line"). Otherwise an Error of
  // another kind (unreachable, etcd_error, tls, authentication, permission_denied,
  // slot_count_mismatch, system, lease_lost) whose code() is a fleet::errc, of kind
  // invalid_argument (std::errc::invalid_argument), or of kind cancelled when on_wait threw.
  [[nodiscard]] static std::expected<Slot, Error> acquire(std::string_view name,
                                                          const Options& options);

  Slot() noexcept;
  Slot(Slot&&) noexcept;
  Slot& operator=(Slot&&) noexcept;
  ~Slot();

  // Renews the lease and checks that the slot's key is still ours; call every TTL/3. Fails with
  // errc::slot_lost once etcd says the lease is gone or the key was deleted or replaced (an
  // operator's `etcdctl del`, a revoke elsewhere), or once etcd no longer lets the user renew or
  // read it (its role was revoked, the user removed: the key can no longer be checked, so the
  // slot is given up, and the message says what etcd refused): then lost() is true for good.
  // Any other failure means etcd could not be asked this time: call again at the next tick.
  std::expected<void, Error> keep_alive();
  // True once the slot is lost, or may be about to be on the server: no successful renewal (or
  // grant) within the last two thirds of the TTL. Stop using the slot then: etcd may hand it over
  // a third of the TTL later.
  bool expired() const noexcept;
  // True once keep_alive() found the slot gone, or no longer ours to check.
  bool lost() const noexcept;
  // How long a command told to stop (SIGTERM) may take before it must be killed (SIGKILL) so that
  // it never overlaps with the next holder: the time until etcd can expire the lease (the TTL
  // after the last successful renewal was sent), less a margin of a tenth of the TTL (at least
  // 100 ms). Zero once lost(): the next holder may already run.
  std::chrono::nanoseconds kill_after() const noexcept;
  // Revokes the lease: the slot frees at once. Idempotent. The error's code, if etcd could not
  // be asked or refused (then the slot frees only when the lease expires, within the TTL).
  std::error_code release() noexcept;
  // As release(), with the whole Error to report: which request, which endpoint, what etcd said.
  std::expected<void, Error> revoke() noexcept;

  int index() const noexcept;
  bool held() const noexcept;
  // A fencing token: the slot key's creation revision in etcd. Every grant of any slot of any
  // name in the cluster gets a larger one than every grant before it, so a resource that
  // remembers the largest fence it has seen can refuse a holder that lost its slot and came
  // back late. 0 when not held.
  std::int64_t fence() const noexcept;

 private:
  struct State;
  explicit Slot(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

// "pid 4242 on web-1, running app-installer --upgrade, for 3m12s": a slot's holder as
// pidlock::describe() names a local one, escaped for a terminal. For a malformed record: "a
// malformed record (PROBLEM)". (A busy Error adds removal_hint() after it, when there is one.)
std::string describe(const SlotHolder& holder);
// For a holder whose key has no lease: "key pidlock/g1/slots/0: it has no lease, so it never
// expires; remove it with etcdctl del pidlock/g1/slots/0". Such a key (written by hand, with
// etcdctl put) holds its slot until someone deletes it. Empty for any other holder.
std::string removal_hint(const SlotHolder& holder);

// Lists the holders (by slot) and waiters (in the order they came) of `name`. Read-only.
[[nodiscard]] std::expected<Status, Error> inspect(std::string_view name, const Options& options);

}  // namespace pidlock::fleet

template <>
struct std::is_error_code_enum<pidlock::fleet::errc> : std::true_type {};
