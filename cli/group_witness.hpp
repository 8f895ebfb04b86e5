// Telling a signal sent to pidlock alone from one sent to its whole process group.
//
// A supervised command shares pidlock's process group, so that a signal to the job (^C from the
// terminal, `kill -TERM -PGID`, SIGSTOP, SIGKILL) reaches it directly, as it reaches the job.
// pidlock receives such a signal too, and must not pass it on a second time; a signal sent to
// pidlock alone it must pass on. The kernel's siginfo does not say which was which (SI_USER
// either way), so a witness says it: a small process in the same group, with the same signals
// blocked, that receives every group signal and nothing else. When pidlock takes a signal it asks
// the witness whether it got the same one, and the witness consumes it.
//
// The answer is exact because the kernel delivers a group signal to the group's members in the
// reverse order of their joining (the group's task list is an hlist with new members added at its
// head, and kill_pgrp() walks it from the head): the witness, forked after pidlock joined the
// group, has the signal before pidlock can take its own copy. tests/cli_front_test.cpp checks
// this on the running kernel (CliProcess.WithCloseASignalToTheGroupIsToldApartFromOne…).
#pragma once

#include <sys/types.h>

#include <optional>

#include "sys.hpp"

namespace pidlock::cli {

class GroupWitness {
 public:
  // Forks the witness into this process's group. Call with the watched signals blocked: the
  // witness keeps them blocked for good. nullopt, having said why, if it cannot be started.
  //
  // The witness also ends `command` if pidlock dies (SIGKILL through a pidfd, besides the
  // command's own parent-death signal, which a set-user-ID command loses at exec), and keeps a
  // reference to `lock_fd`'s open file description (-1: none) until the command is dead: a lock
  // held for the command is never free while the command still runs.
  static std::optional<GroupWitness> start(pid_t command, int lock_fd);

  GroupWitness(GroupWitness&& other) noexcept;
  GroupWitness& operator=(GroupWitness&& other) noexcept;
  GroupWitness(const GroupWitness&) = delete;
  GroupWitness& operator=(const GroupWitness&) = delete;
  ~GroupWitness();  // ends and reaps the witness

  // Whether `sig`, just taken by pidlock, was also sent to the process group (it reached the
  // witness); consumes the witness's copy. nullopt when the witness cannot answer (it was killed
  // or stopped on its own): the caller then treats the signal as sent to pidlock alone.
  std::optional<bool> also_sent_to_group(int sig);

  pid_t pid() const { return pid_; }

 private:
  GroupWitness(pid_t pid, int channel) : pid_(pid), channel_(channel) {}
  void end() noexcept;
  pid_t pid_ = -1;
  sys::UniqueFd channel_;  // a socketpair: a question is a signal number, the answer one byte
};

}  // namespace pidlock::cli
