// Holder discovery: who holds a lock file's flock, according to the kernel.
#pragma once

#include <sys/stat.h>

#include <ctime>
#include <expected>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "pidlock/pidlock.hpp"
#include "proc_parse.hpp"

namespace pidlock::holder {

// A lock file, as stat(2) sees it and as the kernel's lock lists name it. The two agree on
// ext4, xfs and tmpfs; on btrfs stat reports a subvolume's own device and /proc/locks the
// superblock's, and on overlayfs stat reports a layer's device and /proc/locks the overlay's.
struct FileIdentity {
  dev_t dev = 0;        // st_dev: what a stat of another process's descriptor shows too
  ino_t inode = 0;      // st_ino
  proc::FileId kernel;  // the name in /proc/locks: superblock device and VFS inode number
  // Other files may bear the same kernel name: btrfs numbers each subvolume's inodes from 256
  // under one superblock device. A locker the kernel lists under this name holds *our* file
  // only once its own descriptor is seen to be ours.
  bool kernel_name_shared = false;
};

// Learns the kernel's name for the file open at `fd` (any descriptor, O_PATH too) from
// /proc/self/fdinfo and /proc/self/mountinfo; falls back on stat's when /proc cannot tell.
FileIdentity identify(int fd, const struct stat& st);

// Whether the kernel may hide lock holders from us: /proc/locks lists only locks whose owners
// are visible in the PID namespace of the /proc we read, and ours is not the initial one (or
// /proc is missing).
bool holders_may_be_hidden();

enum class Held { no, yes, maybe };

struct Discovery {
  // maybe: neither the kernel's list nor the processes we may see could settle it: the caller
  // probes (see inspect()).
  Held held = Held::no;
  std::vector<Holder> holders;  // primary first; verified ones, then those we could not check
  std::vector<Waiter> waiters;
  std::size_t readers = 0;       // granted shared locks the kernel lists (0 if not asked)
  bool list_unreadable = false;  // /proc/locks could not be read
  bool scanned = false;          // every process we may see was asked: holders has them all
};

struct Hints {
  std::optional<pid_t> recorded_pid;            // from the file, to mark record agreement
  std::optional<struct timespec> record_mtime;  // when the record was last written
  std::optional<uid_t> file_owner;              // to mark holders of another user
};

// The hints a lock file gives: its record's text (if it could be read) and its stat.
Hints hints_from(const std::optional<std::string>& record_text, const struct stat& st);

enum class Query {
  holder_of_busy_lock,  // the caller's own attempt was just refused: name the holder, cheaply
  status,               // everything: every process sharing the lock, and the waiters
};

// For a busy lock, first checks whether the recorded process holds it (through its fdinfo),
// and is done if it does. Otherwise reads /proc/locks for granted and blocked flocks on the file
// and confirms each granted locker through its /proc/<pid>/fdinfo. For status, the processes
// sharing the lock are looked for among the verified lockers' descendants. Every process's
// descriptors are scanned when a locker is gone or is not the one holding it (an inherited
// descriptor outlived it, or its PID was recycled), when status finds a locker it may not
// check, and whenever the list does not show the lock: the list, read a page at a time while it
// changes, may name holders but never prove there are none. A locker we may not check is
// reported with the reason (Holder::verification). `fd` is any descriptor of the file.
Discovery discover(int fd, const struct stat& st, const Hints& hints, Query query);

// A lock a probe found held is in the kernel's list: one that skipped it was read while it
// shifted (it is read a page at a time). Reads the list again, up to `looks` times, and settles
// the lock from the first that shows it, waiters included; held stays maybe if none did.
Discovery discover_listed(int fd, const struct stat& st, const Hints& hints, int looks);

// Every process we may inspect whose descriptor holds the lock, found by reading every process's
// descriptors: the holders of a lock a probe found held that the kernel's list did not show.
std::vector<Holder> holders_by_descriptors(int fd, const struct stat& st, const Hints& hints);

// As holders_by_descriptors(), when the answer is complete: the holders found, or none when the
// search could read every process and none holds the lock (proof that it is free, without
// touching it). nullopt when it found none but could not look everywhere.
std::optional<std::vector<Holder>> every_holder_by_descriptors(int fd, const struct stat& st,
                                                               const Hints& hints);

// The processes the kernel lists as blocked waiting for the exclusive lock on `file` (its kernel
// name, see identify()), in the list's order; 0 for one it cannot name. A list that came in
// pieces and shows none is read once more.
std::vector<pid_t> exclusive_waiters(const proc::FileId& file);

}  // namespace pidlock::holder
