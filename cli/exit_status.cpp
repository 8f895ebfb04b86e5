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
    case ErrorKind::authentication:
      return exit_code::no_permission;
    case ErrorKind::tls:
    case ErrorKind::slot_count_mismatch:
      return exit_code::config;
    case ErrorKind::io:
      return exit_code::io_error;
    case ErrorKind::system:
      return exit_code::os_error;
    case ErrorKind::cancelled:
      return exit_code::software;
    case ErrorKind::unreachable:
    case ErrorKind::etcd_error:
      return exit_code::unavailable;
    case ErrorKind::lease_lost:
      return exit_code::lease_lost;
  }
  return exit_code::software;
}

int exit_code_for(const Error& error, FileUse use, int busy_code) {
  return error.held() ? busy_code : exit_code_for(error.kind(), use);
}

}  // namespace pidlock::cli
