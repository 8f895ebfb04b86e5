// pidlock — the exclusive PID lock for Linux.
//
// One process at a time holds the lock on a file. The lock is an exclusive flock(2) on the file,
// so it frees itself when the holder dies (the kernel drops it with the last descriptor) and it
// interoperates with util-linux flock(1) and every other flock user. The file also records the
// holder's PID, as "<pid>\n", for humans; that record is only a hint: who holds the lock is asked
// of the kernel (/proc/locks and /proc/<pid>/fdinfo), and the kernel wins where they differ.
//
//   auto lock = pidlock::Lock::acquire(state_dir / pidlock::default_lock_file);
//   if (!lock) {
//     std::cerr << lock.error().message() << '\n';
//     // "another installer is running (pid 4242, nftban-installer, for 3m12s) — lock file: …"
//     return lock.error().held() ? 75 : 1;  // EX_TEMPFAIL when busy
//   }
//   … mutate the state …                // released by ~Lock, or by lock->release()
//
// Nothing in this library throws, installs signal handlers or keeps global state; every call is
// safe from any thread. Guarantees, and the tests that prove them: docs/guarantees.md.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace pidlock {

// The recommended file name for an installer's lock, inside its state directory.
inline constexpr std::string_view default_lock_file = "installer.lock";

// Pass as Options::wait to wait as long as it takes.
inline constexpr std::chrono::nanoseconds wait_forever = std::chrono::nanoseconds::max();

// Why a holder could not be verified (Holder::verification).
enum class Verification {
  verified,           // one of its own descriptors holds the lock (/proc/<pid>/fdinfo)
  other_user,         // the kernel names it, but its descriptors are another user's to read
  hidden,             // /proc hides the process from us (mounted with hidepid)
  pid_reused,         // the kernel names a PID that now belongs to a process started after
                      // the lock was taken: the locker is gone, a descendant holds the lock
  outside_namespace,  // only the record names it: the holder is outside our PID namespace
  no_proc,            // only the record names it: /proc is not available
};

// "verified", "other_user", "hidepid", "pid_reused", "pid_namespace", "no_proc".
std::string_view to_string(Verification verification) noexcept;

// A process that holds the lock, as the kernel reports it.
struct Holder {
  pid_t pid = 0;  // in our PID namespace; for outside_namespace/no_proc, as the record says
  // Whether the kernel confirmed it: `verified` means one of the process's own open file
  // descriptions holds the lock, so neither a forged record nor a recycled PID can pass. Anything
  // else names the PID that the kernel's lock list (or, failing that, the record) gives, and why
  // it could not be checked; such a holder is never presented as verified.
  Verification verification = Verification::verified;
  // False when /proc would not tell us about this process. Only `pid` is then known; the rest is
  // empty rather than guessed.
  bool inspectable = false;
  std::string command;               // the kernel's short name (/proc/<pid>/comm), e.g. "apt-get"
  std::vector<std::string> cmdline;  // argv as the process sees it now
  // When the holder is `pidlock run`, the command it runs (its child's argv): what an operator
  // wants to see.
  std::vector<std::string> runs;
  std::optional<uid_t> uid;  // effective uid
  std::string user;          // its name, or empty when the uid has no passwd entry
  // Its uid is not the lock file's owner's. flock works on a read-only descriptor, so anyone who
  // may open the file can hold the lock; this says someone other than the owner does.
  bool foreign_user = false;
  bool is_caller = false;  // the calling process itself (another of its descriptors)
  bool shared = false;     // holds a shared (reader) lock, not the exclusive one
  // When the process started, since boot (CLOCK_BOOTTIME). Together with `pid` it names the
  // process uniquely: a recycled PID has a later start time.
  std::chrono::nanoseconds started_since_boot{0};
  // How long it has held the lock, where that can be known: since the record was written, when
  // the record agrees (it is written right after locking) and is not older than the process.
  // Otherwise since the process started: its age, which describe() then calls "running for".
  std::chrono::seconds held_for{0};
  // The file's record names this process (its PID here, or in its own PID namespace).
  bool record_agrees = false;

  bool verified() const noexcept { return verification == Verification::verified; }
};

// A process blocked waiting for the lock (the "->" entries of /proc/locks).
struct Waiter {
  pid_t pid = 0;
  bool inspectable = false;
  std::string command;
  pid_t parent = 0;     // pidlock's own timed waits block in a helper child: this is who it serves
  bool shared = false;  // waits for a shared (reader) lock
};

// What the file's record says, compared with the kernel.
enum class Record {
  absent,      // no file, or an empty (or blank) file: e.g. a flock(1) user's lock
  agrees,      // names a process that holds the lock
  stale,       // names a process that does not hold it, while others do: the kernel wins
  unverified,  // names a PID, the lock is held, and we may not see by whom
  previous,    // the lock is free; names its last holder
  unreadable,  // not a PID: junk (a word, negative, zero, overlong) in what is still a lock file
  // Not a lock file: the file holds somebody's data or is executable (the rule: Lock::acquire).
  // pidlock locks such a file as flock(1) does and never writes to it; it has no record.
  not_a_lock_file,
  not_readable,  // the file may not be read by this process (its permissions)
};

// "absent", "agrees", "stale", "unverified", "previous", "unreadable", "not_a_lock_file",
// "not_readable": the JSON spelling.
std::string_view to_string(Record record) noexcept;

// How inspect() told held from free.
enum class Evidence {
  kernel,  // the kernel's lock list (/proc/locks), holders confirmed through their fdinfo
  // The kernel's list cannot show us every holder: our PID namespace is not the initial one (the
  // kernel hides locks of processes outside it), /proc is missing, or the file's kernel name is
  // shared with other files (btrfs subvolumes) and its holder cannot be verified. A
  // non-blocking flock on a read-only descriptor, dropped at once, told held from free.
  probe,
  none,  // neither could tell (the probe may not open the file): `held` is false, but unknown
};

// "kernel", "probe", "none": the JSON spelling.
std::string_view to_string(Evidence evidence) noexcept;

// A read-only report on a lock file: see inspect().
struct Status {
  std::filesystem::path path;
  bool exists = false;
  bool held = false;
  Evidence evidence = Evidence::kernel;
  bool known() const noexcept { return evidence != Evidence::none; }
  std::optional<Holder> holder;       // the primary holder: the kernel's locker while it lives
  std::vector<Holder> holders;        // every live process sharing the locked description
  std::optional<pid_t> recorded_pid;  // what the file says, parsed
  Record record = Record::absent;
  std::vector<Waiter> waiters;
  // Held by readers (shared locks) rather than by one exclusive holder.
  bool shared = false;
  std::size_t readers = 0;     // how many shared locks hold it, as the kernel lists them
  std::string filesystem;      // e.g. "ext4", "tmpfs", "nfs"
  std::optional<uid_t> owner;  // the file's owner
  mode_t mode = 0;             // the file's permission bits
  // Conditions an operator should know about: a network or FUSE filesystem (flock is not
  // reliable across hosts there), a lock file or directory that others may open or write to,
  // holders hidden from us.
  std::vector<std::string> warnings;
};

// What kind of failure an Error is: what a caller acts on. pidlock(1) maps each to one exit
// code (its EXIT STATUS table); to_string() gives the JSON and test spelling.
enum class ErrorKind {
  busy,              // the lock is held by someone else: Error::held() is true
  invalid_argument,  // refused before anything was tried: Options
  // The lock file cannot be used (each names the path):
  not_found,          // a directory on the path is missing and not to be made, or not a directory
  symlink,            // the lock file is a symbolic link: never followed
  not_regular_file,   // a directory, FIFO, socket or device
  kernel_interface,   // a file or directory of procfs, sysfs, cgroupfs…: never written
  cannot_open,        // any other failure to open, create or stat it (read-only filesystem…)
  permission_denied,  // EACCES or EPERM, from any step
  io,                 // writing the record failed, or the filesystem did (EIO, ENOSPC, EDQUOT)
  system,             // any other system call failed (flock, clone, fcntl…): see operation()
  cancelled,          // Options::on_wait threw: the wait was stopped, the lock not taken
};

// "busy", "invalid_argument", "not_found", "symlink", "not_regular_file", "kernel_interface",
// "cannot_open", "permission_denied", "io", "system", "cancelled".
std::string_view to_string(ErrorKind kind) noexcept;

// Why an acquire (or inspect) failed: a kind, the failed operation, the lock file, the errno,
// and a message for operators. Either the lock is held by someone else (kind() is busy, held()
// true, and message() names the holder), or an operation failed ("pidlock: open /x/y.lock:
// Permission denied"). Fleet mode has an Error of its own (pidlock/fleet.hpp).
class Error {
 public:
  Error() = default;

  // How the library (and the command, about its own files) makes them. `readers`: how many
  // shared locks hold it, when the holder is a reader ("3 readers hold the lock (pid 4242, …,
  // and 2 more)").
  static Error busy(std::filesystem::path path, std::string_view role, std::optional<Holder> holder,
                    std::optional<pid_t> recorded_pid, std::size_t readers = 0);
  // Contention the caller words itself ("a writer waits for the lock …").
  static Error busy_with_message(std::string message, std::optional<Holder> holder);
  // `kind` is what the failed step means; an errno that says more wins over it: EACCES and EPERM
  // are permission_denied, EIO, ENOSPC and EDQUOT io, and a cannot_open with ENOENT or ENOTDIR
  // not_found. `detail` replaces the errno's text in the message.
  static Error failure(ErrorKind kind, std::string_view operation, std::filesystem::path path,
                       std::error_code code, std::string_view detail = {});

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& message() const noexcept { return message_; }
  std::error_code code() const noexcept { return code_; }
  bool held() const noexcept { return kind_ == ErrorKind::busy; }
  const std::optional<Holder>& holder() const noexcept { return holder_; }
  // The lock file (or directory) it concerns; empty for a busy_with_message one.
  const std::filesystem::path& path() const noexcept { return path_; }
  const std::string& operation() const noexcept { return operation_; }

 private:
  ErrorKind kind_ = ErrorKind::system;
  std::string message_;
  std::error_code code_;
  std::optional<Holder> holder_;
  std::filesystem::path path_;
  std::string operation_;
};

struct Options {
  // The noun in "another <role> is running".
  std::string role = "installer";
  // Take a shared (reader) lock instead of the exclusive one: any number of shared holders at
  // once, never together with the exclusive holder; flock(1) -s takes the same lock. A shared
  // holder writes no record (the record belongs to the last exclusive holder) and is named by
  // the kernel alone.
  bool shared = false;
  // With `shared`: defer to writers. flock(2) lets a new reader in while a writer waits, so
  // readers whose holds overlap keep a writer out for as long as they go on. A deferring reader
  // that finds a writer waiting (in the kernel's list) queues for the exclusive lock as the
  // writer does, and turns it into a shared one once it has it; without a wait it is refused as
  // busy ("a writer waits for the lock (pid N)", naming the writer, not the helper its timed wait
  // blocks in). It stays queued only while a writer waits: it asks the kernel's list again as soon
  // as the writer's waiting process exits, and every 100 ms, and once no writer waits (it gave up
  // or got the lock) takes the lock as any reader. Its queued wait runs in a helper named
  // "pidlock-defer", which no deferring reader takes for a writer. Readers that do not defer
  // (flock -s) are not held back.
  bool defer_to_writers = false;
  // Create missing parent directories (mode 0755, subject to umask).
  bool create_parents = true;
  // Mode of a newly created lock file, subject to umask. Owner-only by default: flock works on a
  // read-only descriptor, so every user who may open the file may hold the lock and stall every
  // installer. Widen it (0640, 0644) only for a group or users meant to share the lock. An x bit
  // would make it no lock file: nothing would be recorded in it (see Lock::acquire).
  mode_t mode = 0600;
  // How long to wait for a busy lock: zero (or less) fails at once, wait_forever never gives up.
  // Any duration is safe: a deadline past the clock's range is clamped to it, not wrapped. The
  // wait blocks in the kernel and returns the moment the lock is handed over; it does not poll.
  // A timed wait (or any wait with on_wait) blocks in a helper process that shares this process's
  // memory: it costs the same in a process of any size, sends no SIGCHLD, is invisible to
  // waitpid(-1), and never outlives acquire. When the helper cannot be started (RLIMIT_NPROC, say)
  // acquire fails with kind system, operation "clone" and its errno, never as busy. wait_forever
  // without on_wait needs no helper: it blocks in flock(2) itself, through signals (EINTR is
  // retried), and is then not a cancellation point.
  std::chrono::nanoseconds wait{0};
  // fdatasync the record after writing it. Off by default: the record is informational and
  // flocks do not survive a reboot anyway.
  bool sync_record = false;
  // Keep the descriptor open across execve() so that an exec'd program inherits the lock, as
  // flock(1) does. Off by default (O_CLOEXEC), which is what a library wants.
  bool inheritable = false;
  // Called while waiting: once when the wait starts and then every progress_interval, with the
  // time waited so far and the current holder (if one can be named). Runs on the calling thread.
  // It should not throw. If it does, the wait stops, the helper is killed and reaped, the lock is
  // not taken, and acquire returns an Error of kind cancelled (operation "on_wait", ECANCELED)
  // whose message names what was thrown; the exception itself goes no further. A pthread_cancel()
  // of the waiting thread, acted on in the wait or in on_wait, unwinds through acquire as glibc
  // unwinds any cancelled thread, with the same cleanup: no helper remains and the lock is not
  // taken.
  std::function<void(std::chrono::nanoseconds waited, const std::optional<Holder>& holder)> on_wait;
  // Must be positive: zero or less is refused by acquire, before it tries the lock, with an Error
  // of kind invalid_argument (operation "options", EINVAL). nanoseconds::max() calls on_wait only
  // once.
  std::chrono::nanoseconds progress_interval = std::chrono::seconds(1);
};

// What acquire did about the file's record (Lock::record()).
enum class RecordOutcome {
  written,  // "<pid>\n" written over what the lock file held
  reader,   // a shared lock: readers write none (the record names the last writer)
  // The file is not a lock file: it holds somebody's data or is executable (see Lock::acquire).
  // Locked as flock(1) locks it, through a read-only descriptor, and left exactly as it was.
  not_a_lock_file,
  // This process may not write the file (its permissions, a read-only filesystem, a program
  // being executed): locked as flock(1) locks it, through a read-only descriptor; no record.
  no_write_access,
};

// "written", "reader", "not_a_lock_file", "no_write_access".
std::string_view to_string(RecordOutcome outcome) noexcept;

// An acquired lock. Move-only; the destructor releases it.
class Lock {
 public:
  // Takes the lock on `path`, creating the file (and, by default, its parents) if needed.
  // Refuses anything that is not a regular file, and a file of a kernel interface (procfs,
  // sysfs…; an fstatfs that cannot tell fails the acquire, operation "fstatfs"). Never writes to a
  // file it has not locked, and after locking checks that `path` still names the file it locked
  // (retrying if it was replaced). Two acquires of one path conflict even within one process; the
  // second is told, as from any holder, "another <role> is running (pid N, this process, …".
  //
  // A writer then writes its record, "<pid>\n", but only into a lock file: one that nobody may
  // execute (no x bit) and that is empty, or holds at most 32 bytes of printable ASCII and blanks
  // with at most one word on its first line and only digits and blanks on later lines (a record, or
  // the junk a crash leaves: blanks, "not-a-pid", "-1", "0", a stale PID, a record written over a
  // longer one and not yet cut). Any other file is somebody's data (a configuration file, a
  // script locking itself as with flock(1)'s `[ "$FLOCKER" != "$0" ] && exec …` idiom): it is
  // locked through a read-only descriptor, so that the file can still be executed, and never
  // written (record() is not_a_lock_file). Deciding costs nothing more for an empty file, an
  // executable or one over 32 bytes (the statx made anyway tells), and one pread of the old
  // record otherwise. A writer that may read the file but not write it (EACCES, EPERM, EROFS,
  // ETXTBSY) locks it through a read-only descriptor too, as flock(1) does, and writes no record
  // (no_write_access); a reader (Options::shared) always opens it read-only.
  [[nodiscard]] static std::expected<Lock, Error> acquire(const std::filesystem::path& path,
                                                          const Options& options = {});

  Lock() noexcept = default;  // holds nothing
  Lock(Lock&& other) noexcept;
  Lock& operator=(Lock&& other) noexcept;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock();

  // Unlocks and closes. Idempotent, and a no-op on a Lock that holds nothing. Unlocking, in the
  // acquiring process, drops the lock for any forked child that shares the descriptor too,
  // except for a lock acquired with Options::inheritable: that one is only closed here, and
  // stays held, as with flock(1), while any process it was passed on to still has it open. The
  // file and its record stay, for post-mortem reading; the next holder overwrites the record.
  //
  // A Lock belongs to the process that acquired it. In any other process, a forked child holding
  // a copy of it (made by fork(), _Fork() or a raw clone()), release() and ~Lock only close that
  // process's descriptor and never unlock: a worker that returns from its function, or releases,
  // leaves the parent holding the lock. Ownership is told by PID, so a descendant forked after
  // the owner died that is given the owner's recycled PID would count as the owner.
  std::error_code release() noexcept;

  const std::filesystem::path& path() const noexcept { return path_; }
  bool held() const noexcept { return fd_ >= 0; }
  // What acquire did about the record; `written` for a Lock that holds nothing.
  RecordOutcome record() const noexcept { return record_; }
  // For an operator, once, when a writer holds the lock without having written its record
  // (not_a_lock_file, no_write_access): what was done and why, e.g. "app.conf is not a lock file
  // (…): locked as flock(1) does, …; its content is left as it was". Empty otherwise. The path
  // is escaped for a terminal.
  std::string note() const;
  // The locked descriptor, or -1. Closing it yourself is a bug; use release().
  int native_handle() const noexcept { return fd_; }

 private:
  Lock(int fd, std::filesystem::path path, bool inheritable,
       RecordOutcome record) noexcept;  // owned by the caller
  int fd_ = -1;
  bool inheritable_ = false;
  RecordOutcome record_ = RecordOutcome::written;
  pid_t owner_ = 0;  // the acquiring process
  std::filesystem::path path_;
};

// Reports on a lock file without creating or writing anything. A missing file is free. It locks
// nothing either, except where the kernel's lock list cannot show every holder (see
// Evidence::probe): there it takes and at once drops a non-blocking lock on a read-only
// descriptor, during which another process's non-blocking acquire may see the lock busy.
[[nodiscard]] std::expected<Status, Error> inspect(const std::filesystem::path& path);

// Why flock on `path` cannot be trusted across hosts (NFS, CIFS/SMB, FUSE, 9p, Ceph, AFS), or
// nothing when its filesystem is local or cannot be told.
std::optional<std::string> unreliable_filesystem(const std::filesystem::path& path);

// "pid 4242, apt-get, for 3m12s", the way messages name a holder: with the command a `pidlock
// run` runs, a user who does not own the lock file, and why it is not verified when it is not.
// Bytes from other processes are escaped for a terminal (see docs/pidlock.1, OUTPUT).
std::string describe(const Holder& holder);

// "3m12s", "45s", "2h03m", "4d07h": the compact durations used in messages.
std::string format_duration(std::chrono::seconds duration);

// The library's version, "MAJOR.MINOR.PATCH".
std::string_view version() noexcept;

}  // namespace pidlock
