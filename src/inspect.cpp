// A read-only report on a lock file: never creates or writes anything.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <functional>

#include "escape.hpp"
#include "fstype.hpp"
#include "holder.hpp"
#include "lock_file.hpp"
#include "pidlock/pidlock.hpp"
#include "record.hpp"
#include "sys.hpp"

namespace pidlock {
namespace {

namespace fs = std::filesystem;

std::array<char, 32> proc_self_fd(int fd) {
  std::array<char, 32> path{"/proc/self/fd/"};
  std::to_chars(path.data() + 14, path.data() + path.size() - 1, fd);
  return path;
}

// A fresh read-only descriptor for the inode we already hold by O_PATH, so that what we read
// belongs to the file we stat'ed, and opening it cannot block or have the side effects of
// opening a device. Without /proc, the path is opened again and must still name that inode.
sys::UniqueFd reopen_read_only(int path_fd, const fs::path& path, const struct stat& st) {
  constexpr int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  sys::UniqueFd fd(::open(proc_self_fd(path_fd).data(), flags));
  if (!fd && errno == ENOENT) fd.reset(::open(path.c_str(), flags | O_NOFOLLOW));
  struct stat now {};
  if (!fd || ::fstat(fd.get(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    return {};
  }
  return fd;
}

// What the file holds: a lock file's text (its record, or junk), or why there is none to read.
struct Content {
  std::optional<std::string> text;  // only a lock file's
  bool readable = true;             // false: this process may not read the file
  bool data = false;                // not a lock file (record.hpp's rule), left alone
};

// The mode and size tell a file that is data without reading it, even one we may not read.
Content read_record(int fd, const struct stat& st) {
  if (record::data_by_mode_or_size(st.st_mode, st.st_size)) return {std::nullopt, true, true};
  if (fd < 0) return {std::nullopt, false, false};
  auto text = sys::read_fd(fd, record::read_limit);
  if (!text) return {std::nullopt, false, false};
  if (!record::holds_lock_file_text(*text)) return {std::nullopt, true, true};
  return {std::move(*text), true, false};
}

// Whether a lock of this kind would be refused now: try for it without waiting, and drop it at
// once if it came. The lock exists for the few microseconds between the two calls.
std::optional<bool> probe_refuses(int fd, int operation) {
  if (fd < 0) return std::nullopt;
  if (::flock(fd, operation | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return false;
  }
  if (errno == EWOULDBLOCK) return true;
  return std::nullopt;
}

Record classify_record(const Content& content, const Status& status) {
  if (content.data) return Record::not_a_lock_file;
  if (!content.readable || !content.text) return Record::not_readable;
  if (record::blank(*content.text)) return Record::absent;
  if (!status.recorded_pid) return Record::unreadable;
  if (!status.held) return Record::previous;
  const auto& holders = status.holders;
  if (std::any_of(holders.begin(), holders.end(),
                  [](const Holder& h) { return h.record_agrees; })) {
    return Record::agrees;
  }
  const bool names_unchecked = std::any_of(holders.begin(), holders.end(), [&](const Holder& h) {
    return !h.verified() && h.pid == *status.recorded_pid;
  });
  const bool any_verified =
      std::any_of(holders.begin(), holders.end(), [](const Holder& h) { return h.verified(); });
  // Held, but by someone we could not check: the record cannot be checked either way.
  return any_verified && !names_unchecked ? Record::stale : Record::unverified;
}

std::string user_or_uid(uid_t uid) {
  const std::string name = sys::user_name(uid);
  return name.empty() ? "uid " + std::to_string(uid) : text::for_terminal(name);
}

std::string octal_mode(mode_t mode) {
  std::array<char, 8> text{};
  (void)std::snprintf(text.data(), text.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return text.data();
}

// flock works on any descriptor, read-only too: whoever may open the file may hold the lock.
void note_access(const struct stat& st, Status& status) {
  if ((st.st_mode & 0066) == 0) return;
  const char* who = (st.st_mode & 0006) != 0 ? "every user" : "its group's members";
  status.warnings.push_back(std::string(who) + " may open the lock file (mode " +
                            octal_mode(st.st_mode) + ", owner " + user_or_uid(st.st_uid) +
                            ") and so hold the lock, stalling everyone who needs it");
}

// A directory others may write to lets them plant a file, FIFO or symlink at the lock path
// before we create it. acquire() refuses all but a regular file, but a file planted by another
// user is theirs to hold or delete.
void note_parent(const fs::path& path, Status& status) {
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0 || (st.st_mode & S_IWOTH) == 0) return;
  status.warnings.push_back(
      "the directory " + text::for_terminal(parent.string()) + " is writable by others" +
      ((st.st_mode & S_ISVTX) != 0
           ? " (sticky: they cannot replace the lock file, but can create it first and own it)"
           : ": they can replace or remove the lock file"));
}

// Why the kernel's list and the descriptors we may read could not tell held from free.
std::string why_probed(const holder::Discovery& found, bool hidden) {
  if (found.list_unreadable) return "/proc is not available";
  if (hidden) return "the kernel's lock list cannot show every holder in this PID namespace";
  return "the kernel's lock list did not show the lock, which does not prove it free, and not "
         "every process's descriptors may be read here to prove it";
}

// How often the kernel's list is read again for a lock a probe found held before its holders are
// looked for among the processes' descriptors instead (and its waiters go unlisted). A read skips
// a given lock only while the list shifts across a page's edge: one in twenty reads under the
// heaviest churn the tests make, so eight more make a miss a rarity, at a few list reads' cost.
constexpr int list_looks_for_a_held_lock = 8;

// The kernel answers for itself: a non-blocking lock on a read-only descriptor, dropped at once.
void settle_by_probe(int read_fd, const holder::Discovery& found, Status& status,
                     const std::function<holder::Discovery()>& find_in_list,
                     const std::function<std::vector<Holder>()>& find_holders,
                     const std::function<std::optional<std::vector<Holder>>()>& find_every_holder) {
  const bool hidden = holder::holders_may_be_hidden();
  const auto held = probe_refuses(read_fd, LOCK_EX);
  if (!held && !found.list_unreadable) {
    // No probe (the file may not be opened): every process's descriptors, if all may be read.
    if (auto every = find_every_holder()) {
      status.evidence = Evidence::kernel;
      status.held = !every->empty();
      status.holders = std::move(*every);
      status.shared = std::all_of(status.holders.begin(), status.holders.end(),
                                  [](const Holder& h) { return h.shared; }) &&
                      status.held;
      return;
    }
  }
  if (!held) {
    status.evidence = Evidence::none;
    status.held = false;
    status.holders.clear();
    status.warnings.push_back("cannot tell whether the lock is held: " + why_probed(found, hidden) +
                              ", and the lock file may not be opened to ask the kernel directly");
    return;
  }
  status.evidence = Evidence::probe;
  status.held = *held;
  if (!*held) {
    status.holders.clear();
    if (hidden || found.list_unreadable) {
      status.warnings.push_back(
          "the kernel's lock list cannot show every holder here: a probe (a non-blocking lock, "
          "dropped at once) told that the lock is free");
    }
    return;
  }
  if (found.list_unreadable) {
    status.warnings.push_back("/proc is not available: the holder cannot be named or verified");
    return;
  }
  if (!hidden && !found.scanned) {
    // Held, so in the kernel's list, which skipped it: it names holders and waiters at once.
    auto listed = find_in_list();
    if (listed.held == holder::Held::yes) {
      status.evidence = Evidence::kernel;
      status.holders = std::move(listed.holders);
      status.waiters = std::move(listed.waiters);
      status.readers = listed.readers;
      status.shared = listed.readers > 0;
      return;
    }
  }
  // Readers let a shared lock through; a writer does not.
  status.shared = probe_refuses(read_fd, LOCK_SH) == false;
  if (!found.scanned && status.holders.empty()) status.holders = find_holders();
  const bool any_verified = std::any_of(status.holders.begin(), status.holders.end(),
                                        [](const Holder& h) { return h.verified(); });
  if (hidden && !any_verified) {
    status.warnings.push_back(
        "the lock is held by a process this PID namespace cannot see (outside our container)");
  } else if (status.holders.empty()) {
    status.warnings.push_back(
        "the lock is held by a process whose descriptors we may not read, and the kernel's lock "
        "list did not name it");
  }
}

}  // namespace

std::expected<Status, Error> inspect(const fs::path& path) {
  Status status;
  status.path = path;
  if (path.empty()) {
    return std::unexpected(
        Error::failure(ErrorKind::not_found, "open", path, sys::errno_code(ENOENT)));
  }
  sys::UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno != ENOENT)
      return std::unexpected(
          Error::failure(ErrorKind::cannot_open, "open", path, sys::last_error()));
    note_parent(path, status);
    return status;  // no file: nobody holds it
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return std::unexpected(
        Error::failure(ErrorKind::cannot_open, "fstat", path, sys::last_error()));
  }
  const auto kind = fstype::of_descriptor(fd.get());
  if (auto unfit = lock_file::refuse(path, st, kind)) return std::unexpected(std::move(*unfit));
  status.exists = true;
  status.owner = st.st_uid;
  status.mode = st.st_mode & 07777;

  const auto read_fd = reopen_read_only(fd.get(), path, st);
  const auto content = read_record(read_fd.get(), st);
  const auto hints = holder::hints_from(content.text, st);
  status.recorded_pid = hints.recorded_pid;

  auto found = holder::discover(fd.get(), st, hints, holder::Query::status);
  status.held = found.held == holder::Held::yes;
  status.holders = std::move(found.holders);
  status.waiters = std::move(found.waiters);
  status.readers = found.readers;
  status.shared = found.readers > 0;
  if (found.held == holder::Held::maybe) {
    settle_by_probe(
        read_fd.get(), found, status,
        [&] { return holder::discover_listed(fd.get(), st, hints, list_looks_for_a_held_lock); },
        [&] { return holder::holders_by_descriptors(fd.get(), st, hints); },
        [&] { return holder::every_holder_by_descriptors(fd.get(), st, hints); });
  }
  if (!status.holders.empty()) status.holder = status.holders.front();
  status.record = classify_record(content, status);

  if (kind) {
    status.filesystem = kind->name;
    if (auto warning = fstype::warning(*kind)) status.warnings.push_back(*warning);
  }
  note_access(st, status);
  note_parent(path, status);
  return status;
}

}  // namespace pidlock
