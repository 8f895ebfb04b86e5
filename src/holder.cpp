// Holder discovery: who holds a lock file's flock, from /proc/locks and the processes' fdinfo.
#include "holder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "process_info.hpp"
#include "record.hpp"
#include "sys.hpp"

namespace pidlock::holder {
namespace {

// /proc/locks lists every lock on the machine; tens of thousands of entries still fit.
constexpr std::size_t proc_locks_limit = std::size_t{64} << 20;

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
  bool whole = false;  // the list came whole from one moment: a lock it does not show was free
};

// /proc/locks is a seq_file: each read() returns what the kernel wrote into one buffer (a page,
// more only for a record that alone does not fit) while it held the lock list, and the next
// read() resumes at the next entry *by index*. A lock's entry, with the waiters it blocks, is
// written whole within one read, so a list that shows the lock is right about it: the lock was
// held when that read was made (entries seen twice, when locks were taken between reads, count
// once). A list that does not show it is proof only if it came whole from one read:
//   - between two reads, locks dropped ahead of an entry move it back across the cut, and it is
//     listed by neither read; a full page followed by an empty read is such a list, cut once;
//   - a read ends where the list ends or where the next record does not fit the page, and
//     nothing tells the two apart but the room left: a record grows with every waiter the lock
//     blocks, one line and one column deeper each (a lock with 100 waiters is one 10.7 KB
//     record, and was seen after a first read of 1.6 KB). A read that left half a page unused
//     ended the list unless the next record outgrew half a page: a lock with 30 waiters in line.
// So a list that shows the lock settles "held"; nothing settles "free" but a probe or the
// processes' own descriptors (see settle_unlisted()). Whether it came whole from one read still
// tells a deferring reader whether to look twice for a waiting writer (exclusive_waiters()).
bool came_whole(const sys::ProcText& list) {
  static const auto page = static_cast<std::size_t>(std::max(::sysconf(_SC_PAGESIZE), 4096L));
  return list.reads == 0 || (list.reads == 1 && list.first_read < page / 2);
}

std::expected<KernelView, std::error_code> read_kernel_locks(const proc::FileId& file) {
  auto snapshot = sys::read_proc_file(AT_FDCWD, "/proc/locks", proc_locks_limit);
  if (!snapshot) return std::unexpected(snapshot.error());
  KernelView out;
  out.whole = came_whole(*snapshot);
  collect_kernel_locks(snapshot->text, file, out.locks);
  keep_first_of_each(out.locks.lockers);
  keep_first_of_each(out.locks.waiters);
  return out;
}

// A lock known to be held is in the kernel's list; a reading that skipped it was taken while the
// list shifted. Reads it again, up to `looks` times: the first reading that shows the lock, if
// any does.
std::optional<KernelLocks> listed_again(const proc::FileId& file, int looks) {
  for (int look = 0; look < looks; ++look) {
    auto again = read_kernel_locks(file);
    if (again && again->locks.held) return std::move(again->locks);
  }
  return std::nullopt;
}

sys::UniqueFd open_proc_dir(int proc_root, const char* name) {
  return sys::UniqueFd(::openat(proc_root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

enum class Confirmation { holds_exclusive, holds_shared, does_not, denied };

// Whether the open file description behind descriptor `fd_name` holds a flock, and in which
// mode. Its fdinfo's "lock:" lines list only the locks owned by that very description on its own
// file, so once the descriptor is known to be ours, a granted FLOCK line there is our lock.
Confirmation fdinfo_shows_flock(int pid_dir, const char* fd_name) {
  const std::string fdinfo = std::string("fdinfo/") + fd_name;
  auto text = sys::read_file_at(pid_dir, fdinfo.c_str(), sys::small_proc_file_limit);
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

// A process whose descriptors we may not list is "denied"; one that exited meanwhile holds
// nothing any more.
Confirmation denied_or_not() {
  return errno == EACCES || errno == EPERM ? Confirmation::denied : Confirmation::does_not;
}

// Whether one of the process's descriptors is an open file description holding the flock on
// our file. The descriptor is matched by stat (which, through /proc/<pid>/fd, reports what our
// own stat of the path does, on every filesystem) and the lock by its fdinfo, so a process that
// merely has the file open, a recycled PID, or another file with the same kernel name does not
// pass. `pid_dir` pins the process: a PID recycled meanwhile reads as gone, not as another.
Confirmation confirm_holds(int pid_dir, const FileIdentity& file) {
  sys::UniqueFd fd_dir(::openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) return denied_or_not();
  DIR* listing = ::fdopendir(fd_dir.get());
  if (listing == nullptr) return Confirmation::does_not;
  const int listing_fd = fd_dir.release();  // closedir() closes it now
  Confirmation result = Confirmation::does_not;
  bool denied = false;  // a descriptor we may list but not follow (a process that may not be
                        // traced: another user's, a non-dumpable one, or one an LSM guards)
  // readdir() is thread-safe on a stream no other thread uses, as each of ours is.
  while (const dirent* entry = ::readdir(listing)) {  // NOLINT(concurrency-mt-unsafe)
    if (entry->d_name[0] == '.') continue;
    struct stat st {};
    if (::fstatat(listing_fd, entry->d_name, &st, 0) != 0) {
      denied = denied || denied_or_not() == Confirmation::denied;
      continue;  // or closed meanwhile
    }
    if (st.st_dev != file.dev || st.st_ino != file.inode) continue;
    result = fdinfo_shows_flock(pid_dir, entry->d_name);
    if (holds(result)) break;
  }
  ::closedir(listing);
  return denied && !holds(result) ? Confirmation::denied : result;
}

std::optional<pid_t> pid_named(const char* name) {
  if (*name < '1' || *name > '9') return std::nullopt;
  pid_t pid = 0;
  const char* end = name + std::strlen(name);
  const auto [stop, ec] = std::from_chars(name, end, pid);
  if (ec != std::errc{} || stop != end) return std::nullopt;
  return pid;
}

void oldest_first(std::vector<Holder>& holders) {
  std::stable_sort(holders.begin(), holders.end(), [](const Holder& a, const Holder& b) {
    return a.started_since_boot < b.started_since_boot;
  });
}

// Holders found by their descriptors, and whether the search could see every process.
struct Scan {
  std::vector<Holder> holders;
  // Every process's descriptors could be listed, init's among them: no other user's process,
  // hidepid or ptrace rule kept one from us. Then finding nobody means nobody holds the lock.
  bool complete = true;
};

// Every live process we may inspect that holds the flock: every process sharing the locked
// description (a `pidlock run`, its command and the command's children), or, when the process
// that took the lock is gone, those an inherited descriptor keeps it alive in. It reads every
// process's descriptors, so its cost grows with the machine: for a lock the kernel's list does
// not show, or whose listed locker is gone or cannot be checked.
Scan scan_all_processes(const FileIdentity& file, const Hints& hints) {
  Scan out;
  DIR* proc_root = ::opendir("/proc");
  if (proc_root == nullptr) {
    out.complete = false;
    return out;
  }
  bool saw_init = false;  // hidepid hides processes from the listing itself, init first
  const int root_fd = ::dirfd(proc_root);
  while (const dirent* entry =
             ::readdir(proc_root)) {  // NOLINT(concurrency-mt-unsafe): private stream
    const auto pid = pid_named(entry->d_name);
    if (!pid) continue;
    const auto pid_dir = open_proc_dir(root_fd, entry->d_name);
    if (!pid_dir) {
      if (errno == EACCES || errno == EPERM) out.complete = false;
      continue;  // exited since the listing
    }
    const auto confirmation = confirm_holds(pid_dir.get(), file);
    if (confirmation == Confirmation::denied) {
      out.complete = false;
      continue;
    }
    saw_init = saw_init || *pid == 1;
    if (!holds(confirmation)) continue;
    out.holders.push_back(process_info::make_holder(*pid, pid_dir.get(), Verification::verified,
                                                    confirmation == Confirmation::holds_shared,
                                                    hints));
  }
  ::closedir(proc_root);
  out.complete = out.complete && saw_init;
  // Oldest first: the original locker's descendants before anything that joined later.
  oldest_first(out.holders);
  return out;
}

// The PIDs a process's threads forked, from /proc/<pid>/task/<tid>/children; nothing when the
// kernel keeps no such list (CONFIG_PROC_CHILDREN) or the process is gone.
std::optional<std::vector<pid_t>> children_of(int pid_dir) {
  sys::UniqueFd task_dir(::openat(pid_dir, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!task_dir) return std::nullopt;
  DIR* tasks = ::fdopendir(task_dir.get());
  if (tasks == nullptr) return std::nullopt;
  const int tasks_fd = task_dir.release();  // closedir() closes it now
  std::optional<std::vector<pid_t>> children(std::in_place);
  while (const dirent* entry = ::readdir(tasks)) {  // NOLINT(concurrency-mt-unsafe): private
    if (!pid_named(entry->d_name)) continue;
    const std::string path = std::string(entry->d_name) + "/children";
    auto text = sys::read_file_at(tasks_fd, path.c_str(), sys::small_proc_file_limit);
    if (text) {
      const auto forked = proc::parse_children(*text);
      children->insert(children->end(), forked.begin(), forked.end());
      continue;
    }
    // A thread that exited forks no more; a live one without the file: the kernel keeps none.
    const bool thread_lives = ::faccessat(tasks_fd, entry->d_name, F_OK, 0) == 0;
    if (thread_lives && text.error() == std::errc::no_such_file_or_directory) {
      children.reset();
      break;
    }
  }
  ::closedir(tasks);
  return children;
}

// Every process sharing the lock among the descendants of the verified lockers: where fork(),
// flock(1) and `pidlock run` put them (a descendant may inherit the descriptor from a parent
// that closed it since, so the whole tree is walked). Its cost grows with the lock's own
// process tree, not with the machine. Nothing when the kernel keeps no children lists.
std::optional<std::vector<Holder>> sharers_among_descendants(const std::vector<pid_t>& lockers,
                                                             const FileIdentity& file,
                                                             const Hints& hints) {
  std::vector<Holder> found;
  std::vector<pid_t> seen = lockers;
  std::vector<pid_t> parents = lockers;
  while (!parents.empty()) {
    const pid_t parent = parents.back();
    parents.pop_back();
    const auto parent_dir = sys::open_pid_dir(parent);
    if (!parent_dir) continue;  // exited: its children, reparented, are no longer in this tree
    auto children = children_of(parent_dir.get());
    if (!children) return std::nullopt;
    for (const pid_t child : *children) {
      if (std::find(seen.begin(), seen.end(), child) != seen.end()) continue;
      seen.push_back(child);
      parents.push_back(child);
      const auto child_dir = sys::open_pid_dir(child);
      if (!child_dir) continue;
      const auto confirmation = confirm_holds(child_dir.get(), file);
      if (!holds(confirmation)) continue;
      found.push_back(process_info::make_holder(child, child_dir.get(), Verification::verified,
                                                confirmation == Confirmation::holds_shared, hints));
    }
  }
  oldest_first(found);
  return found;
}

// What became of one PID the kernel's list names as having taken the lock.
struct Locker {
  std::optional<Holder> holder;  // verified, or reported with why it could not be
  bool gone = false;             // exited, or no longer (or never) holding our file
};

Locker examine_locker(const Entry& entry, const FileIdentity& file, const Hints& hints) {
  const pid_t pid = entry.pid;
  const auto pid_dir = sys::open_pid_dir(pid);
  if (!pid_dir) {
    // Gone, or hidden from us by hidepid: only a signal of 0 tells them apart.
    if (::kill(pid, 0) != 0 && errno == ESRCH) return {std::nullopt, true};
    return {process_info::unseen_holder(pid, Verification::hidden, entry.shared), false};
  }
  switch (const auto confirmation = confirm_holds(pid_dir.get(), file)) {
    case Confirmation::holds_exclusive:
    case Confirmation::holds_shared:
      return {process_info::make_holder(pid, pid_dir.get(), Verification::verified,
                                        confirmation == Confirmation::holds_shared, hints),
              false};
    case Confirmation::denied: {
      // The kernel names it and we may not look closer: report it as such, never as verified.
      auto holder = process_info::make_holder(pid, pid_dir.get(), Verification::other_user,
                                              entry.shared, hints);
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
  waiters.reserve(entries.size());
  for (const Entry& entry : entries)
    waiters.push_back(process_info::make_waiter(entry.pid, entry.shared));
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
  const auto pid_dir = sys::open_pid_dir(*hints.recorded_pid);
  // Only an exclusive holder writes the record; readers are counted from the kernel's list.
  if (!pid_dir || confirm_holds(pid_dir.get(), file) != Confirmation::holds_exclusive) {
    return std::nullopt;
  }
  return process_info::make_holder(*hints.recorded_pid, pid_dir.get(), Verification::verified,
                                   false, hints);
}

// What the lockers the kernel lists turned out to be.
struct Lockers {
  std::vector<pid_t> verified;
  bool gone = false;       // one exited or no longer holds: its descriptor lives on elsewhere
  bool unchecked = false;  // one is hidden from us or may not be checked
};

// Every process sharing the lock, beyond the lockers the kernel lists. Status finds them among
// the verified lockers' descendants, at a cost that grows with the lock's own process tree;
// among every process only when a listed locker is gone (the lock lives on in a descriptor it
// left to someone), hidden or cannot be checked, or the kernel keeps no children lists. The busy
// path wants one holder: it scans only when no locker could be confirmed and one is gone.
void add_sharers(const Lockers& lockers, const FileIdentity& file, const Hints& hints, Query query,
                 Discovery& out) {
  if (query == Query::holder_of_busy_lock) {
    if (!lockers.verified.empty() || !lockers.gone) return;
  } else if (!lockers.gone && !lockers.unchecked) {
    if (auto descendants = sharers_among_descendants(lockers.verified, file, hints)) {
      for (auto& sharer : *descendants) add_unless_listed(out.holders, std::move(sharer));
      return;
    }
  }
  if (out.scanned) return;
  out.scanned = true;
  for (auto& sharer : scan_all_processes(file, hints).holders)
    add_unless_listed(out.holders, std::move(sharer));
}

// Holders from the kernel's list: the verified lockers first, then the processes sharing the
// lock with them (see add_sharers()), then lockers we could not check.
void collect_holders(const KernelLocks& locks, const FileIdentity& file, const Hints& hints,
                     Query query, Discovery& out) {
  std::vector<Holder> unchecked;
  Lockers lockers;
  lockers.gone = locks.lockers.empty();
  out.readers = static_cast<std::size_t>(std::count_if(locks.lockers.begin(), locks.lockers.end(),
                                                       [](const Entry& e) { return e.shared; }));
  for (const Entry& entry : locks.lockers) {
    auto locker = examine_locker(entry, file, hints);
    lockers.gone = lockers.gone || locker.gone;
    if (!locker.holder) continue;
    if (locker.holder->verified()) {
      lockers.verified.push_back(locker.holder->pid);
      out.holders.push_back(std::move(*locker.holder));
    } else {
      lockers.unchecked = true;
      unchecked.push_back(std::move(*locker.holder));
    }
  }
  add_sharers(lockers, file, hints, query, out);
  const bool verified_any = !out.holders.empty();
  // On a shared kernel name an unverifiable locker may hold another file: the caller settles it.
  out.held = verified_any || !file.kernel_name_shared ? Held::yes : Held::maybe;
  for (auto& holder : unchecked) add_unless_listed(out.holders, std::move(holder));
}

void settle_from_list(const KernelLocks& locks, const FileIdentity& file, const Hints& hints,
                      Query query, Discovery& out) {
  collect_holders(locks, file, hints, query, out);
  if (query == Query::status) out.waiters = describe_waiters(locks.waiters);
}

// Held by the processes a scan found, while the list did not show it: the list, read again, may
// give the waiters and the readers' count.
void settle_from_scan(std::vector<Holder> holders, const FileIdentity& file, Query query,
                      Discovery& out) {
  out.held = Held::yes;
  out.holders = std::move(holders);
  if (query != Query::status) return;
  if (const auto again = listed_again(file.kernel, 1)) {
    out.waiters = describe_waiters(again->waiters);
    out.readers = static_cast<std::size_t>(std::count_if(
        again->lockers.begin(), again->lockers.end(), [](const Entry& e) { return e.shared; }));
  } else if (std::any_of(out.holders.begin(), out.holders.end(),
                         [](const Holder& h) { return h.shared; })) {
    out.readers = 1;  // at least one reader's lock: the list would have counted them
  }
}

// The kernel's list did not show the lock, which does not prove it free (see
// read_kernel_locks()): the processes' own descriptors settle it. A scan that could list every
// process's descriptors and found none holding the lock proves it free, without touching it.
// One that could not (another user's processes, hidepid, a PID namespace that hides the
// holders, a process an LSM guards) leaves it to the caller's probe; the busy path, which has
// none, looks at the list again.
void settle_unlisted(const FileIdentity& file, const Hints& hints, Query query, Discovery& out) {
  const bool hidden = holders_may_be_hidden();
  if (query == Query::status && !hidden) {
    // The probe settles it in microseconds, where a scan costs time in proportion to the machine
    // (and proves nothing where a process may not be read): probe first, and ask the descriptors
    // only for the names of the holders of a lock found held, or when the probe cannot be made.
    out.held = Held::maybe;
    return;
  }
  auto scan = scan_all_processes(file, hints);
  out.scanned = true;
  if (!scan.holders.empty()) {
    settle_from_scan(std::move(scan.holders), file, query, out);
    return;
  }
  if (scan.complete && !hidden) return;  // free
  if (!hidden && query == Query::holder_of_busy_lock) {
    // The holder is in the list, which skipped its entry (or it was released since). Status
    // has its probe instead: a free lock's list, read again, would only cost as much again.
    if (const auto again = listed_again(file.kernel, 2)) {
      settle_from_list(*again, file, hints, query, out);
      return;
    }
  }
  out.held = Held::maybe;
  if (hidden && hints.recorded_pid) {
    out.holders.push_back(
        process_info::unseen_holder(*hints.recorded_pid, Verification::outside_namespace));
  }
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
  const std::string fdinfo_path = std::string("/proc/self/fdinfo/") + sys::decimal(fd).data();
  auto fdinfo = sys::read_file_at(AT_FDCWD, fdinfo_path.c_str(), sys::small_proc_file_limit);
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

std::vector<pid_t> exclusive_waiters(const proc::FileId& file) {
  std::vector<pid_t> found;
  for (int look = 0; look < 2 && found.empty(); ++look) {
    const auto list = read_kernel_locks(file);
    if (!list) return found;
    for (const Entry& waiter : list->locks.waiters) {
      if (!waiter.shared) found.push_back(waiter.pid);
    }
    if (list->whole) break;  // one moment's list: none means none
  }
  return found;
}

Discovery discover_listed(int fd, const struct stat& st, const Hints& hints, int looks) {
  Discovery out;
  out.held = Held::maybe;
  const FileIdentity file = identify(fd, st);
  if (const auto listed = listed_again(file.kernel, looks)) {
    settle_from_list(*listed, file, hints, Query::status, out);
  }
  return out;
}

std::vector<Holder> holders_by_descriptors(int fd, const struct stat& st, const Hints& hints) {
  return scan_all_processes(identify(fd, st), hints).holders;
}

std::optional<std::vector<Holder>> every_holder_by_descriptors(int fd, const struct stat& st,
                                                               const Hints& hints) {
  if (holders_may_be_hidden()) return std::nullopt;
  auto scan = scan_all_processes(identify(fd, st), hints);
  if (!scan.complete && scan.holders.empty()) return std::nullopt;
  return std::move(scan.holders);
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
  const auto list = read_kernel_locks(file.kernel);
  if (!list) {
    out.list_unreadable = true;
    out.held = Held::maybe;
    if (hints.recorded_pid)
      out.holders.push_back(
          process_info::unseen_holder(*hints.recorded_pid, Verification::no_proc));
    return out;
  }
  if (list->locks.held) {
    settle_from_list(list->locks, file, hints, query, out);
  } else {
    // The list's silence is never an answer (see read_kernel_locks()): refused a moment ago, the
    // busy path knows the lock was held; status confirms a free lock with a probe. In a container
    // the list also hides locks taken outside it and those whose taker died.
    settle_unlisted(file, hints, query, out);
  }
  return out;
}

}  // namespace pidlock::holder
