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
//     return 75;  // EX_TEMPFAIL
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

// A process that holds the lock, as the kernel reports it.
struct Holder {
  pid_t pid = 0;
  std::string host;  // empty for a local lock; the holder's host name for a fleet lock
  // False when /proc would not tell us about this process (another user's process under
  // hidepid, or a PID namespace we cannot see into). Only `pid` is then known; the rest is empty
  // rather than guessed.
  bool inspectable = false;
  std::string command;                 // the kernel's short name (/proc/<pid>/comm), e.g. "apt-get"
  std::vector<std::string> cmdline;    // argv as the process sees it now
  std::optional<uid_t> uid;            // effective uid
  std::string user;                    // its name, or empty when the uid has no passwd entry
  // When the process started, since boot (CLOCK_BOOTTIME). Together with `pid` it names the
  // process uniquely: a recycled PID has a later start time.
  std::chrono::nanoseconds started_since_boot{0};
  // How long it has held the lock: since the record was written when the record agrees (the
  // record is written right after locking), otherwise since the process started.
  std::chrono::seconds held_for{0};
  bool record_agrees = false;          // the file's record names this process
};

// A process blocked waiting for the lock (the "->" entries of /proc/locks).
struct Waiter {
  pid_t pid = 0;
  bool inspectable = false;
  std::string command;
  pid_t parent = 0;  // pidlock's own timed waits block in a helper child: this is who it serves
};

// What the file's record says, compared with the kernel.
enum class Record {
  absent,      // no file, or an empty (or blank) file: e.g. a flock(1) user's lock
  agrees,      // names a process that holds the lock
  stale,       // names a process that does not hold it, while others do: the kernel wins
  unverified,  // names a PID, the lock is held, and we may not see by whom
  previous,    // the lock is free; names its last holder
  unreadable,  // not a PID (junk, negative, zero, overlong), or a file we may not read
};

// "absent", "agrees", "stale", "unverified", "previous", "unreadable": the JSON spelling.
std::string_view to_string(Record record) noexcept;

// A read-only report on a lock file: see inspect().
struct Status {
  std::filesystem::path path;
  bool exists = false;
  bool held = false;
  std::optional<Holder> holder;        // the primary holder: the kernel's locker while it lives
  std::vector<Holder> holders;         // every live process sharing the locked description
  std::optional<pid_t> recorded_pid;   // what the file says, parsed
  Record record = Record::absent;
  std::vector<Waiter> waiters;
  std::string filesystem;              // e.g. "ext4", "tmpfs", "nfs"
  // Conditions an operator should know about: a network or FUSE filesystem (flock is not
  // reliable across hosts there), a parent directory that others may write to.
  std::vector<std::string> warnings;
};

// Why an acquire (or inspect) failed. Either the lock is held by someone else (held() is true and
// message() names the holder), or an operation failed (code() is its errno, and message() names
// the operation and the path: "pidlock: open /x/y.lock: Permission denied").
class Error {
 public:
  Error() = default;
  static Error busy(std::filesystem::path path, std::string_view role, std::optional<Holder> holder,
                    std::optional<pid_t> recorded_pid);
  // Contention described by the caller (the fleet backend names several holders).
  static Error busy_with_message(std::string message, std::optional<Holder> holder);
  static Error failure(std::string_view operation, std::filesystem::path path, std::error_code code,
                       std::string_view detail = {});

  const std::string& message() const noexcept { return message_; }
  std::error_code code() const noexcept { return code_; }
  bool held() const noexcept { return held_; }
  const std::optional<Holder>& holder() const noexcept { return holder_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  const std::string& operation() const noexcept { return operation_; }

 private:
  std::string message_;
  std::error_code code_;
  bool held_ = false;
  std::optional<Holder> holder_;
  std::filesystem::path path_;
  std::string operation_;
};

struct Options {
  // The noun in "another <role> is running".
  std::string role = "installer";
  // Create missing parent directories (mode 0755, subject to umask).
  bool create_parents = true;
  // Mode of a newly created lock file, subject to umask.
  mode_t mode = 0644;
  // How long to wait for a busy lock: zero (or less) fails at once, wait_forever never gives up.
  // Any duration is safe: a deadline past the clock's range is clamped to it, not wrapped. The
  // wait blocks in the kernel and returns the moment the lock is handed over; it does not poll.
  // A timed wait (or any wait with on_wait) blocks in a helper process that shares this process's
  // memory: it costs the same in a process of any size, sends no SIGCHLD, is invisible to
  // waitpid(-1), and never outlives acquire. When the helper cannot be started (RLIMIT_NPROC, say)
  // acquire fails with operation "clone" and its errno, never as busy. wait_forever without
  // on_wait needs no helper: it blocks in flock(2) itself, through signals (EINTR is retried),
  // and is then not a cancellation point.
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
  // not taken, and acquire returns an Error with operation "on_wait" and ECANCELED whose message
  // names what was thrown; the exception itself goes no further. A pthread_cancel() of the
  // waiting thread, acted on in the wait or in on_wait, unwinds through acquire as glibc unwinds
  // any cancelled thread, with the same cleanup: no helper remains and the lock is not taken.
  std::function<void(std::chrono::nanoseconds waited, const std::optional<Holder>& holder)>
      on_wait;
  // Must be positive: zero or less is refused by acquire, before it tries the lock, with an Error
  // whose operation is "options" and code EINVAL. nanoseconds::max() calls on_wait only once.
  std::chrono::nanoseconds progress_interval = std::chrono::seconds(1);
};

// An acquired lock. Move-only; the destructor releases it.
class Lock {
 public:
  // Takes the lock on `path`, creating the file (and, by default, its parents) if needed.
  // Refuses anything that is not a regular file. Never writes to a file it has not locked, and
  // after locking checks that `path` still names the file it locked (retrying if it was replaced).
  // Two acquires of one path conflict even within one process.
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
  // The locked descriptor, or -1. Closing it yourself is a bug; use release().
  int native_handle() const noexcept { return fd_; }

 private:
  Lock(int fd, std::filesystem::path path, bool inheritable) noexcept;  // owned by the caller
  int fd_ = -1;
  bool inheritable_ = false;
  pid_t owner_ = 0;  // the acquiring process
  std::filesystem::path path_;
};

// Reports on a lock file without creating, writing or locking anything. A missing file is free.
[[nodiscard]] std::expected<Status, Error> inspect(const std::filesystem::path& path);

// Why flock on `path` cannot be trusted across hosts (NFS, CIFS/SMB, FUSE, 9p, Ceph, AFS), or
// nothing when its filesystem is local or cannot be told.
std::optional<std::string> unreliable_filesystem(const std::filesystem::path& path);

// "3m12s", "45s", "2h03m", "4d07h": the compact durations used in messages.
std::string format_duration(std::chrono::seconds duration);

// The library's version, "MAJOR.MINOR.PATCH".
std::string_view version() noexcept;

}  // namespace pidlock
