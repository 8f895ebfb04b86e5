// What etcd's refusals and answers that are not etcd's mean, and whether a failure may pass.
#include "etcd_failure.hpp"

#include "../escape.hpp"
#include "etcd_texts.hpp"

namespace pidlock::fleet::etcd {
namespace {

// Which of etcd's refusals are about who asks: those have errc values of their own, and are
// never retried.
FailureKind kind_of(const Status& error) {
  if (error.code == grpc::permission_denied) return FailureKind::permission;
  if (error.code == grpc::unauthenticated) return FailureKind::auth;
  if (error.code == grpc::invalid_argument &&
      texts::says(error.message, texts::user_name_is_empty)) {
    return FailureKind::auth;
  }
  return FailureKind::etcd_error;
}

std::string own_cause(const Failure& failure) {
  switch (failure.kind) {
    case FailureKind::unreachable:
    case FailureKind::timeout:
    case FailureKind::client_setup:
    case FailureKind::tls:
      return "etcd: " + failure.detail;
    case FailureKind::etcd_error:
    case FailureKind::auth:
    case FailureKind::permission:
      if (failure.grpc_code == 0) return "etcd: " + failure.detail;
      return "etcd: " + wire::grpc_code_name(failure.grpc_code) + ": " + failure.detail;
    case FailureKind::malformed_response:
      return "not an etcd answer (HTTP " + std::to_string(failure.http_status) +
             "): " + failure.detail;
  }
  return failure.detail;
}

}  // namespace

bool Failure::transient() const noexcept {
  switch (kind) {
    case FailureKind::unreachable:
    case FailureKind::timeout:
      return true;
    case FailureKind::etcd_error:
      return http_status >= 500 || grpc_code == grpc::unavailable ||
             grpc_code == grpc::deadline_exceeded;
    case FailureKind::malformed_response:
      return http_status >= 500;
    case FailureKind::client_setup:
    case FailureKind::tls:
    case FailureKind::auth:
    case FailureKind::permission:
      return false;
  }
  return false;
}

// A TLS failure may be one member's certificate; a refused user is refused by all.
bool Failure::worth_another_endpoint() const noexcept {
  return transient() || kind == FailureKind::malformed_response || kind == FailureKind::tls;
}

bool Failure::token_rejected() const noexcept {
  return grpc_code == grpc::unauthenticated || texts::says(detail, texts::auth_store_is_old) ||
         (kind == FailureKind::auth && texts::says(detail, texts::user_name_is_empty));
}

bool Failure::lease_not_found() const noexcept {
  return kind == FailureKind::etcd_error && grpc_code == grpc::not_found &&
         texts::says(detail, texts::lease_not_found);
}

bool Failure::revision_compacted() const noexcept {
  return kind == FailureKind::etcd_error && grpc_code == grpc::out_of_range;
}

std::string Failure::cause() const {
  std::string text = own_cause(*this);
  if (earlier.empty()) return text;
  text += " (before it, ";
  for (std::size_t i = 0; i < earlier.size(); ++i) {
    text += (i > 0 ? "; " : "") + earlier[i].first + ": " + earlier[i].second;
  }
  return text + ")";
}

Failure make_failure(FailureKind kind, std::string_view operation, const std::string& endpoint,
                     std::string detail) {
  Failure failure;
  failure.kind = kind;
  failure.operation = std::string(operation);
  failure.endpoint = endpoint;
  failure.detail = std::move(detail);
  return failure;
}

Failure malformed(std::string_view operation, const std::string& endpoint, long http_status,
                  std::string_view problem) {
  Failure failure =
      make_failure(FailureKind::malformed_response, operation, endpoint, std::string(problem));
  failure.http_status = http_status;
  return failure;
}

Failure refusal(const Status& error, long http_status, std::string_view operation,
                const std::string& endpoint) {
  Failure failure =
      make_failure(kind_of(error), operation, endpoint, text::printable_ascii(error.message));
  failure.grpc_code = error.code;
  failure.http_status = http_status;
  return failure;
}

Failure http_failure(long http_status, std::string_view body, std::string_view operation,
                     const std::string& endpoint) {
  if (const auto error = wire::parse_error(body)) {
    return refusal(*error, http_status, operation, endpoint);
  }
  if (http_status == 400 && texts::says(body, texts::http_request_to_https_server)) {
    Failure failure = make_failure(FailureKind::tls, operation, endpoint,
                                   "the endpoint speaks TLS: give it as https://");
    failure.http_status = http_status;
    return failure;
  }
  return malformed(operation, endpoint, http_status,
                   "not etcd's error: " + text::printable_ascii(body));
}

}  // namespace pidlock::fleet::etcd
