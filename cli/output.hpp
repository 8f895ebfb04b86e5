// What pidlock says: output that never fails pidlock, and errno's text.
#pragma once

#include <fmt/core.h>

#include <cstdio>
#include <string>
#include <string_view>

namespace pidlock::cli {

std::string errno_text(int error);

// Writes `text` to `stream` and flushes it, ignoring failure: a closed, full or broken stdout or
// stderr must not change pidlock's exit status, nor kill it with SIGPIPE.
void write_quietly(std::FILE* stream, std::string_view text) noexcept;

// fmt::print that never throws and never fails the caller (see write_quietly).
template <typename... Args>
void say(std::FILE* stream, fmt::format_string<Args...> format, Args&&... args) noexcept {
  try {
    write_quietly(stream, fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; nothing useful can be said
  }
}

}  // namespace pidlock::cli
