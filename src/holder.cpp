#include "holder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
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

// One line of the kernel's list for our file: who took the lock or waits, and in which mode.
struct Entry {
  pid_t pid = 0;
  bool shared = false;  // READ: a shared (reader) lock
  friend bool operator==(const Entry&, const Entry&) = default;
};

struct KernelLocks {
  bool held = false;
  std::vector<Entry> lockers;  // who took each granted flock (the kernel's record)
  std::vector<Entry> waiters;
};

// Entries listed twice by a list that shifted between pages count once. (Two readers of one
// process, on two descriptions, are then counted as one.)
void keep_first_of_each(std::vector<Entry>& entries) {
  std::vector<Entry> unique;
  for (const Entry& entry : entries) {
    if (std::find(unique.begin(), unique.end(), entry) == unique.end()) unique.push_back(entry);
  }
  entries = std::move(unique);
}

void collect_kernel_locks(const std::string& text, const proc::FileId& file, KernelLocks& out) {
  proc::for_each_lock_line(text, [&](const proc::LockLine& line) {
    if (line.kind != proc::LockKind::flock || line.file != file) return;
    const Entry entry{line.pid, !line.write};
    if (line.blocked) {
      out.waiters.push_back(entry);
    } else {
      out.held = true;
      if (line.pid > 0) out.lockers.push_back(entry);
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
// ended. Each further look first asks for half as much as the one before, which moves every
// boundary: an entry skipped by all three is one that churn pushed to a page start each time.
constexpr std::array<std::size_t, 3> first_reads{4096, 2048, 1024};

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

// The kernel's list, looked at again with the pages cut elsewhere while it came in pieces and
// did not show the lock.
std::expected<KernelView, std::error_code> read_kernel_locks(const proc::FileId& file) {
  std::expected<KernelView, std::error_code> view;
  for (const std::size_t first_read : first_reads) {
    view = read_kernel_locks_once(file, first_read);
    if (!view || view->locks.held || view->consistent) return view;
  }
  return view;
}

sys::UniqueFd open_proc_dir(int proc_root, const char* name) {
  return sys::UniqueFd(::openat(proc_root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

std::array<char, 32> decimal(pid_t pid) {
  std::array<char, 32> text{};
  std::to_chars(text.data(), text.data() + text.size() - 1, pid);
  return text;
}

sys::UniqueFd open_pid_dir(pid_t pid) {
  std::array<char, 32> path{"/proc/"};
  std::to_chars(path.data() + 6, path.data() + path.size() - 1, pid);
  return open_proc_dir(AT_FDCWD, path.data());
}

enum class Confirmation { holds_exclusive, holds_shared, does_not, denied };

// Whether the open file description behind this fdinfo holds a flock, and in which mode. Its
// "lock:" lines list only the locks owned by that very description on its own file, so once the
// descriptor is known to be ours, a granted FLOCK line there is our lock.
Confirmation fdinfo_shows_flock(int fdinfo_dir, const char* fd_name) {
  auto text = sys::read_file_at(fdinfo_dir, fd_name, small_proc_file_limit);
  if (!text) return Confirmation::does_not;
  for (const auto& lock : proc::parse_fdinfo(*text).locks) {
    if (lock.kind != proc::LockKind::flock || lock.blocked) continue;
    return lock.write ? Confirmation::holds_exclusive : Confirmation::holds_shared;
  }
  return Confirmation::does_not;
}

bool holds(Confirmation c) {
  return c == Confirmation::holds_exclusive || c == Confirmation::holds_shared;
}

Confirmation denied_or_not() {
  return errno == EACCES || errno == EPERM ? Confirmation::denied : Confirmation::does_not;
}

// Whether one of the process's descriptors is an open file description holding the flock on
// our file. The descriptor is matched by stat (which, through /proc/<pid>/fd, reports what our
// own stat of the path does, on every filesystem) and the lock by its fdinfo, so a process that
// merely has the file open, a recycled PID, or another file with the same kernel name does not
// pass.
Confirmation confirm_holds(int pid_dir, const FileIdentity& file) {
  sys::UniqueFd fd_dir(::openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) return denied_or_not();
  sys::UniqueFd fdinfo_dir(::openat(pid_dir, "fdinfo", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fdinfo_dir) return denied_or_not();
  DIR* listing = ::fdopendir(fd_dir.get());
  if (listing == nullptr) return Confirmation::does_not;
  const int listing_fd = fd_dir.release();  // closedir() closes it now
  Confirmation result = Confirmation::does_not;
  // readdir() is thread-safe on a stream no other thread uses, as each of ours is.
  while (const dirent* entry = ::readdir(listing)) {  // NOLINT(concurrency-mt-unsafe)
    if (entry->d_name[0] == '.') continue;
    struct stat st {};
    if (::fstatat(listing_fd, entry->d_name, &st, 0) != 0) continue;  // closed meanwhile
    if (st.st_dev != file.dev || st.st_ino != file.inode) continue;
    result = fdinfo_shows_flock(fdinfo_dir.get(), entry->d_name);
    if (holds(result)) break;
  }
  ::closedir(listing);
  return result;
}

nanoseconds clock_now(clockid_t clock) {
  timespec now{};
  ::clock_gettime(clock, &now);
  return seconds(now.tv_sec) + nanoseconds(now.tv_nsec);
}

nanoseconds to_nanoseconds(const timespec& t) { return seconds(t.tv_sec) + nanoseconds(t.tv_nsec); }

// The command a `pidlock run` holder runs: its first child's argv.
std::vector<std::string> command_run_by(int pid_dir, pid_t pid) {
  const std::string children_path = std::string("task/") + decimal(pid).data() + "/children";
  auto children = sys::read_file_at(pid_dir, children_path.c_str(), small_proc_file_limit);
  if (!children) return {};
  pid_t child = 0;
  const char* begin = children->data();
  const auto [end, ec] = std::from_chars(begin, begin + children->size(), child);
  if (ec != std::errc{} || end == begin) return {};
  const auto child_dir = open_pid_dir(child);
  if (!child_dir) return {};
  auto cmdline = sys::read_file_at(child_dir.get(), "cmdline", small_proc_file_limit);
  return cmdline ? proc::parse_cmdline(*cmdline) : std::vector<std::string>{};
}

bool is_pidlock(const std::string& command) {
  return command == "pidlock" || command == "pidlock-fleet";
}

// Fills in what /proc says of the process. Each read goes through the pid directory opened
// before confirming the holder, so a PID recycled meanwhile reads as gone instead of as
// somebody else. Returns its PIDs in nested namespaces, innermost last.
std::vector<pid_t> describe(int pid_dir, Holder& holder) {
  std::vector<pid_t> namespace_pids;
  if (auto stat = sys::read_file_at(pid_dir, "stat", small_proc_file_limit)) {
    if (auto fields = proc::parse_stat(*stat)) {
      holder.inspectable = true;
      holder.command = fields->command;
      const auto ticks_per_second = ::sysconf(_SC_CLK_TCK);
      if (ticks_per_second > 0) {
        holder.started_since_boot = duration_cast<nanoseconds>(duration<double>(
            static_cast<double>(fields->start_ticks) / static_cast<double>(ticks_per_second)));
      }
    }
  }
  if (auto cmdline = sys::read_file_at(pid_dir, "cmdline", small_proc_file_limit)) {
    holder.cmdline = proc::parse_cmdline(*cmdline);
  }
  if (auto status = sys::read_file_at(pid_dir, "status", small_proc_file_limit)) {
    auto fields = proc::parse_status(*status);
    holder.uid = fields.euid;
    if (holder.uid) holder.user = sys::user_name(*holder.uid);
    namespace_pids = std::move(fields.namespace_pids);
  }
  if (holder.verified() && is_pidlock(holder.command))
    holder.runs = command_run_by(pid_dir, holder.pid);
  return namespace_pids;
}

// Whether the process started after the record was written: then it cannot be the one that
// wrote it, and a record naming its PID names an earlier process of the same number. Start
// times have clock-tick resolution, and the clocks are compared across a conversion.
bool started_after_record(const Holder& holder, const Hints& hints) {
  if (!hints.record_mtime || holder.started_since_boot == nanoseconds(0)) return false;
  const nanoseconds boot_in_realtime = clock_now(CLOCK_REALTIME) - clock_now(CLOCK_BOOTTIME);
  const nanoseconds started = boot_in_realtime + holder.started_since_boot;
  constexpr auto tolerance = milliseconds(20);
  return started > to_nanoseconds(*hints.record_mtime) + tolerance;
}

seconds held_for(const Holder& holder, const Hints& hints) {
  if (!holder.inspectable) return seconds(0);
  const nanoseconds age =
      std::max(nanoseconds(0), clock_now(CLOCK_BOOTTIME) - holder.started_since_boot);
  if (holder.record_agrees && hints.record_mtime) {
    // The record is written right after locking, so its mtime dates the lock, unless it is older
    // than the process (a record that happens to name a recycled PID).
    const nanoseconds since_write = clock_now(CLOCK_REALTIME) - to_nanoseconds(*hints.record_mtime);
    if (since_write >= nanoseconds(0) && since_write <= age) {
      return duration_cast<seconds>(since_write);
    }
  }
  return duration_cast<seconds>(age);
}

Holder make_holder(pid_t pid, int pid_dir, Verification verification, bool shared,
                   const Hints& hints) {
  Holder holder;
  holder.pid = pid;
  holder.shared = shared;
  holder.verification = verification;
  holder.is_caller = pid == ::getpid();
  const auto namespace_pids = describe(pid_dir, holder);
  const bool record_names_it =
      hints.recorded_pid &&
      (*hints.recorded_pid == pid ||
       (namespace_pids.size() > 1 && *hints.recorded_pid == namespace_pids.back()));
  if (!holder.verified() && record_names_it && started_after_record(holder, hints)) {
    // The kernel's list keeps the PID of the process that took the lock; that process is gone
    // and its number now belongs to a newer one, which must not be shown as the holder.
    Holder reused;
    reused.pid = pid;
    reused.shared = shared;
    reused.verification = Verification::pid_reused;
    return reused;
  }
  holder.record_agrees = holder.verified() && !holder.shared && record_names_it;
  holder.foreign_user = holder.uid && hints.file_owner && *holder.uid != *hints.file_owner;
  holder.held_for = held_for(holder, hints);
  return holder;
}

// A holder that only the record (or the kernel's bare list) names: we cannot see the real one.
Holder unseen_holder(pid_t pid, Verification why, bool shared = false) {
  Holder holder;
  holder.pid = pid;
  holder.shared = shared;
  holder.verification = why;
  return holder;
}

bool all_digits(const char* name) {
  if (*name == '\0') return false;
  for (; *name != '\0'; ++name) {
    if (*name < '0' || *name > '9') return false;
  }
  return true;
}

// Every live process we may inspect that holds the flock: every process sharing the locked
// description (a `pidlock run`, its command and the command's children), or, when the process
// that took the lock is gone, those an inherited descriptor keeps it alive in.
std::vector<Holder> scan_all_processes(const FileIdentity& file, const Hints& hints) {
  std::vector<Holder> found;
  DIR* proc_root = ::opendir("/proc");
  if (proc_root == nullptr) return found;
  const int root_fd = ::dirfd(proc_root);
  while (const dirent* entry =
             ::readdir(proc_root)) {  // NOLINT(concurrency-mt-unsafe): private stream
    if (!all_digits(entry->d_name)) continue;
    const auto pid_dir = open_proc_dir(root_fd, entry->d_name);
    if (!pid_dir) continue;
    const auto confirmation = confirm_holds(pid_dir.get(), file);
    if (!holds(confirmation)) continue;
    pid_t pid = 0;
    std::from_chars(entry->d_name, entry->d_name + std::strlen(entry->d_name), pid);
    found.push_back(make_holder(pid, pid_dir.get(), Verification::verified,
                                confirmation == Confirmation::holds_shared, hints));
  }
  ::closedir(proc_root);
  // Oldest first: the original locker's descendants before anything that joined later.
  std::sort(found.begin(), found.end(), [](const Holder& a, const Holder& b) {
    return a.started_since_boot < b.started_since_boot;
  });
  return found;
}

// What became of one PID the kernel's list names as having taken the lock.
struct Locker {
  std::optional<Holder> holder;  // verified, or reported with why it could not be
  bool gone = false;             // exited, or no longer (or never) holding our file
};

Locker examine_locker(const Entry& entry, const FileIdentity& file, const Hints& hints) {
  const pid_t pid = entry.pid;
  const auto pid_dir = open_pid_dir(pid);
  if (!pid_dir) {
    // Gone, or hidden from us by hidepid: only a signal of 0 tells them apart.
    if (::kill(pid, 0) != 0 && errno == ESRCH) return {std::nullopt, true};
    return {unseen_holder(pid, Verification::hidden, entry.shared), false};
  }
  switch (const auto confirmation = confirm_holds(pid_dir.get(), file)) {
    case Confirmation::holds_exclusive:
    case Confirmation::holds_shared:
      return {make_holder(pid, pid_dir.get(), Verification::verified,
                          confirmation == Confirmation::holds_shared, hints),
              false};
    case Confirmation::denied: {
      // The kernel names it and we may not look closer: report it as such, never as verified.
      auto holder = make_holder(pid, pid_dir.get(), Verification::other_user, entry.shared, hints);
      const bool reused = holder.verification == Verification::pid_reused;
      return {std::move(holder), reused};
    }
    case Confirmation::does_not:
      break;
  }
  return {std::nullopt, true};
}

void add_unless_listed(std::vector<Holder>& holders, Holder holder) {
  const bool listed = std::any_of(holders.begin(), holders.end(),
                                  [&](const Holder& h) { return h.pid == holder.pid; });
  if (!listed) holders.push_back(std::move(holder));
}

std::vector<Waiter> describe_waiters(const std::vector<Entry>& entries) {
  std::vector<Waiter> waiters;
  for (const Entry& entry : entries) {
    const pid_t pid = entry.pid;
    Waiter waiter;
    waiter.pid = pid;
    waiter.shared = entry.shared;
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

FileIdentity stat_identity(const struct stat& st) {
  FileIdentity id;
  id.dev = st.st_dev;
  id.inode = st.st_ino;
  id.kernel = {::major(st.st_dev), ::minor(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
  return id;
}

// The record's word, checked against the kernel: when the recorded process's own descriptors
// show the lock, it holds it, whatever /proc/locks would add. /proc/locks costs time in
// proportion to every lock on the machine; this costs time in proportion to one process's
// descriptors, so the usual busy path stays flat on a machine full of locks.
std::optional<Holder> confirmed_record(const FileIdentity& file, const Hints& hints) {
  if (!hints.recorded_pid) return std::nullopt;
  const auto pid_dir = open_pid_dir(*hints.recorded_pid);
  // Only an exclusive holder writes the record; readers are counted from the kernel's list.
  if (!pid_dir || confirm_holds(pid_dir.get(), file) != Confirmation::holds_exclusive) {
    return std::nullopt;
  }
  return make_holder(*hints.recorded_pid, pid_dir.get(), Verification::verified, false, hints);
}

// Holders from the kernel's list: the verified lockers first, then every process sharing the
// lock when asked for all or when no locker could be confirmed, then lockers we could not check.
void collect_holders(const KernelLocks& locks, const FileIdentity& file, const Hints& hints,
                     Query query, Discovery& out) {
  std::vector<Holder> unchecked;
  bool any_gone = locks.lockers.empty();
  out.readers = static_cast<std::size_t>(std::count_if(locks.lockers.begin(), locks.lockers.end(),
                                                       [](const Entry& e) { return e.shared; }));
  for (const Entry& entry : locks.lockers) {
    auto locker = examine_locker(entry, file, hints);
    any_gone = any_gone || locker.gone;
    if (!locker.holder) continue;
    if (locker.holder->verified()) {
      out.holders.push_back(std::move(*locker.holder));
    } else {
      unchecked.push_back(std::move(*locker.holder));
    }
  }
  const bool confirmed = !out.holders.empty();
  if (query == Query::status || (!confirmed && any_gone)) {
    for (auto& sharer : scan_all_processes(file, hints))
      add_unless_listed(out.holders, std::move(sharer));
  }
  const bool verified_any = !out.holders.empty();
  // On a shared kernel name an unverifiable locker may hold another file: the caller settles it.
  out.held = verified_any || !file.kernel_name_shared ? Held::yes : Held::maybe;
  for (auto& holder : unchecked) add_unless_listed(out.holders, std::move(holder));
}

}  // namespace

Hints hints_from(const std::optional<std::string>& record_text, const struct stat& st) {
  Hints hints;
  if (record_text) hints.recorded_pid = record::parse(*record_text);
  hints.record_mtime = st.st_mtim;
  hints.file_owner = st.st_uid;
  return hints;
}

FileIdentity identify(int fd, const struct stat& st) {
  FileIdentity id = stat_identity(st);
  const std::string fdinfo_path = std::string("/proc/self/fdinfo/") + decimal(fd).data();
  auto fdinfo = sys::read_file_at(AT_FDCWD, fdinfo_path.c_str(), small_proc_file_limit);
  if (!fdinfo) return id;
  const auto info = proc::parse_fdinfo(*fdinfo);
  if (info.inode) id.kernel.inode = *info.inode;
  if (!info.mount_id) return id;
  auto mounts = sys::read_file_at(AT_FDCWD, "/proc/self/mountinfo", proc_locks_limit);
  if (!mounts) return id;
  if (const auto device = proc::mount_device(*mounts, *info.mount_id)) {
    id.kernel.major = device->major;
    id.kernel.minor = device->minor;
  }
  id.kernel_name_shared = id.kernel.major != ::major(st.st_dev) ||
                          id.kernel.minor != ::minor(st.st_dev) ||
                          id.kernel.inode != static_cast<std::uint64_t>(st.st_ino);
  return id;
}

bool holders_may_be_hidden() {
  // The initial PID namespace has a fixed inode number (PROC_PID_INIT_INO in the kernel's
  // include/linux/proc_ns.h); /proc/self resolves only through a /proc of our own namespace
  // or an ancestor's.
  constexpr ino_t initial_pid_namespace = 0xEFFFFFFCU;
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return true;
  return st.st_ino != initial_pid_namespace;
}

std::optional<pid_t> writer_waiting(int fd, const struct stat& st) {
  auto view = read_kernel_locks(identify(fd, st).kernel);
  if (!view) return std::nullopt;
  for (const Entry& waiter : view->locks.waiters) {
    if (!waiter.shared) return waiter.pid;
  }
  return std::nullopt;
}

std::vector<Holder> sharers(int fd, const struct stat& st, const Hints& hints) {
  return scan_all_processes(identify(fd, st), hints);
}

Discovery discover(int fd, const struct stat& st, const Hints& hints, Query query) {
  Discovery out;
  if (query == Query::holder_of_busy_lock) {
    if (auto holder = confirmed_record(stat_identity(st), hints)) {
      out.held = Held::yes;
      out.holders.push_back(std::move(*holder));
      return out;
    }
  }
  const FileIdentity file = identify(fd, st);
  auto view = read_kernel_locks(file.kernel);
  if (!view) {
    out.list_unreadable = true;
    out.held = Held::maybe;
    if (hints.recorded_pid)
      out.holders.push_back(unseen_holder(*hints.recorded_pid, Verification::no_proc));
    return out;
  }
  const KernelLocks& locks = view->locks;
  if (locks.held) {
    collect_holders(locks, file, hints, query, out);
    if (query == Query::status) out.waiters = describe_waiters(locks.waiters);
    return out;
  }
  if (!view->consistent && query == Query::holder_of_busy_lock) {
    // Our own attempt was refused a moment ago and every cut of the list missed the lock (or it
    // was released since): the processes' own descriptors settle it. For status, which on a
    // machine whose list spans pages sees a free lock's list "in pieces" every time, neither a
    // scan nor a probe is worth it: three cuts that all miss a held lock's entry take churn that
    // pushes it to a page start three times running (see docs/guarantees.md).
    out.holders = scan_all_processes(file, hints);
    if (!out.holders.empty()) out.held = Held::yes;
  }
  if (out.held == Held::no && holders_may_be_hidden()) {
    out.held = Held::maybe;
    if (hints.recorded_pid) {
      out.holders.push_back(unseen_holder(*hints.recorded_pid, Verification::outside_namespace));
    }
  }
  return out;
}

}  // namespace pidlock::holder
