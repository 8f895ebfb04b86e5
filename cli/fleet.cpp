// pidlock run --etcd and pidlock status --etcd: the fleet lock. Built into pidlock-fleet only,
// so that the plain command does not load libcurl and its dependencies on every run.
#include "pidlock/fleet.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>

#include "commands.hpp"
#include "escape.hpp"
#include "json_text.hpp"
#include "process.hpp"
#include "sys.hpp"

namespace pidlock::cli {
namespace {

// Whether others than the file's owner and group may read or write it. A group may share it (a
// service account reading a root-owned file); every user may not: ssh refuses such a key file,
// and so does pidlock such a password file.
bool open_to_everyone(const struct stat& st) { return (st.st_mode & (S_IROTH | S_IWOTH)) != 0; }

// The first line of the password file, without its line end. A regular file only: a FIFO would
// hang pidlock, a directory cannot hold a password. Failing, it says why and gives the exit code.
std::expected<std::string, int> read_password(const std::string& file) {
  const auto refused = [&file](std::error_code code, std::string_view detail = {}) {
    const Error error =
        Error::failure(ErrorKind::cannot_open, "--password-file", file, code, detail);
    say(stderr, "{}\n", error.message());
    return std::unexpected(exit_code_for(error, FileUse::read));
  };
  const sys::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return refused(sys::last_error());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return refused(sys::last_error());
  if (!S_ISREG(st.st_mode)) return refused(sys::errno_code(EINVAL), "not a regular file");
  if (open_to_everyone(st)) {
    say(stderr,
        "pidlock: --password-file {}: every user may read or write it (mode {:04o}); a password "
        "file must not be: chmod o-rw {}\n",
        text::for_terminal(file), st.st_mode & 07777U, text::for_terminal(file));
    return std::unexpected(exit_code::config);
  }
  constexpr std::size_t password_limit = std::size_t{64} * 1024;  // a line, not a file
  auto text = sys::read_fd(fd.get(), password_limit);
  if (!text) return refused(text.error());
  std::string password = text->substr(0, text->find('\n'));
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return password;
}

// The value of environment variable `name`, taken out of the environment: out of environ, so that
// the command does not inherit it, and out of the bytes the kernel shows as /proc/PID/environ
// (the process's initial environment, which unsetenv leaves as it was), overwritten where they
// lie, so that nobody who may read that file learns it while the command runs.
std::string take_secret(std::string_view name) {
  std::string value;
  // One thread here: nothing else reads or changes the environment meanwhile.
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view variable(*entry);
    if (!variable.starts_with(name) || variable.size() <= name.size() ||
        variable[name.size()] != '=') {
      continue;
    }
    char* bytes = *entry + name.size() + 1;
    const std::size_t length = variable.size() - name.size() - 1;
    if (value.empty()) value.assign(bytes, length);
    ::explicit_bzero(bytes, length);
  }
  const std::string variable(name);
  ::unsetenv(variable.c_str());  // NOLINT(concurrency-mt-unsafe)
  return value;
}

// How to reach etcd, as the request and the environment say; the failure, said, as an exit code.
std::expected<fleet::Options, int> connection(const FleetRequest& fleet) {
  fleet::Options options;
  options.endpoints = fleet.endpoints;
  options.key_prefix = fleet.prefix;
  options.tls.ca_file = fleet.cacert;
  options.tls.cert_file = fleet.cert;
  options.tls.key_file = fleet.key;
  options.tls.insecure_skip_verify = fleet.insecure_skip_verify;
  if (fleet.insecure_skip_verify) {
    say(stderr,
        "pidlock: warning: --insecure-skip-verify: etcd's certificate and host name are not "
        "checked; anyone on the network path can pose as etcd (and read the password)\n");
  }
  options.user = fleet.user;
  // The command has no use for pidlock's password: it does not inherit it (nor a PIDLOCK_FILE
  // from an outer pidlock: this lock is not a file).
  const std::string environment_password = take_secret("PIDLOCK_ETCD_PASSWORD");
  ::unsetenv("PIDLOCK_FILE");  // NOLINT(concurrency-mt-unsafe): one thread here
  if (!fleet.password_file.empty()) {
    auto password = read_password(fleet.password_file);
    if (!password) return std::unexpected(password.error());
    options.password = std::move(*password);
  } else if (!fleet.user.empty()) {
    options.password = environment_password;
  }
  options.slots = fleet.slots;
  return options;
}

}  // namespace

int run_fleet(const RunRequest& request, const FleetRequest& fleet) {
  // Before anything is opened: the command inherits these, and no connection to etcd.
  const auto inherited = InheritedDescriptors::now();
  auto connected = connection(fleet);
  if (!connected) return connected.error();
  fleet::Options& options = *connected;
  options.ttl = std::chrono::seconds(fleet.ttl_seconds);
  options.wait = to_wait(request.wait_seconds);
  // The role and command go to etcd in a JSON record, which cannot hold bytes that are not UTF-8
  // (the encoder would throw on them); they only inform, so a U+FFFD for each stray byte will do.
  options.role = text::replace_invalid_utf8(request.role);
  options.command = text::replace_invalid_utf8(fmt::format("{}", fmt::join(request.command, " ")));
  // Renew every sixth of the TTL, each try giving up after a sixth: a renewal that fails, or a
  // member that hangs, still leaves time for another try before two thirds of the TTL pass.
  const auto sixth_of_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(options.ttl) / 6;
  options.request_timeout =
      std::min<std::chrono::milliseconds>(std::chrono::seconds(2), sixth_of_ttl);
  // A waiter retries while etcd does not answer; say so, once each way. Nothing else is said
  // while it waits, so no periodic report is wanted either: none cuts its watch short.
  options.progress_interval = std::chrono::nanoseconds::max();
  bool etcd_silent = false;
  options.on_wait = [&](const fleet::WaitProgress& progress) {
    if (progress.failure && !etcd_silent) {
      say(stderr, "{} — still waiting for the fleet lock {}\n", progress.failure->message(),
          text::for_terminal(request.file));
    } else if (!progress.failure && etcd_silent) {
      say(stderr, "pidlock: etcd answers again; waiting for the fleet lock {}\n",
          text::for_terminal(request.file));
    }
    etcd_silent = progress.failure.has_value();
  };
  auto slot = fleet::Slot::acquire(request.file, options);
  if (!slot) {
    // The library escapes what came out of etcd, as every message.
    say(stderr, "{}\n", slot.error().message());
    return exit_code_for(slot.error(), request.busy_exit_code);
  }
  // The fencing token, and which lock and slot it is for, for the command to hand on.
  if (!export_to_command("PIDLOCK_FENCE", std::to_string(slot->fence())) ||
      !export_to_command("PIDLOCK_NAME", request.file) ||
      !export_to_command("PIDLOCK_SLOT", std::to_string(slot->index()))) {
    return exit_code::os_error;
  }
  bool warned = false;
  const Watchdog watchdog{
      std::max<std::chrono::milliseconds>(std::chrono::milliseconds(100), sixth_of_ttl),
      [&]() {
        // A renewal that hung past two thirds of the TTL is no reason to wait for one more.
        if (slot->expired() && !fleet.warn_on_lease_loss) {
          say(stderr,
              "pidlock: lost the fleet lock {} (no renewal for two thirds of the TTL); sending "
              "SIGTERM to the command\n",
              text::for_terminal(request.file));
          return false;
        }
        auto renewed = slot->keep_alive();
        if (renewed) {
          if (warned) {
            say(stderr, "pidlock: etcd answers again; renewing the fleet lock {}\n",
                text::for_terminal(request.file));
          }
          warned = false;
          return true;
        }
        // Not yet past two thirds of the TTL, and the key still ours: try again next tick.
        if (!slot->expired() && !slot->lost()) return true;
        if (fleet.warn_on_lease_loss) {
          if (!warned) {
            say(stderr,
                "pidlock: warning: the fleet lock {} may be lost ({}); the command goes on\n",
                text::for_terminal(request.file), renewed.error().message());
          }
          warned = true;
          return true;
        }
        say(stderr, "pidlock: lost the fleet lock {} ({}); sending SIGTERM to the command\n",
            text::for_terminal(request.file), renewed.error().message());
        return false;
      },
      [&]() {
        // Known held: renewed (or granted) within two thirds of the TTL, and not found gone.
        if (!slot->expired() && !slot->lost()) return true;
        say(stderr,
            "pidlock: {}the fleet lock {} is no longer known to be held (no renewal for two "
            "thirds of the TTL) as the command starts{}\n",
            fleet.warn_on_lease_loss ? "warning: " : "", text::for_terminal(request.file),
            fleet.warn_on_lease_loss ? "; it goes on (--on-lease-loss warn)" : "");
        return fleet.warn_on_lease_loss;
      },
      exit_code_for(fleet::ErrorKind::lease_lost),
      [&]() -> std::chrono::nanoseconds {
        if (fleet.kill_after_seconds >= 0) return to_wait(fleet.kill_after_seconds);
        return slot->kill_after();
      }};
  const Ending ending = supervise(request.command, inherited, &watchdog);
  // A release etcd refused leaves the slot to expire with its lease: said, not hidden; the exit
  // status stays the command's.
  if (auto released = slot->revoke(); !released) say(stderr, "{}\n", released.error().message());
  return end_as(ending);
}

namespace {

json holder_json(const fleet::SlotHolder& h) {
  json object;
  object["slot"] = h.slot;
  put_text(object, "key", h.key);
  put_text(object, "host", h.host);
  object["pid"] = h.pid;
  put_text(object, "command", h.command);
  object["started_at"] = h.started_at;
  object["held_for_seconds"] = h.held_for.count();
  object["lease"] = std::to_string(h.lease);
  object["fence"] = h.fence;
  object["malformed"] = h.malformed;
  if (h.malformed) {
    put_text(object, "problem", h.problem);
    put_text(object, "raw", h.raw);
  }
  return object;
}

json waiter_json(const fleet::SlotWaiter& w) {
  json object;
  put_text(object, "host", w.host);
  object["pid"] = w.pid;
  put_text(object, "command", w.command);
  object["malformed"] = w.malformed;
  if (w.malformed) {
    put_text(object, "problem", w.problem);
    put_text(object, "raw", w.raw);
  }
  return object;
}

json status_json(const fleet::Status& found, bool full) {
  json holders = json::array();
  for (const auto& h : found.holders) holders.push_back(holder_json(h));
  json waiters = json::array();
  for (const auto& w : found.waiters) waiters.push_back(waiter_json(w));
  json object;
  put_text(object, "name", found.name);
  object["slots"] = found.slots;
  object["held"] = !found.holders.empty();
  object["full"] = full;
  object["holders"] = std::move(holders);
  object["waiters"] = std::move(waiters);
  put_text(object, "endpoint", found.endpoint);
  return object;
}

// Hosts and commands are whatever each holder wrote into etcd: shown escaped, as in status. A
// malformed record's raw value is escaped already (printable ASCII, \xNN for the rest): shown as
// it is, not escaped twice.
void print_human(const fleet::Status& found) {
  say(stdout, "fleet lock {}: {} of {} slots held (etcd {})\n", text::for_terminal(found.name),
      found.holders.size(), found.slots, text::for_terminal(found.endpoint));
  for (const auto& h : found.holders) {
    const std::string advice = fleet::removal_hint(h);
    if (h.malformed) {
      say(stdout, "  slot {}: malformed record ({}): {}{}\n", h.slot, text::for_terminal(h.problem),
          h.raw, advice.empty() ? "" : "\n    " + advice);
      continue;
    }
    say(stdout, "  slot {}: {}, fence {}{}\n", h.slot, fleet::describe(h), h.fence,
        advice.empty() ? "" : "\n    " + advice);
  }
  for (const auto& w : found.waiters) {
    if (w.malformed) {
      say(stdout, "  waiting: malformed record ({}): {}\n", text::for_terminal(w.problem), w.raw);
      continue;
    }
    say(stdout, "  waiting: pid {} on {}{}\n", w.pid, text::for_terminal(w.host),
        w.command.empty() ? "" : ": " + text::for_terminal(w.command));
  }
}

}  // namespace

int status_fleet(const StatusRequest& request, const FleetRequest& fleet) {
  auto connected = connection(fleet);
  if (!connected) return connected.error();
  const fleet::Options& options = *connected;
  auto found = fleet::inspect(request.file, options);
  if (!found) {
    say(stderr, "{}\n", found.error().message());
    return exit_code_for(found.error());
  }
  const bool full = static_cast<int>(found->holders.size()) >= found->slots;
  if (request.json) {
    say(stdout, "{}\n", dump_json(status_json(*found, full)));
  } else {
    print_human(*found);
  }
  return full ? exit_code::busy : exit_code::ok;
}

}  // namespace pidlock::cli
