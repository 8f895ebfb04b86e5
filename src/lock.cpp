// Acquiring and releasing the lock.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <new>

#include "escape.hpp"
#include "fstype.hpp"
#include "holder.hpp"
#include "lock_file.hpp"
#include "pidlock/pidlock.hpp"
#include "record.hpp"
#include "sys.hpp"
#include "wait.hpp"

namespace pidlock {
namespace {

namespace fs = std::filesystem;
using sys::UniqueFd;

// A path replaced under us this many times in a row is being fought over; give up rather than
// spin.
constexpr int max_replacements = 64;

// mkdir -p, one component at a time, so that an error names the directory that failed.
std::expected<void, Error> make_parents(const fs::path& directory, mode_t mode) {
  fs::path prefix;
  for (const auto& part : directory) {
    prefix /= part;
    if (::mkdir(prefix.c_str(), mode) == 0 || errno == EEXIST) continue;
    return std::unexpected(
        Error::failure(ErrorKind::cannot_open, "mkdir", prefix, sys::last_error()));
  }
  return {};
}

// The nearest directory at or above `directory` that exists, by statfs: mkdir -p must not create
// directories in a kernel interface (a directory made in cgroupfs is a new cgroup).
std::optional<Error> refuse_kernel_interface_above(const fs::path& path) {
  for (fs::path at = path.parent_path(); !at.empty(); at = at.parent_path()) {
    sys::UniqueFd dir(::open(at.c_str(), O_PATH | O_CLOEXEC));
    if (dir) {
      const auto kind = fstype::of_descriptor(dir.get());
      if (!kind) return std::nullopt;
      if (auto why = fstype::refusal(*kind))
        return Error::failure(ErrorKind::kernel_interface, "mkdir", at, sys::errno_code(EINVAL),
                              *why);
      return std::nullopt;
    }
    if (at == at.parent_path()) break;
  }
  return std::nullopt;
}

std::expected<UniqueFd, Error> open_lock_file(const fs::path& path, const Options& options) {
  // O_NOFOLLOW: a symlink planted at the path is refused, not followed to a file we do not own.
  // O_NONBLOCK: a FIFO planted at the path must not hang the open (it is refused right after).
  constexpr int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  UniqueFd fd(::open(path.c_str(), flags, options.mode));
  if (!fd && errno == ENOENT && options.create_parents && path.has_parent_path()) {
    if (auto refused = refuse_kernel_interface_above(path)) return std::unexpected(*refused);
    if (auto made = make_parents(path.parent_path(), 0755); !made) {
      return std::unexpected(made.error());
    }
    fd.reset(::open(path.c_str(), flags, options.mode));
  }
  if (fd) return fd;
  if (errno == ELOOP) {
    return std::unexpected(Error::failure(ErrorKind::symlink, "open", path, sys::last_error(),
                                          "is a symbolic link; refusing to follow it"));
  }
  // Worded as lock_file::refuse() words every file that is not regular, as status says it.
  if (errno == EISDIR) {
    return std::unexpected(Error::failure(ErrorKind::not_regular_file, "open", path,
                                          sys::last_error(),
                                          "refusing a lock file that is a directory"));
  }
  return std::unexpected(Error::failure(ErrorKind::cannot_open, "open", path, sys::last_error()));
}

// statx, then the rule of what may be a lock file. Asking the filesystem costs an fstatfs, paid
// only on anonymous-device filesystems (tmpfs, btrfs, overlayfs and every kernel interface),
// before anything is written, and once per mount and process where the kernel names mounts
// uniquely (Linux 6.8): a mount found to be storage is remembered.
std::expected<struct stat, Error> stat_lock_file(int fd, const fs::path& path) {
  lock_file::Description file;
  if (lock_file::describe(fd, file) != 0)
    return std::unexpected(
        Error::failure(ErrorKind::cannot_open, "fstat", path, sys::last_error()));
  std::optional<fstype::Kind> kind;
  if (S_ISREG(file.st.st_mode) && lock_file::needs_filesystem_check(file)) {
    kind = fstype::of_descriptor(fd);
    if (kind && !kind->kernel_interface) lock_file::remember_storage(file);
  }
  if (auto unfit = lock_file::refuse(path, file.st, kind))
    return std::unexpected(std::move(*unfit));
  return file.st;
}

struct Claim {
  std::optional<Holder> holder;       // who the kernel says holds it
  std::optional<pid_t> recorded_pid;  // what the file says
  std::size_t readers = 0;            // shared locks holding it
};

// The kernel is asked who holds the lock; the record is read to mark agreement, and to name
// the holder where the kernel cannot (no /proc, a holder outside our PID namespace).
Claim identify_holder(int fd, const struct stat& st) {
  Claim claim;
  std::optional<std::string> text;
  if (auto read = sys::read_fd(fd, record::read_limit)) text = std::move(*read);
  const auto hints = holder::hints_from(text, st);
  claim.recorded_pid = hints.recorded_pid;
  auto found = holder::discover(fd, st, hints, holder::Query::holder_of_busy_lock);
  if (!found.holders.empty()) claim.holder = std::move(found.holders.front());
  claim.readers = found.readers;
  return claim;
}

Error busy(int fd, const struct stat& st, const fs::path& path, const Options& options) {
  auto claim = identify_holder(fd, st);
  return Error::busy(path, options.role, std::move(claim.holder), claim.recorded_pid,
                     claim.readers);
}

std::optional<Holder> current_holder(int fd) {
  struct stat st {};
  if (sys::fstat_descriptor(fd, &st) != 0) return std::nullopt;
  return identify_holder(fd, st).holder;
}

wait::Clock::time_point deadline_after(std::chrono::nanoseconds wait) {
  if (wait == wait_forever) return wait::Clock::time_point::max();
  return sys::saturating_add(wait::Clock::now(), wait);  // one past the clock's end waits as long
}

// A progress_interval of zero or less would call on_wait in a loop for the whole wait.
std::expected<void, Error> check_options(const Options& options, const fs::path& path) {
  if (options.progress_interval <= std::chrono::nanoseconds(0)) {
    const auto code = sys::errno_code(EINVAL);
    return std::unexpected(
        Error::failure(ErrorKind::invalid_argument, "options", path, code,
                       code.message() + ": Options::progress_interval must be positive, not " +
                           std::to_string(options.progress_interval.count()) + "ns"));
  }
  return {};
}

Error wait_failed(const wait::Failure& failure, const fs::path& path) {
  if (failure.why.empty())
    return Error::failure(ErrorKind::system, failure.operation, path, failure.code);
  return Error::failure(ErrorKind::system, failure.operation, path, failure.code,
                        failure.code.message() + " (" + std::string(failure.why) + ")");
}

Error on_wait_threw(const fs::path& path, std::string_view what) {
  const auto code = sys::errno_code(ECANCELED);
  return Error::failure(ErrorKind::cancelled, "on_wait", path, code,
                        code.message() + ": the callback threw (" + std::string(what) +
                            "); the wait was stopped and the lock not taken");
}

// Waits in the kernel, calling on_wait on schedule. What on_wait throws ends the wait, after the
// helper is gone, and comes back as an Error: nothing may leave acquire by exception. A thread
// cancellation is not an error to catch: glibc's unwinding of the thread must go on, or the
// process aborts.
int flock_operation(const Options& options) { return options.shared ? LOCK_SH : LOCK_EX; }

std::expected<wait::Outcome, Error> wait_for_flock(int fd, const fs::path& path,
                                                   const Options& options,
                                                   wait::Clock::time_point deadline) {
  wait::Tick tick;
  if (options.on_wait) {
    tick = [&](std::chrono::nanoseconds waited) { options.on_wait(waited, current_holder(fd)); };
  }
  try {
    auto outcome =
        wait::until_locked(fd, flock_operation(options), deadline, tick, options.progress_interval);
    if (!outcome) return std::unexpected(wait_failed(outcome.error(), path));
    return *outcome;
  } catch (const std::exception& thrown) {
    return std::unexpected(on_wait_threw(path, thrown.what()));
  } catch (...) {
    // No C++ exception at all: the unwinding of a cancelled thread (abi::__forced_unwind, whose
    // catch by name would bind a null reference).
    if (!std::current_exception()) throw;
    return std::unexpected(on_wait_threw(path, "not a std::exception"));
  }
}

Error writer_waits(const fs::path& path, pid_t writer, const Options& options) {
  return Error::busy_with_message(
      "a writer waits for the lock (pid " + std::to_string(writer) + ") and this " +
          text::for_terminal(options.role) +
          " defers to writers — lock file: " + text::for_terminal(path.string()),
      std::nullopt);
}

// Takes the lock (Options::shared says which) without blocking, or waits for it until the
// deadline; `busy_error` makes the error for a lock that stays busy. A busy lock is first checked
// to be a lock file at all: a FIFO someone holds a flock on is still no lock file.
template <class BusyError>
std::expected<void, Error> lock_or_wait(int fd, const fs::path& path, const Options& options,
                                        wait::Clock::time_point deadline, BusyError busy_error) {
  while (::flock(fd, flock_operation(options) | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      return std::unexpected(Error::failure(ErrorKind::system, "flock", path, sys::last_error()));
    }
    auto st = stat_lock_file(fd, path);
    if (!st) return std::unexpected(st.error());
    if (options.wait <= std::chrono::nanoseconds(0) || wait::Clock::now() >= deadline) {
      return std::unexpected(busy_error(*st));
    }
    auto outcome = wait_for_flock(fd, path, options, deadline);
    if (!outcome) return std::unexpected(outcome.error());
    if (*outcome == wait::Outcome::timed_out) return std::unexpected(busy_error(*st));
    return {};
  }
  return {};
}

// A deferring reader behind a waiting writer: queue for the exclusive lock as the writer does,
// then turn it into the shared one. flock(2) converts by dropping and re-taking, so a writer may
// slip in between: then queue again.
std::expected<void, Error> take_behind_writers(int fd, const fs::path& path, const Options& options,
                                               wait::Clock::time_point deadline, pid_t writer) {
  Options exclusive = options;
  exclusive.shared = false;
  const auto writer_first = [&](const struct stat&) { return writer_waits(path, writer, options); };
  for (;;) {
    if (auto locked = lock_or_wait(fd, path, exclusive, deadline, writer_first); !locked) {
      return locked;
    }
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) return {};
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return std::unexpected(Error::failure(ErrorKind::system, "flock", path, sys::last_error()));
    }
  }
}

std::expected<void, Error> take_flock(int fd, const fs::path& path, const Options& options,
                                      wait::Clock::time_point deadline) {
  if (options.shared && options.defer_to_writers) {
    struct stat st {};
    if (sys::fstat_descriptor(fd, &st) != 0) {
      return std::unexpected(
          Error::failure(ErrorKind::cannot_open, "fstat", path, sys::last_error()));
    }
    if (const auto writer = holder::writer_waiting(fd, st)) {
      return take_behind_writers(fd, path, options, deadline, *writer);
    }
  }
  return lock_or_wait(fd, path, options, deadline,
                      [&](const struct stat& st) { return busy(fd, st, path, options); });
}

// Whether `path` still names the inode we locked. Between our open() and flock() the previous
// holder (or anyone) may have unlinked or replaced the file; a lock on an orphaned inode
// excludes nobody.
std::expected<bool, Error> still_names(const struct stat& locked, const fs::path& path) {
  struct stat now {};
  if (::fstatat(AT_FDCWD, path.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return std::unexpected(Error::failure(ErrorKind::cannot_open, "stat", path, sys::last_error()));
  }
  return now.st_dev == locked.st_dev && now.st_ino == locked.st_ino;
}

// getpid() is a system call since glibc 2.25, and a cycle is only a handful of them: the PID is
// cached, on a page the kernel zero-fills in every child that does not share our memory
// (MADV_WIPEONFORK, Linux 4.14). A child of fork(), _Fork() or a raw clone() finds the page empty
// and asks again, where a pthread_atfork() handler runs for fork() alone. Without such a page (an
// older kernel) every call asks. A CLONE_VM child (vfork, posix_spawn) shares the page, and may
// only exec or exit anyway.
struct PidCache {
  std::atomic<pid_t> pid;  // 0: not known in this process
};

// No mutex or function-local static, which a fork() in another thread could leave locked.
std::atomic<PidCache*> pid_cache{nullptr};
std::atomic<bool> pid_cache_unavailable{false};

PidCache* map_pid_cache() noexcept {
  const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* page = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return nullptr;
  if (::madvise(page, size, MADV_WIPEONFORK) != 0) {
    ::munmap(page, size);
    pid_cache_unavailable.store(true, std::memory_order_relaxed);
    return nullptr;
  }
  auto* fresh = new (page) PidCache{};
  PidCache* expected = nullptr;
  if (pid_cache.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return fresh;
  ::munmap(page, size);  // another thread mapped one first
  return expected;
}

PidCache* wiped_in_children() noexcept {
  if (auto* cache = pid_cache.load(std::memory_order_acquire)) return cache;
  if (pid_cache_unavailable.load(std::memory_order_relaxed)) return nullptr;
  return map_pid_cache();
}

pid_t own_pid() noexcept {
  auto* cache = wiped_in_children();
  if (cache == nullptr) return ::getpid();
  pid_t pid = cache->pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = ::getpid();
    cache->pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

// Writes "<pid>\n" over the old record, then cuts the file to that length if it was longer.
// Never empty, and a reader that catches the moment in between still finds the new PID on the
// first line. `size` is the file's size, read after locking.
std::expected<void, Error> write_record(int fd, const fs::path& path, off_t size,
                                        const Options& options) {
  const auto text = record::format(own_pid());
  ssize_t written = 0;
  do {
    written = ::pwrite(fd, text.bytes, text.size, 0);
  } while (written < 0 && errno == EINTR);
  if (written < 0)
    return std::unexpected(Error::failure(ErrorKind::io, "write", path, sys::last_error()));
  if (static_cast<std::size_t>(written) != text.size) {
    return std::unexpected(Error::failure(ErrorKind::io, "write", path, sys::errno_code(ENOSPC)));
  }
  if (size > static_cast<off_t>(text.size) && ::ftruncate(fd, static_cast<off_t>(text.size)) != 0) {
    return std::unexpected(Error::failure(ErrorKind::io, "truncate", path, sys::last_error()));
  }
  if (options.sync_record && ::fdatasync(fd) != 0) {
    return std::unexpected(Error::failure(ErrorKind::io, "fdatasync", path, sys::last_error()));
  }
  return {};
}

// Drops a lock taken in this call that we cannot hand out. Unlocking first matters when another
// thread forked meanwhile: closing alone would leave the lock held by its copy.
void abandon(UniqueFd& fd) {
  ::flock(fd.get(), LOCK_UN);
  fd.reset();
}

}  // namespace

std::expected<Lock, Error> Lock::acquire(const fs::path& path, const Options& options) {
  if (path.empty())
    return std::unexpected(
        Error::failure(ErrorKind::not_found, "open", path, sys::errno_code(ENOENT)));
  // Before anything is opened or created.
  if (auto valid = check_options(options, path); !valid) return std::unexpected(valid.error());
  const auto deadline = deadline_after(options.wait);
  for (int attempt = 0; attempt < max_replacements; ++attempt) {
    auto fd = open_lock_file(path, options);
    if (!fd) return std::unexpected(fd.error());
    if (auto locked = take_flock(fd->get(), path, options, deadline); !locked) {
      return std::unexpected(locked.error());
    }
    auto st = stat_lock_file(fd->get(), path);
    if (!st) {
      abandon(*fd);
      return std::unexpected(st.error());
    }
    auto same = still_names(*st, path);
    if (!same || !*same) {
      abandon(*fd);
      if (!same) return std::unexpected(same.error());
      continue;
    }
    // Readers share the lock; the record names the last exclusive holder and stays theirs.
    if (!options.shared) {
      if (auto written = write_record(fd->get(), path, st->st_size, options); !written) {
        abandon(*fd);
        return std::unexpected(written.error());
      }
    }
    if (options.inheritable && ::fcntl(fd->get(), F_SETFD, 0) != 0) {
      const auto error = Error::failure(ErrorKind::system, "fcntl", path, sys::last_error());
      abandon(*fd);
      return std::unexpected(error);
    }
    return Lock(fd->release(), path, options.inheritable);
  }
  return std::unexpected(Error::failure(ErrorKind::cannot_open, "open", path,
                                        sys::errno_code(EAGAIN),
                                        "the path kept being replaced while we locked it"));
}

Lock::Lock(int fd, fs::path path, bool inheritable) noexcept
    : fd_(fd), inheritable_(inheritable), owner_(own_pid()), path_(std::move(path)) {}

Lock::Lock(Lock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      inheritable_(other.inheritable_),
      owner_(other.owner_),
      path_(std::move(other.path_)) {}

Lock& Lock::operator=(Lock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    inheritable_ = other.inheritable_;
    owner_ = other.owner_;
    path_ = std::move(other.path_);
  }
  return *this;
}

Lock::~Lock() { release(); }

// Only the acquiring process unlocks. A forked copy of this Lock shares the open file
// description, so its unlock would be the owner's too: it only closes its own descriptor.
std::error_code Lock::release() noexcept {
  if (fd_ < 0) return {};
  std::error_code error;
  const bool unlock = !inheritable_ && owner_ == own_pid();
  if (unlock && ::flock(fd_, LOCK_UN) != 0) error = sys::last_error();
  if (::close(fd_) != 0 && !error && errno != EINTR) error = sys::last_error();
  fd_ = -1;
  return error;
}

}  // namespace pidlock
