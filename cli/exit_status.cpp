// The exit-code table: each kind of error, local or fleet, to one sysexits(3) code.
#include "exit_status.hpp"

namespace pidlock::cli {

int exit_code_for(ErrorKind kind, FileUse use) {
  switch (kind) {
    case ErrorKind::busy:
      return exit_code::busy;
    case ErrorKind::invalid_argument:
      return exit_code::usage;
    case ErrorKind::not_found:
    case ErrorKind::symlink:
    case ErrorKind::not_regular_file:
    case ErrorKind::kernel_interface:
    case ErrorKind::cannot_open:
      return use == FileUse::lock ? exit_code::cant_create : exit_code::no_input;
    case ErrorKind::permission_denied:
      return exit_code::no_permission;
    case ErrorKind::io:
      return exit_code::io_error;
    case ErrorKind::system:
      return exit_code::os_error;
    case ErrorKind::cancelled:
      return exit_code::software;
  }
  return exit_code::software;
}

int exit_code_for(fleet::ErrorKind kind) {
  // A fleet lock uses no file: the kinds it shares with the local lock are a lock's.
  const auto shared = [](ErrorKind local) { return exit_code_for(local, FileUse::lock); };
  switch (kind) {
    case fleet::ErrorKind::busy:
      return shared(ErrorKind::busy);
    case fleet::ErrorKind::invalid_argument:
      return shared(ErrorKind::invalid_argument);
    case fleet::ErrorKind::permission_denied:
      return shared(ErrorKind::permission_denied);
    case fleet::ErrorKind::system:
      return shared(ErrorKind::system);
    case fleet::ErrorKind::cancelled:
      return shared(ErrorKind::cancelled);
    case fleet::ErrorKind::authentication:
      return exit_code::no_permission;
    case fleet::ErrorKind::tls:
    case fleet::ErrorKind::slot_count_mismatch:
      return exit_code::config;
    case fleet::ErrorKind::unreachable:
    case fleet::ErrorKind::etcd_error:
      return exit_code::unavailable;
    case fleet::ErrorKind::lease_lost:
      return exit_code::lease_lost;
  }
  return exit_code::software;
}

int exit_code_for(const Error& error, FileUse use, int busy_code) {
  return error.held() ? busy_code : exit_code_for(error.kind(), use);
}

int exit_code_for(const fleet::Error& error, int busy_code) {
  return error.held() ? busy_code : exit_code_for(error.kind());
}

}  // namespace pidlock::cli
