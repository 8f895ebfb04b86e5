// pidlock's output, written so that no closed, full or broken stream changes how pidlock ends.
#include "output.hpp"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <system_error>

namespace pidlock::cli {

// The errno text, without strerror()'s shared buffer.
std::string errno_text(int error) { return std::generic_category().message(error); }

void write_quietly(std::FILE* stream, std::string_view text) noexcept {
  // A write to a pipe nobody reads raises SIGPIPE, which would end pidlock with 141: block it for
  // the write, and take back the one the write raised unless one was already pending.
  sigset_t pipe_only{};
  sigset_t previous{};
  ::sigemptyset(&pipe_only);
  ::sigaddset(&pipe_only, SIGPIPE);
  const bool blocked = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous) == 0;
  sigset_t pending{};
  const bool was_pending = ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1;
  const bool written = std::fwrite(text.data(), 1, text.size(), stream) == text.size();
  const bool flushed = std::fflush(stream) == 0;
  const bool broken_pipe = (!written || !flushed) && errno == EPIPE;
  std::clearerr(stream);
  if (blocked) {
    if (broken_pipe && !was_pending) {
      const timespec now{};
      while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
      }
    }
    (void)::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
}

}  // namespace pidlock::cli
