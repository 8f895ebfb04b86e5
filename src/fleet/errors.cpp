// The fleet's errors: the error category, the one failure-to-code-to-kind table, the messages.
#include "errors.hpp"

#include "../escape.hpp"
#include "certificate.hpp"
#include "options.hpp"
#include "timing.hpp"

namespace pidlock::fleet {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "pidlock.fleet"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::unreachable:
        return "etcd cannot be reached";
      case errc::timed_out:
        return "etcd did not answer in time";
      case errc::etcd_error:
        return "etcd refused the request";
      case errc::malformed_response:
        return "the answer is not etcd's";
      case errc::client_setup:
        return "the HTTP client cannot be set up";
      case errc::slot_lost:
        return "the fleet slot is lost";
      case errc::tls_failed:
        return "no TLS session with etcd";
      case errc::auth_failed:
        return "etcd did not accept the credentials";
      case errc::permission_denied:
        return "etcd denied access to the fleet lock's keys";
      case errc::slot_count_mismatch:
        return "the fleet lock's holders use another slot count";
    }
    return "unknown fleet error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::unreachable:
        return std::errc::host_unreachable;
      case errc::timed_out:
        return std::errc::timed_out;
      case errc::etcd_error:
        return std::errc::io_error;
      case errc::malformed_response:
        return std::errc::bad_message;
      case errc::client_setup:
        return std::errc::not_enough_memory;
      case errc::slot_lost:
        return std::errc::owner_dead;
      case errc::tls_failed:
        return std::errc::protocol_error;
      case errc::auth_failed:
        return std::errc::permission_denied;
      case errc::permission_denied:
        return std::errc::operation_not_permitted;
      case errc::slot_count_mismatch:
        return std::errc::invalid_argument;
    }
    return {value, *this};
  }
};

// What the client certificate's own dates say about a refused session: etcd answers an expired
// one with a bare "bad certificate".
std::string certificate_dates(const Tls& tls) {
  if (tls.cert_file.empty()) return {};
  const auto pem = small_file(tls.cert_file);
  if (!pem) return {};
  const auto dates = certificate::validity(*pem);
  if (!dates) return {};
  const std::string file = text::printable_ascii(tls.cert_file);
  const auto now = timing::unix_now();
  if (now > dates->not_after) {
    return "; the client certificate " + file + " expired on " +
           certificate::utc(dates->not_after) + ": renew it";
  }
  if (now < dates->not_before) {
    return "; the client certificate " + file + " is not valid before " +
           certificate::utc(dates->not_before) + " (check this host's clock)";
  }
  return {};
}

// What to fix when etcd refuses the caller itself. Never the password.
std::string hint(const etcd::Failure& failure, const Options& options) {
  const std::string user = text::printable_ascii(options.user);
  switch (failure.kind) {
    case etcd::FailureKind::auth:
      if (options.user.empty())
        return "; this etcd has authentication on: give a user and password";
      return "; check the password of etcd user " + user + ", and that the user exists";
    case etcd::FailureKind::permission: {
      const std::string prefix = text::printable_ascii(options.key_prefix);
      const std::string who = options.user.empty() ? "the user" : "etcd user " + user;
      return "; " + who + " needs a role with readwrite on the keys under " + prefix +
             " (etcdctl role grant-permission --prefix ROLE readwrite " + prefix + ")";
    }
    case etcd::FailureKind::tls:
      return certificate_dates(options.tls);
    default:
      return {};
  }
}

}  // namespace

const std::error_category& category() noexcept {
  static const Category instance;
  return instance;
}

std::error_code make_error_code(errc value) noexcept {
  return {static_cast<int>(value), category()};
}

errc code_of(const etcd::Failure& failure) {
  switch (failure.kind) {
    case etcd::FailureKind::unreachable:
      return errc::unreachable;
    case etcd::FailureKind::timeout:
      return errc::timed_out;
    case etcd::FailureKind::etcd_error:
      return errc::etcd_error;
    case etcd::FailureKind::malformed_response:
      return errc::malformed_response;
    case etcd::FailureKind::client_setup:
      return errc::client_setup;
    case etcd::FailureKind::tls:
      return errc::tls_failed;
    case etcd::FailureKind::auth:
      return errc::auth_failed;
    case etcd::FailureKind::permission:
      return errc::permission_denied;
  }
  return errc::unreachable;
}

// Finer codes share a kind where a caller acts on them alike: an endpoint that does not answer in
// time is as unreachable as one that refuses the connection (exit 69 either way), an answer that
// is not etcd's is as unusable as etcd's refusal.
ErrorKind kind_of(errc code) {
  switch (code) {
    case errc::unreachable:
    case errc::timed_out:
      return ErrorKind::unreachable;
    case errc::etcd_error:
    case errc::malformed_response:
      return ErrorKind::etcd_error;
    case errc::client_setup:
      return ErrorKind::system;
    case errc::slot_lost:
      return ErrorKind::lease_lost;
    case errc::tls_failed:
      return ErrorKind::tls;
    case errc::auth_failed:
      return ErrorKind::authentication;
    case errc::permission_denied:
      return ErrorKind::permission_denied;
    case errc::slot_count_mismatch:
      return ErrorKind::slot_count_mismatch;
  }
  return ErrorKind::system;
}

Error Errors::made(ErrorKind kind, std::error_code code, std::string_view operation,
                   std::string place, std::string message, std::optional<SlotHolder> holder) {
  Error e;
  e.kind_ = kind;
  e.code_ = code;
  e.operation_ = operation;
  e.place_ = std::move(place);
  e.message_ = std::move(message);
  e.holder_ = std::move(holder);
  return e;
}

Error Errors::at(ErrorKind kind, std::error_code code, std::string_view operation,
                 std::string place, std::string_view detail) {
  std::string message = "pidlock: " + std::string(operation) + " " + text::for_terminal(place) +
                        ": " + std::string(detail);
  return made(kind, code, operation, std::move(place), std::move(message), std::nullopt);
}

Error Errors::failure(errc code, std::string_view operation, std::string place,
                      std::string_view detail) {
  return at(kind_of(code), make_error_code(code), operation, std::move(place), detail);
}

Error Errors::invalid(std::string_view operation, std::string_view name, std::string_view why) {
  return at(ErrorKind::invalid_argument, std::make_error_code(std::errc::invalid_argument),
            operation, std::string(name), why);
}

Error Errors::cancelled(std::string_view name, std::string_view what) {
  const auto code = std::make_error_code(std::errc::operation_canceled);
  return at(ErrorKind::cancelled, code, "on_wait", std::string(name),
            code.message() + ": the callback threw (" + std::string(what) +
                "); the wait was stopped and no slot taken");
}

Error Errors::busy(std::string message, std::optional<SlotHolder> holder) {
  return made(ErrorKind::busy, std::make_error_code(std::errc::resource_unavailable_try_again),
              "acquire", {}, std::move(message), std::move(holder));
}

std::string explained(const etcd::Failure& failure, const Options& options) {
  return failure.cause() + hint(failure, options);
}

Error error_of(const etcd::Failure& failure, const Options& options, std::string_view consequence) {
  return Errors::failure(code_of(failure), failure.operation, failure.endpoint,
                         explained(failure, options) + std::string(consequence));
}

Error busy(const Options& options, std::string_view name, const std::vector<SlotHolder>& holders,
           std::size_t waiting) {
  std::string described;
  std::optional<SlotHolder> first;
  for (const auto& h : holders) {
    described += (described.empty() ? "" : "; ") +
                 (h.malformed ? "slot " + std::to_string(h.slot) + ": " : "") + describe(h);
    // A key that never expires holds its slot until someone deletes it: say so, and how.
    if (const auto advice = removal_hint(h); !advice.empty()) described += ", " + advice;
    if (!first && !h.malformed) first = h;
  }
  std::string counts =
      std::to_string(holders.size()) + " of " + std::to_string(options.slots) + " slots held";
  if (waiting > 0) {
    counts +=
        ", " + std::to_string(waiting) + (waiting == 1 ? " waiter" : " waiters") + " first in line";
  }
  const std::string role = text::for_terminal(options.role);
  std::string message =
      described.empty()
          ? "another " + role + " is next (a waiter that came first gets the free slot)"
          : "another " + role + " is running (" + described + ")";
  return Errors::busy(message + " — fleet lock: " + text::for_terminal(name) + ", " + counts,
                      std::move(first));
}

Error slot_count_mismatch(const Options& options, std::string_view name, int found, bool at_least) {
  return Errors::failure(errc::slot_count_mismatch, "acquire", std::string(name),
                         "the fleet lock has " + std::string(at_least ? "at least " : "") +
                             std::to_string(found) + " slots, as its holders were started with; " +
                             "this one asked for " + std::to_string(options.slots));
}

}  // namespace pidlock::fleet
