#include "support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace pidlock::test {
namespace {

using Clock = std::chrono::steady_clock;

void must(bool ok, const char* what) {
  if (!ok) {
    std::perror(what);
    std::abort();
  }
}

struct Pipes {
  int in[2], out[2], err[2];
};

Pipes make_pipes() {
  Pipes p{};
  must(::pipe2(p.in, O_CLOEXEC) == 0 && ::pipe2(p.out, O_CLOEXEC) == 0 &&
           ::pipe2(p.err, O_CLOEXEC) == 0,
       "pipe2");
  return p;
}

void become_child_stdio(const Pipes& p) {
  ::dup2(p.in[0], 0);
  ::dup2(p.out[1], 1);
  ::dup2(p.err[1], 2);
}

int code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string drain(int fd) {
  std::string text;
  if (fd < 0) return text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  return text;
}

}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/pidlock-test-XXXXXX";
  must(::mkdtemp(templ.data()) != nullptr, "mkdtemp");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::add, ignored);
  std::filesystem::remove_all(path_, ignored);
}

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}

Child Child::spawn(const std::vector<std::string>& argv) {
  return fork([argv] {
    auto args = c_argv(argv);
    // Default dispositions, however this test binary was started: a shell runs `tests &` with
    // SIGINT and SIGQUIT ignored, which exec would pass on to pidlock and its command.
    for (int signal = 1; signal < NSIG; ++signal) ::signal(signal, SIG_DFL);
    ::execvp(args[0], args.data());
    std::perror(args[0]);
    return 127;
  });
}

Child Child::fork(const std::function<int()>& body) {
  const Pipes p = make_pipes();
  std::fflush(nullptr);  // or the child would write our buffered output a second time
  const pid_t pid = ::fork();
  must(pid >= 0, "fork");
  if (pid == 0) {
    become_child_stdio(p);
    // Our ends of the pipes: a child that kept them would never see EOF on its own stdin.
    for (int fd : {p.in[1], p.out[0], p.err[0]}) ::close(fd);
    const int code = body();
    std::fflush(nullptr);
    ::_exit(code);
  }
  ::close(p.in[0]);
  ::close(p.out[1]);
  ::close(p.err[1]);
  Child child;
  child.pid_ = pid;
  child.in_ = p.in[1];
  child.out_ = p.out[0];
  child.err_ = p.err[0];
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      in_(std::exchange(other.in_, -1)),
      out_(std::exchange(other.out_, -1)),
      err_(std::exchange(other.err_, -1)),
      status_(other.status_),
      out_buffer_(std::move(other.out_buffer_)),
      err_buffer_(std::move(other.err_buffer_)) {}

Child::~Child() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  for (int fd : {in_, out_, err_}) {
    if (fd >= 0) ::close(fd);
  }
}

std::string Child::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (const auto nl = out_buffer_.find('\n'); nl != std::string::npos) {
      std::string line = out_buffer_.substr(0, nl);
      out_buffer_.erase(0, nl + 1);
      return line;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      ADD_FAILURE() << "no line from child " << pid_ << " in time; got: " << out_buffer_;
      return {};
    }
    pollfd pfd{out_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(out_, buf, sizeof buf);
    if (n == 0) {
      ADD_FAILURE() << "child " << pid_ << " closed stdout; got: " << out_buffer_
                    << "; stderr: " << drain_stderr();
      return {};
    }
    if (n > 0) out_buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

void Child::close_stdin() {
  if (in_ >= 0) ::close(std::exchange(in_, -1));
}

void Child::signal(int sig) const { ::kill(pid_, sig); }

bool Child::exited_within(std::chrono::milliseconds timeout) {
  if (status_) return true;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = status;
      return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // polling with a deadline
  }
}

int Child::wait(std::chrono::milliseconds timeout) {
  if (!exited_within(timeout)) {
    ADD_FAILURE() << "child " << pid_ << " did not exit in time";
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    status_ = status;
  }
  return code_of(*status_);
}

std::string Child::drain_stdout() { return std::exchange(out_buffer_, {}) + drain(out_); }
std::string Child::drain_stderr() { return std::exchange(err_buffer_, {}) + drain(err_); }

bool Child::stderr_shows(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (err_buffer_.find(needle) == std::string::npos) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{err_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(err_, buf, sizeof buf);
    if (n == 0) return false;
    if (n > 0) err_buffer_.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

Result run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  Child child = Child::spawn(argv);
  child.close_stdin();
  // Read both pipes to EOF before waiting, so that a chatty child cannot block on a full pipe.
  Result result;
  result.out = child.drain_stdout();
  result.err = child.drain_stderr();
  result.code = child.wait(timeout);
  return result;
}

void wait_for_eof_on_stdin() {
  char c;
  while (::read(0, &c, 1) > 0) {
  }
}

Child lock_holder(const std::filesystem::path& path, const Options& options) {
  Child child = Child::fork([path, options] {
    auto lock = Lock::acquire(path, options);
    std::printf("%s\n", lock ? "ready" : lock.error().message().c_str());
    std::fflush(stdout);
    wait_for_eof_on_stdin();
    return lock ? 0 : 1;
  });
  EXPECT_EQ(child.read_line(), "ready");
  return child;
}

Child idle_child() {
  Child child = Child::fork([] {
    std::printf("ready\n");
    std::fflush(stdout);
    wait_for_eof_on_stdin();
    return 0;
  });
  EXPECT_EQ(child.read_line(), "ready");
  return child;
}

bool someone_waits(const std::filesystem::path& path, std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        auto status = inspect(path);
        return status && !status->waiters.empty();
      },
      timeout);
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // polling with a deadline
  }
  return true;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string pidlock_binary() {
  // PIDLOCK_TEST_BINARY runs the tests against another build (an older one, to see a test fail).
  const char* other = std::getenv("PIDLOCK_TEST_BINARY");
  return other != nullptr && *other != '\0' ? other : PIDLOCK_BINARY;
}

}  // namespace pidlock::test
