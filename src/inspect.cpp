// A read-only report on a lock file: never creates, writes or locks anything.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <array>
#include <charconv>

#include "filesystem.hpp"
#include "holder.hpp"
#include "pidlock/pidlock.hpp"
#include "record.hpp"
#include "sys.hpp"

namespace pidlock {
namespace {

namespace fs = std::filesystem;

// The record, read through a fresh read-only descriptor for the inode we already hold by O_PATH,
// so that what we read belongs to the file we stat'ed, and opening it cannot block or have the
// side effects of opening a device.
std::optional<std::string> read_record(int path_fd) {
  std::array<char, 32> self{"/proc/self/fd/"};
  std::to_chars(self.data() + 14, self.data() + self.size() - 1, path_fd);
  sys::UniqueFd fd(::open(self.data(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return std::nullopt;
  auto text = sys::read_fd(fd.get(), record::read_limit);
  if (!text) return std::nullopt;
  return *text;
}

Record classify_record(const std::optional<std::string>& text, const Status& status) {
  if (!text) return Record::unreadable;
  if (record::blank(*text)) return Record::absent;
  if (!status.recorded_pid) return Record::unreadable;
  if (!status.held) return Record::previous;
  const bool names_holder = std::any_of(status.holders.begin(), status.holders.end(),
                                        [&](const Holder& h) { return h.pid == *status.recorded_pid; });
  if (names_holder) return Record::agrees;
  // Held, but we could not see who holds it: the record cannot be checked either way.
  return status.holders.empty() ? Record::unverified : Record::stale;
}

void note_filesystem(const fs::path& where, Status& status) {
  struct statfs info {};
  if (::statfs(where.c_str(), &info) != 0) return;
  const auto kind = filesystem::classify(static_cast<long>(info.f_type));
  status.filesystem = kind.name;
  if (auto warning = filesystem::warning(kind)) status.warnings.push_back(*warning);
}

// A directory others may write to lets them plant a file, FIFO or symlink at the lock path
// before we create it. acquire() refuses all but a regular file, but a file planted by another
// user is theirs to hold or delete.
void note_parent(const fs::path& path, Status& status) {
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0 || (st.st_mode & S_IWOTH) == 0) return;
  status.warnings.push_back(
      "the directory " + parent.string() + " is writable by others" +
      ((st.st_mode & S_ISVTX) != 0
           ? " (sticky: they cannot replace the lock file, but can create it first and own it)"
           : ": they can replace or remove the lock file"));
}

}  // namespace

std::expected<Status, Error> inspect(const fs::path& path) {
  Status status;
  status.path = path;
  if (path.empty()) {
    return std::unexpected(Error::failure("open", path, std::make_error_code(std::errc::no_such_file_or_directory)));
  }
  sys::UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno != ENOENT) return std::unexpected(Error::failure("open", path, sys::last_error()));
    note_parent(path, status);
    return status;  // no file: nobody holds it
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return std::unexpected(Error::failure("fstat", path, sys::last_error()));
  }
  if (S_ISLNK(st.st_mode)) {
    return std::unexpected(Error::failure("open", path, std::error_code(ELOOP, std::system_category()),
                                          "is a symbolic link; refusing to follow it"));
  }
  if (!S_ISREG(st.st_mode)) {
    return std::unexpected(Error::failure("open", path, std::make_error_code(std::errc::invalid_argument),
                                          "not a regular file"));
  }
  status.exists = true;

  const auto text = read_record(fd.get());
  holder::Hints hints;
  if (text) hints.recorded_pid = record::parse(*text);
  hints.record_mtime = st.st_mtim;
  status.recorded_pid = hints.recorded_pid;

  auto found = holder::discover(holder::file_id(st), hints, holder::Query::status);
  if (!found) return std::unexpected(Error::failure("read", "/proc/locks", found.error()));
  status.held = found->held;
  status.holders = std::move(found->holders);
  if (!status.holders.empty()) status.holder = status.holders.front();
  status.waiters = std::move(found->waiters);
  status.record = classify_record(text, status);

  note_filesystem(path, status);
  note_parent(path, status);
  return status;
}

}  // namespace pidlock
