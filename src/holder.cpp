#include "holder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

#include "record.hpp"
#include "sys.hpp"

namespace pidlock::holder {
namespace {

using namespace std::chrono;

// /proc/locks lists every lock on the machine; tens of thousands of entries still fit.
constexpr std::size_t proc_locks_limit = std::size_t{64} << 20;
constexpr std::size_t small_proc_file_limit = std::size_t{64} * 1024;

struct KernelLocks {
  bool held = false;
  std::vector<pid_t> lockers;  // pids that took the granted flock (the kernel's record)
  std::vector<pid_t> waiters;
};

void keep_first_of_each(std::vector<pid_t>& pids) {
  std::vector<pid_t> unique;
  for (const pid_t pid : pids) {
    if (std::find(unique.begin(), unique.end(), pid) == unique.end()) unique.push_back(pid);
  }
  pids = std::move(unique);
}

void collect_kernel_locks(const std::string& text, const proc::FileId& file, KernelLocks& out) {
  proc::for_each_lock_line(text, [&](const proc::LockLine& line) {
    if (line.kind != proc::LockKind::flock || line.file != file) return;
    if (line.blocked) {
      out.waiters.push_back(line.pid);
    } else {
      out.held = true;
      if (line.pid > 0) out.lockers.push_back(line.pid);
    }
  });
}

struct KernelView {
  KernelLocks locks;
  bool consistent = true;  // the list came in one read(), so it is one snapshot
};

// /proc/locks comes one page per read(), and a lock taken or dropped anywhere on the machine
// between two reads shifts the rest of the list: an entry is then listed twice or not at all.
// One lock's entry, with the waiters it blocks, is always written whole within one read, so a
// list in pieces that shows the lock is right about it, and entries seen twice count once.
//
// Only the entry that would have opened a page can be skipped, and where pages begin depends
// on how much the first read() asks for: the kernel fills the reader's first request, keeps the
// rest of that record for the next read, and starts every later page where the one before it
// ended. A second look that first asks for half a page moves every boundary by half a page.
constexpr std::size_t whole_page_first = 4096;
constexpr std::size_t half_page_first = 2048;

std::expected<KernelView, std::error_code> read_kernel_locks_once(const proc::FileId& file,
                                                                  std::size_t first_read) {
  auto snapshot = sys::read_proc_file(AT_FDCWD, "/proc/locks", proc_locks_limit, first_read);
  if (!snapshot) return std::unexpected(snapshot.error());
  KernelView out;
  out.consistent = snapshot->reads <= 1;
  collect_kernel_locks(snapshot->text, file, out.locks);
  keep_first_of_each(out.locks.lockers);
  keep_first_of_each(out.locks.waiters);
  return out;
}

// The kernel's list, looked at a second time with the pages cut elsewhere when the first look
// came in pieces and did not show the lock.
std::expected<KernelView, std::error_code> read_kernel_locks(const proc::FileId& file) {
  auto view = read_kernel_locks_once(file, whole_page_first);
  if (!view || view->locks.held || view->consistent) return view;
  auto second = read_kernel_locks_once(file, half_page_first);
  if (!second || second->locks.held) return second;
  return view;
}

sys::UniqueFd open_proc_dir(int proc_root, const char* name) {
  return sys::UniqueFd(::openat(proc_root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

sys::UniqueFd open_pid_dir(pid_t pid) {
  std::array<char, 32> path{"/proc/"};
  std::to_chars(path.data() + 6, path.data() + path.size() - 1, pid);
  return open_proc_dir(AT_FDCWD, path.data());
}

enum class Confirmation { holds, does_not, denied };

bool fdinfo_shows_lock(int fdinfo_dir, const char* fd_name, const proc::FileId& file) {
  auto text = sys::read_file_at(fdinfo_dir, fd_name, small_proc_file_limit);
  if (!text) return false;
  const auto info = proc::parse_fdinfo(*text);
  return std::any_of(info.locks.begin(), info.locks.end(), [&](const proc::LockLine& lock) {
    return lock.kind == proc::LockKind::flock && !lock.blocked && lock.file == file;
  });
}

// Whether one of the process's descriptors is an open file description holding the flock. The
// fdinfo "lock:" lines list the locks owned by that very description, so a process that merely
// has the file open, or a recycled PID, does not pass.
Confirmation confirm_holds(int pid_dir, const proc::FileId& file) {
  sys::UniqueFd fd_dir(::openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) return errno == EACCES || errno == EPERM ? Confirmation::denied
                                                        : Confirmation::does_not;
  sys::UniqueFd fdinfo_dir(::openat(pid_dir, "fdinfo", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fdinfo_dir) return errno == EACCES || errno == EPERM ? Confirmation::denied
                                                            : Confirmation::does_not;
  DIR* listing = ::fdopendir(fd_dir.get());
  if (listing == nullptr) return Confirmation::does_not;
  const int listing_fd = fd_dir.release();  // closedir() closes it now
  Confirmation result = Confirmation::does_not;
  // readdir() is thread-safe on a stream no other thread uses, as each of ours is.
  while (const dirent* entry = ::readdir(listing)) {  // NOLINT(concurrency-mt-unsafe)
    if (entry->d_name[0] == '.') continue;
    struct stat st {};
    if (::fstatat(listing_fd, entry->d_name, &st, 0) != 0) continue;  // closed meanwhile
    if (file_id(st) != file) continue;
    if (fdinfo_shows_lock(fdinfo_dir.get(), entry->d_name, file)) {
      result = Confirmation::holds;
      break;
    }
  }
  ::closedir(listing);
  return result;
}

nanoseconds boot_clock_now() {
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  return seconds(now.tv_sec) + nanoseconds(now.tv_nsec);
}

std::string user_name(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  std::array<char, 4096> buffer{};
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return {};
  }
  return found->pw_name;
}

// Fills in what /proc says of the process. Each read goes through the pid directory opened
// before confirming the holder, so a PID recycled meanwhile reads as gone instead of as
// somebody else.
void describe(int pid_dir, Holder& holder) {
  if (auto stat = sys::read_file_at(pid_dir, "stat", small_proc_file_limit)) {
    if (auto fields = proc::parse_stat(*stat)) {
      holder.command = fields->command;
      const auto ticks_per_second = ::sysconf(_SC_CLK_TCK);
      if (ticks_per_second > 0) {
        holder.started_since_boot = duration_cast<nanoseconds>(
            duration<double>(static_cast<double>(fields->start_ticks) /
                             static_cast<double>(ticks_per_second)));
      }
    }
  }
  if (auto cmdline = sys::read_file_at(pid_dir, "cmdline", small_proc_file_limit)) {
    holder.cmdline = proc::parse_cmdline(*cmdline);
  }
  if (auto status = sys::read_file_at(pid_dir, "status", small_proc_file_limit)) {
    holder.uid = proc::parse_status_euid(*status);
    if (holder.uid) holder.user = user_name(*holder.uid);
  }
}

seconds held_for(const Holder& holder, const Hints& hints) {
  const nanoseconds age = std::max(nanoseconds(0), boot_clock_now() - holder.started_since_boot);
  if (holder.record_agrees && hints.record_mtime) {
    // The record is written right after locking, so its mtime dates the lock, unless it is older
    // than the process (a record that happens to name a recycled PID).
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const nanoseconds since_write = (seconds(now.tv_sec) + nanoseconds(now.tv_nsec)) -
                                    (seconds(hints.record_mtime->tv_sec) +
                                     nanoseconds(hints.record_mtime->tv_nsec));
    if (since_write >= nanoseconds(0) && since_write <= age) {
      return duration_cast<seconds>(since_write);
    }
  }
  return duration_cast<seconds>(age);
}

Holder make_holder(pid_t pid, int pid_dir, bool inspectable, const Hints& hints) {
  Holder holder;
  holder.pid = pid;
  holder.inspectable = inspectable;
  describe(pid_dir, holder);
  holder.record_agrees = hints.recorded_pid == pid;
  holder.held_for = held_for(holder, hints);
  return holder;
}

bool all_digits(const char* name) {
  if (*name == '\0') return false;
  for (; *name != '\0'; ++name) {
    if (*name < '0' || *name > '9') return false;
  }
  return true;
}

// Every live process we may inspect that holds the flock: the slow path, taken only when the
// process that took the lock is gone and an inherited descriptor keeps it alive.
std::vector<Holder> scan_all_processes(const proc::FileId& file, const Hints& hints) {
  std::vector<Holder> found;
  DIR* proc_root = ::opendir("/proc");
  if (proc_root == nullptr) return found;
  const int root_fd = ::dirfd(proc_root);
  while (const dirent* entry = ::readdir(proc_root)) {  // NOLINT(concurrency-mt-unsafe): private stream
    if (!all_digits(entry->d_name)) continue;
    const auto pid_dir = open_proc_dir(root_fd, entry->d_name);
    if (!pid_dir) continue;
    if (confirm_holds(pid_dir.get(), file) != Confirmation::holds) continue;
    pid_t pid = 0;
    std::from_chars(entry->d_name, entry->d_name + std::strlen(entry->d_name), pid);
    found.push_back(make_holder(pid, pid_dir.get(), true, hints));
  }
  ::closedir(proc_root);
  // Oldest first: the original locker's descendants before anything that joined later.
  std::sort(found.begin(), found.end(), [](const Holder& a, const Holder& b) {
    return a.started_since_boot < b.started_since_boot;
  });
  return found;
}

std::vector<Holder> confirmed_lockers(const KernelLocks& locks, const proc::FileId& file,
                                      const Hints& hints, bool& any_gone) {
  std::vector<Holder> holders;
  for (const pid_t pid : locks.lockers) {
    const auto pid_dir = open_pid_dir(pid);
    if (!pid_dir) {
      any_gone = true;
      continue;
    }
    switch (confirm_holds(pid_dir.get(), file)) {
      case Confirmation::holds:
        holders.push_back(make_holder(pid, pid_dir.get(), true, hints));
        break;
      case Confirmation::denied:
        // The kernel names it and we may not look closer: report it as such, never guess.
        holders.push_back(make_holder(pid, pid_dir.get(), false, hints));
        break;
      case Confirmation::does_not:
        any_gone = true;
        break;
    }
  }
  return holders;
}

std::vector<Waiter> describe_waiters(const std::vector<pid_t>& pids) {
  std::vector<Waiter> waiters;
  for (const pid_t pid : pids) {
    Waiter waiter;
    waiter.pid = pid;
    const auto pid_dir = open_pid_dir(pid);
    if (pid_dir) {
      if (auto stat = sys::read_file_at(pid_dir.get(), "stat", small_proc_file_limit)) {
        if (auto fields = proc::parse_stat(*stat)) {
          waiter.inspectable = true;
          waiter.command = fields->command;
          waiter.parent = fields->parent;
        }
      }
    }
    waiters.push_back(std::move(waiter));
  }
  return waiters;
}

}  // namespace

proc::FileId file_id(const struct stat& st) noexcept {
  return {::major(st.st_dev), ::minor(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// The record's word, checked against the kernel: when the recorded process's own descriptors
// show the lock, it holds it, whatever /proc/locks would add. /proc/locks costs time in
// proportion to every lock on the machine; this costs time in proportion to one process's
// descriptors, so the usual busy path stays flat on a machine full of locks.
std::optional<Holder> confirmed_record(const proc::FileId& file, const Hints& hints) {
  if (!hints.recorded_pid) return std::nullopt;
  const auto pid_dir = open_pid_dir(*hints.recorded_pid);
  if (!pid_dir || confirm_holds(pid_dir.get(), file) != Confirmation::holds) return std::nullopt;
  return make_holder(*hints.recorded_pid, pid_dir.get(), true, hints);
}

std::expected<Discovery, std::error_code> discover(const proc::FileId& file, const Hints& hints,
                                                   Query query) {
  if (query == Query::holder_of_busy_lock) {
    if (auto holder = confirmed_record(file, hints)) {
      Discovery out;
      out.held = true;
      out.holders.push_back(std::move(*holder));
      return out;
    }
  }
  auto view = read_kernel_locks(file);
  if (!view) return std::unexpected(view.error());
  const KernelLocks& locks = view->locks;
  Discovery out;
  out.held = locks.held;
  if (out.held) {
    bool any_gone = locks.lockers.empty();
    out.holders = confirmed_lockers(locks, file, hints, any_gone);
    if (out.holders.empty() && any_gone) out.holders = scan_all_processes(file, hints);
    if (query == Query::status) out.waiters = describe_waiters(locks.waiters);
  } else if (query == Query::holder_of_busy_lock && !view->consistent) {
    // Our own attempt was refused a moment ago and two cuts of the list missed the lock (or it
    // was released since): the processes' own descriptors settle it.
    out.holders = scan_all_processes(file, hints);
    out.held = !out.holders.empty();
  }
  return out;
}

}  // namespace pidlock::holder
