#include "fleet_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pidlock::test {

using namespace std::chrono_literals;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool etcd_available() { return run({"sh", "-c", "command -v etcd"}).code == 0; }
bool etcdctl_available() { return run({"sh", "-c", "command -v etcdctl"}).code == 0; }

Cluster::Cluster(int size) {
  std::string initial;
  for (int i = 0; i < size; ++i) {
    members_.push_back({"m" + std::to_string(i), free_port(), free_port(), std::nullopt});
    initial += (i ? "," : "") + members_.back().name +
               "=http://127.0.0.1:" + std::to_string(members_.back().peer);
  }
  for (auto& m : members_) {
    const std::string client = "http://127.0.0.1:" + std::to_string(m.client);
    const std::string peer = "http://127.0.0.1:" + std::to_string(m.peer);
    const std::string command =
        "exec etcd --name " + m.name + " --data-dir " + (dir_ / m.name).string() +
        " --listen-client-urls " + client + " --advertise-client-urls " + client +
        " --listen-peer-urls " + peer + " --initial-advertise-peer-urls " + peer +
        " --initial-cluster " + initial +
        " --initial-cluster-state new --heartbeat-interval 50 --election-timeout 500 > " +
        (dir_ / (m.name + ".log")).string() + " 2>&1";
    m.process.emplace(Child::spawn({"sh", "-c", command}));
  }
  for (int i = 0; i < size; ++i) {
    EXPECT_TRUE(eventually([&] { return answers(i); }, 30s))
        << "etcd member " << i << " did not start";
  }
}

std::string Cluster::endpoint(int i) const {
  return "http://127.0.0.1:" + std::to_string(members_[static_cast<std::size_t>(i)].client);
}

std::string Cluster::endpoints() const {
  std::string all;
  for (std::size_t i = 0; i < members_.size(); ++i)
    all += (i ? "," : "") + endpoint(static_cast<int>(i));
  return all;
}

bool Cluster::answers(int i) const {
  return run({pidlock_binary(), "status", "--etcd", endpoint(i), "probe"}, 5s).code == 0;
}

void Cluster::stop(int i) {
  auto& m = members_[static_cast<std::size_t>(i)];
  m.process->signal(SIGKILL);
  m.process->wait();
}

void Cluster::pause(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGSTOP); }
void Cluster::resume(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGCONT); }

Result Cluster::etcdctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoint(0)};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

FakeEndpoint::FakeEndpoint(Answer answer) : answer_(std::move(answer)) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(listener_, 16), 0);
  socklen_t size = sizeof address;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size);
  port_ = ntohs(address.sin_port);
  EXPECT_EQ(::pipe2(stop_, O_CLOEXEC), 0);
  thread_ = std::thread([this] { serve(); });
}

FakeEndpoint::~FakeEndpoint() {
  ::close(stop_[1]);  // wakes every poll in the thread
  thread_.join();
  ::close(stop_[0]);
  ::close(listener_);
}

bool FakeEndpoint::wait_readable(int fd) const {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0) {
  }
  return (fds[1].revents & (POLLIN | POLLHUP)) == 0;
}

void FakeEndpoint::serve() {
  while (wait_readable(listener_)) {
    const int connection = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    answer(connection);
    ::close(connection);
  }
}

void FakeEndpoint::answer(int connection) {
  ++requests_;
  if (answer_.close) return;
  // Read the request: headers, then as many bytes as Content-Length says.
  std::string request;
  std::size_t body_starts = std::string::npos;
  std::size_t length = 0;
  while (body_starts == std::string::npos || request.size() < body_starts + length) {
    if (!wait_readable(connection)) return;
    char buffer[4096];
    const ssize_t n = ::read(connection, buffer, sizeof buffer);
    if (n <= 0) return;
    request.append(buffer, static_cast<std::size_t>(n));
    if (body_starts == std::string::npos) {
      const auto end = request.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      body_starts = end + 4;
      const auto header = request.find("Content-Length: ");
      if (header != std::string::npos && header < end)
        length = std::stoul(request.substr(header + 16));
    }
  }
  if (answer_.hang) {
    (void)wait_readable(stop_[0]);  // until the test ends
    return;
  }
  const std::string response = "HTTP/1.1 " + std::to_string(answer_.status) +
                               " Fake\r\nContent-Length: " + std::to_string(answer_.body.size()) +
                               "\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" +
                               answer_.body;
  (void)::send(connection, response.data(), response.size(), MSG_NOSIGNAL);
}

}  // namespace pidlock::test
