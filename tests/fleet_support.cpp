#include "fleet_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

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

int port_of(const std::string& url) { return std::stoi(url.substr(url.rfind(':') + 1)); }

bool etcd_available() { return run({"sh", "-c", "command -v etcd"}).code == 0; }
bool etcdctl_available() { return run({"sh", "-c", "command -v etcdctl"}).code == 0; }
std::string missing_for(const ClusterConfig& config) {
  if (!etcd_available()) return "etcd is not installed (Debian: etcd-server)";
  if ((config.tls || config.auth) && !etcdctl_available()) {
    return "etcdctl is not installed (Debian: etcd-client)";
  }
  if (config.tls && !openssl_available()) return "openssl is not installed";
  return {};
}

std::string unique_name(const std::string& base) {
  static std::atomic<int> counter{0};
  return base + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool openssl_available() { return run({"sh", "-c", "command -v openssl"}).code == 0; }

Cluster::Cluster(int size) : Cluster(ClusterConfig{size, false, {}}) {}

Cluster::Cluster(const ClusterConfig& config) : config_(config) {
  if (config_.tls) {
    const bool made = make_certificates();
    EXPECT_TRUE(made) << "openssl could not make the test certificates";
    if (!made) return;
  }
  std::string initial;
  for (int i = 0; i < config_.size; ++i) {
    members_.push_back({"m" + std::to_string(i), free_port(), free_port(), std::nullopt});
    initial += (i ? "," : "") + members_.back().name +
               "=http://127.0.0.1:" + std::to_string(members_.back().peer);
  }
  for (std::size_t i = 0; i < members_.size(); ++i) {
    auto& m = members_[i];
    const std::string advertised = endpoint(static_cast<int>(i));
    std::string listen = advertised;
    if (config_.tls) listen += "," + endpoint(static_cast<int>(i), "127.0.0.2");
    const std::string peer = "http://127.0.0.1:" + std::to_string(m.peer);
    std::string command =
        "exec etcd --name " + m.name + " --data-dir " + (dir_ / m.name).string() +
        " --listen-client-urls " + listen + " --advertise-client-urls " + advertised +
        " --listen-peer-urls " + peer + " --initial-advertise-peer-urls " + peer +
        " --initial-cluster " + initial +
        " --initial-cluster-state new --heartbeat-interval 50 --election-timeout 500";
    if (config_.tls) {
      command += " --cert-file " + file("server.pem") + " --key-file " + file("server-key.pem") +
                 " --trusted-ca-file " + file("ca.pem") + " --client-cert-auth";
    }
    for (const auto& flag : config_.flags) command += " " + flag;
    command += " > " + (dir_ / (m.name + ".log")).string() + " 2>&1";
    m.process.emplace(Child::spawn({"sh", "-c", command}));
  }
  for (int i = 0; i < config_.size; ++i) {
    EXPECT_TRUE(eventually([&] { return answers(i); }, 30s))
        << "etcd member " << i << " did not start";
  }
}

// EC keys: RSA ones would take seconds on a busy machine. The server's certificate serves etcd's
// own gateway as a client too, hence clientAuth.
// RSA keys, as most operators' PKI has: their slower handshake is what lets a TLS 1.3 server's
// refusal of a client certificate race the client's first request (see etcd.cpp, post()).
bool Cluster::make_certificates() const {
  const std::string script = R"(set -e
cd "$1"
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1-key.pem" 2>/dev/null; }
ca() { key "$1"; openssl req -x509 -new -key "$1-key.pem" -out "$1.pem" -days 2 -subj "/CN=$1"; }
cert() {
  key "$1"
  openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/CN=$1"
  printf 'subjectAltName=%s
extendedKeyUsage=%s
' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial     -out "$1.pem" -days 2 -extfile "$1.ext"
}
ca ca
ca other-ca
cert server ca IP:127.0.0.1,DNS:localhost serverAuth,clientAuth
cert client ca DNS:client clientAuth
cert stranger other-ca DNS:client clientAuth
# A client certificate that expired on 2020-01-02: only openssl ca dates a certificate freely.
key expired
openssl req -new -key expired-key.pem -out expired.csr -subj /CN=expired
printf '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n' > ca.cnf
printf 'default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n' >> ca.cnf
printf '[ext]\nextendedKeyUsage = clientAuth\nsubjectAltName = DNS:client\n' >> ca.cnf
: > index.txt
echo 01 > serial
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca-key.pem -in expired.csr \
  -out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z -extensions ext -notext 2>/dev/null
)";
  const auto made = run({"sh", "-c", script, "sh", dir_.path().string()}, 30s);
  if (made.code != 0) ADD_FAILURE() << made.err;
  return made.code == 0;
}

std::string Cluster::endpoint(int i, const std::string& host) const {
  return (config_.tls ? "https://" : "http://") + host + ":" +
         std::to_string(members_[static_cast<std::size_t>(i)].client);
}

std::string Cluster::endpoints() const {
  std::string all;
  for (std::size_t i = 0; i < members_.size(); ++i)
    all += (i ? "," : "") + endpoint(static_cast<int>(i));
  return all;
}

bool Cluster::answers(int i) const {
  if (config_.tls || auth_) {
    auto argv = etcdctl_argv(i);
    argv.insert(argv.end(), {"endpoint", "health"});
    return run(argv, 5s).code == 0;
  }
  return run({pidlock_binary(), "status", "--etcd", endpoint(i), "probe"}, 5s).code == 0;
}

std::vector<std::string> Cluster::etcdctl_argv(int i) const {
  std::vector<std::string> argv{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoint(i)};
  if (config_.tls) {
    argv.insert(argv.end(), {"--cacert", file("ca.pem"), "--cert", file("client.pem"), "--key",
                             file("client-key.pem")});
  }
  if (auth_) argv.insert(argv.end(), {"--user", "root:root-pw"});
  return argv;
}

bool Cluster::enable_auth() {
  const std::vector<std::vector<std::string>> steps = {
      {"user", "add", "root", "--new-user-password", "root-pw"},
      {"role", "add", "pidlock-rw"},
      {"role", "grant-permission", "pidlock-rw", "--prefix=true", "readwrite", "pidlock/"},
      {"role", "grant-permission", "pidlock-rw", "--prefix=true", "readwrite", "other/"},
      {"user", "add", "alice", "--new-user-password", "alice-pw"},
      {"user", "grant-role", "alice", "pidlock-rw"},
      {"user", "add", "bob", "--new-user-password", "bob-pw"},
      {"auth", "enable"}};
  for (const auto& step : steps) {
    const auto done = etcdctl(step);
    if (done.code != 0) {
      ADD_FAILURE() << "etcdctl " << step[0] << " " << step[1] << ": " << done.err;
      return false;
    }
  }
  auth_ = true;
  return true;
}

void Cluster::stop(int i) {
  auto& m = members_[static_cast<std::size_t>(i)];
  m.process->signal(SIGKILL);
  m.process->wait();
}

void Cluster::pause(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGSTOP); }
void Cluster::resume(int i) { members_[static_cast<std::size_t>(i)].process->signal(SIGCONT); }

Result Cluster::etcdctl(const std::vector<std::string>& args) const {
  auto argv = etcdctl_argv(0);
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
  ::close(stop_[1]);  // wakes every poll in every thread
  thread_.join();
  for (auto& connection : connections_) connection.join();
  ::close(stop_[0]);
  ::close(listener_);
}

int FakeEndpoint::requests(const std::string& path) const {
  const std::lock_guard lock(paths_mutex_);
  const auto found = by_path_.find(path);
  return found == by_path_.end() ? 0 : found->second;
}

int FakeEndpoint::open(const std::string& path) const {
  const std::lock_guard lock(paths_mutex_);
  const auto found = open_by_path_.find(path);
  return found == open_by_path_.end() ? 0 : found->second;
}

std::map<std::string, int> FakeEndpoint::requests_by_path() const {
  const std::lock_guard lock(paths_mutex_);
  return by_path_;
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
    connections_.emplace_back([this, connection] {
      answer(connection);
      ::close(connection);
    });
  }
}

namespace {
std::string path_of(const std::string& request) {
  const auto starts = request.find(' ') + 1;
  return request.substr(starts, request.find(' ', starts) - starts);
}
}  // namespace

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
  const std::string path = path_of(request);
  {
    const std::lock_guard lock(paths_mutex_);
    ++by_path_[path];
    ++open_by_path_[path];
  }
  if (answer_.relay_to_port != 0) {
    relay(connection, std::move(request), path);
  } else if (answer_.hang) {
    (void)wait_readable(stop_[0]);  // until the test ends
  } else {
    const std::string response = "HTTP/1.1 " + std::to_string(answer_.status) +
                                 " Fake\r\nContent-Length: " + std::to_string(answer_.body.size()) +
                                 "\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" +
                                 answer_.body;
    (void)::send(connection, response.data(), response.size(), MSG_NOSIGNAL);
  }
  const std::lock_guard lock(paths_mutex_);
  --open_by_path_[path];
}

void FakeEndpoint::relay(int connection, std::string request, const std::string& path) {
  const std::string body = request.substr(request.find("\r\n\r\n") + 4);
  if (answer_.hang_if && answer_.hang_if(path, body)) {
    (void)wait_readable(stop_[0]);  // until the test ends
    return;
  }
  if (answer_.before_relaying) answer_.before_relaying(path);
  const bool dropping = answer_.drop_answer && answer_.drop_answer(path, body);
  // One request per connection both ways: etcd closes after answering, and so do we.
  request.insert(request.find("\r\n") + 2, "Connection: close\r\n");
  const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(answer_.relay_to_port));
  if (::connect(upstream, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::send(upstream, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    // Until etcd has answered and closed, the client has gone (a watch it gave up), or the
    // test ends. An answer to drop is read in full (etcd has done the request), never sent.
    char buffer[4096];
    for (;;) {
      pollfd fds[3] = {{upstream, POLLIN, 0}, {connection, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(fds, 3, -1) < 0) continue;
      if (!dropping && (fds[1].revents | fds[2].revents) != 0) break;
      if (dropping && fds[2].revents != 0) break;
      const ssize_t n = ::read(upstream, buffer, sizeof buffer);
      if (n <= 0) break;
      if (!dropping) (void)::send(connection, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
    }
  }
  ::close(upstream);
  if (dropping && answer_.after_dropping) answer_.after_dropping(path);
}

}  // namespace pidlock::test
