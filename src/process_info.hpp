// Describing a lock's holders and waiters: what /proc says of each process, and how long it held.
#pragma once

#include <sys/types.h>

#include "holder.hpp"
#include "pidlock/pidlock.hpp"

namespace pidlock::process_info {

// The holder `pid`, described through `pid_dir`, opened before its lock was confirmed so that a
// PID recycled meanwhile reads as gone. The hints date the lock and mark record agreement and
// another user's holder. An unverified holder the record names that started after the record
// was written is not the one the kernel's list means: it comes back as pid_reused, and bare.
Holder make_holder(pid_t pid, int pid_dir, Verification verification, bool shared,
                   const holder::Hints& hints);

// A holder that only the record (or the kernel's bare list) names: we cannot see the real one.
Holder unseen_holder(pid_t pid, Verification why, bool shared = false);

// A process the kernel lists as waiting for the lock, with its command and parent when /proc
// tells them.
Waiter make_waiter(pid_t pid, bool shared);

}  // namespace pidlock::process_info
