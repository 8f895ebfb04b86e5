// Truth everywhere: the holder and status on real filesystems (ext4, xfs, btrfs and its
// subvolumes, tmpfs, overlayfs on one and on two filesystems, bind mounts, hard links), in PID
// and user namespaces, for unprivileged viewers and under hidepid, and kernel interfaces refused.
//
// Everything is mounted in a mount namespace of this test process's own, so no mount outlives it;
// loop devices are attached by mount(8) with autoclear and go with their mounts.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support.hpp"

namespace pidlock {
namespace {

namespace fs = std::filesystem;
using test::Child;
using test::pidlock_binary;
using test::run;
using test::TempDir;
using json = nlohmann::json;

bool have(const std::string& program) {
  return run({"sh", "-c", "command -v " + program}).code == 0;
}

bool private_mount_namespace() {
  static const bool ok = ::geteuid() == 0 && ::unshare(CLONE_NEWNS) == 0 &&
                         ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
  return ok;
}

// One mounted filesystem for the whole suite.
class Mount {
 public:
  Mount() = default;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  ~Mount() {
    for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it)
      ::umount2(it->c_str(), MNT_DETACH);
  }

  // mkfs.TYPE on a sparse image, mounted with -o loop at `at`.
  bool image(const std::string& type, const fs::path& at, const std::string& size) {
    const fs::path img = images_ / (type + ".img");
    fs::create_directories(at);
    const std::string quiet = type == "xfs" ? "-q" : type == "btrfs" ? "-q" : "-q -F";
    const auto made = run({"sh", "-c",
                           "truncate -s " + size + " " + img.string() + " && mkfs." + type + " " +
                               quiet + " " + img.string() + " >/dev/null 2>&1"},
                          std::chrono::seconds(60));
    if (made.code != 0) return false;
    return mount({"mount", "-o", "loop", img.string(), at.string()}, at);
  }

  bool mount(const std::vector<std::string>& argv, const fs::path& at) {
    fs::create_directories(at);
    if (run(argv, std::chrono::seconds(60)).code != 0) return false;
    mounted_.push_back(at);
    return true;
  }

 private:
  TempDir images_;
  std::vector<fs::path> mounted_;
};

// A lock held through one path and inspected through another (the same, a hard link, a bind
// mount): on every setup below.
struct Paths {
  std::string name;
  fs::path hold;  // where the holder opens the file
  fs::path view;  // where status and the second locker look
};

class Filesystems : public testing::TestWithParam<std::string> {
 public:
  static void SetUpTestSuite() {
    if (!private_mount_namespace() || !have("mkfs.btrfs") || !have("mkfs.xfs")) return;
    root_ = new TempDir;
    mounts_ = new Mount;
    auto& m = *mounts_;
    const fs::path r = root_->path();
    bool ok = m.image("ext4", r / "ext4", "64M") && m.image("xfs", r / "xfs", "320M") &&
              m.image("btrfs", r / "btrfs", "256M") &&
              m.mount({"mount", "-t", "tmpfs", "tmpfs", (r / "tmpfs").string()}, r / "tmpfs");
    ok = ok && run({"btrfs", "subvolume", "create", (r / "btrfs/sub").string()}).code == 0 &&
         run({"btrfs", "subvolume", "create", (r / "btrfs/other").string()}).code == 0;
    // overlayfs with both layers on tmpfs, and with the lower layer on btrfs (another fs).
    for (const auto& dir : {"tmpfs/lower", "tmpfs/upper", "tmpfs/work", "tmpfs/upper2",
                            "tmpfs/work2", "btrfs/lower"}) {
      fs::create_directories(r / dir);
    }
    test::write_text(r / "tmpfs/lower/copied.lock", "");
    test::write_text(r / "btrfs/lower/copied.lock", "");
    ok =
        ok &&
        m.mount({"mount", "-t", "overlay", "overlay", "-o",
                 "lowerdir=" + (r / "tmpfs/lower").string() + ",upperdir=" +
                     (r / "tmpfs/upper").string() + ",workdir=" + (r / "tmpfs/work").string(),
                 (r / "overlay-same").string()},
                r / "overlay-same") &&
        m.mount({"mount", "-t", "overlay", "overlay", "-o",
                 "lowerdir=" + (r / "btrfs/lower").string() + ",upperdir=" +
                     (r / "tmpfs/upper2").string() + ",workdir=" + (r / "tmpfs/work2").string(),
                 (r / "overlay-mixed").string()},
                r / "overlay-mixed") &&
        m.mount({"mount", "--bind", (r / "btrfs/sub").string(), (r / "bind").string()}, r / "bind");
    ready_ = ok;
  }
  static void TearDownTestSuite() {
    delete mounts_;
    delete root_;
    mounts_ = nullptr;
    root_ = nullptr;
  }

 protected:
  void SetUp() override {
    if (!ready_)
      GTEST_SKIP() << "needs root, mount namespaces, loop devices, mkfs.btrfs and mkfs.xfs";
  }

  static Paths paths_for(const std::string& name) {
    const fs::path r = root_->path();
    static int serial = 0;
    const std::string file = "l" + std::to_string(++serial) + ".lock";
    if (name == "hardlink") {
      test::write_text(r / "ext4" / file, "");
      fs::create_hard_link(r / "ext4" / file, r / "ext4" / ("link-" + file));
      return {name, r / "ext4" / file, r / "ext4" / ("link-" + file)};
    }
    if (name == "bind") return {name, r / "btrfs/sub" / file, r / "bind" / file};
    if (name == "btrfs-subvolume") return {name, r / "btrfs/sub" / file, r / "btrfs/sub" / file};
    if (name == "overlay-copied-up") {
      return {name, r / "overlay-same/copied.lock", r / "overlay-same/copied.lock"};
    }
    if (name == "overlay-mixed-copied-up") {
      return {name, r / "overlay-mixed/copied.lock", r / "overlay-mixed/copied.lock"};
    }
    return {name, r / name / file, r / name / file};
  }

  static TempDir* root_;
  static Mount* mounts_;
  static bool ready_;
};

TempDir* Filesystems::root_ = nullptr;
Mount* Filesystems::mounts_ = nullptr;
bool Filesystems::ready_ = false;

// `pidlock run FILE -- sh -c 'echo $$; read _'`: holds until its stdin closes.
struct Held {
  Child child;
  pid_t command_pid;
};

// `pidlock run PATH -- sh -c 'sh -c …'`: pidlock becomes the outer shell (its PID recorded), whose
// child, the inner shell, inherits the lock: two processes that share it.
Held hold_with_pidlock(const fs::path& path) {
  Child child = Child::spawn(
      {pidlock_binary(), "run", path.string(), "--", "sh", "-c", "sh -c 'echo $$; read _ || :'"});
  const std::string line = child.read_line();
  return {std::move(child), line.empty() ? -1 : std::stoi(line)};
}

json status_json(const fs::path& path, int expected_code) {
  const auto r = run({pidlock_binary(), "status", "--json", path.string()});
  EXPECT_EQ(r.code, expected_code) << r.out << r.err;
  return json::parse(r.out, nullptr, false);
}

TEST_P(Filesystems, StatusNamesTheVerifiedHolderAndASecondLockerIsRefused) {
  const Paths s = paths_for(GetParam());
  Held held = hold_with_pidlock(s.hold);
  ASSERT_GT(held.command_pid, 0);

  const json st = status_json(s.view, 75);
  EXPECT_EQ(st["state"], "held");
  EXPECT_EQ(st["evidence"], "kernel");
  EXPECT_EQ(st["holder"]["pid"], held.child.pid());
  EXPECT_EQ(st["holder"]["verified"], true);
  EXPECT_EQ(st["holder"]["record_agrees"], true);
  std::vector<pid_t> sharers;
  for (const auto& h : st["holders"]) sharers.push_back(h["pid"].get<pid_t>());
  EXPECT_NE(std::find(sharers.begin(), sharers.end(), held.command_pid), sharers.end())
      << "the command shares the lock: " << st.dump();

  const auto second = run({pidlock_binary(), "run", "-n", s.view.string(), "--", "true"});
  EXPECT_EQ(second.code, 75);
  EXPECT_EQ(
      second.err.rfind(
          "another installer is running (pid " + std::to_string(held.child.pid()) + ", sh, for", 0),
      0u)
      << second.err;

  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
  const json free = status_json(s.view, 0);
  EXPECT_EQ(free["state"], "free");
  EXPECT_EQ(free["record"], "previous");
}

TEST_P(Filesystems, AFlockHolderIsNamedToo) {
  const Paths s = paths_for(GetParam());
  if (!fs::exists(s.hold)) test::write_text(s.hold, "");
  Child flock = Child::spawn({"flock", s.hold.string(), "sh", "-c", "echo ready; read _ || :"});
  ASSERT_EQ(flock.read_line(), "ready");
  const json st = status_json(s.view, 75);
  EXPECT_EQ(st["holder"]["pid"], flock.pid());
  EXPECT_EQ(st["holder"]["verified"], true);
  flock.close_stdin();
  EXPECT_EQ(flock.wait(), 0);
}

INSTANTIATE_TEST_SUITE_P(Everywhere, Filesystems,
                         testing::Values("ext4", "xfs", "btrfs", "btrfs-subvolume", "tmpfs",
                                         "overlay-same", "overlay-mixed", "overlay-copied-up",
                                         "overlay-mixed-copied-up", "bind", "hardlink"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// btrfs numbers each subvolume's inodes from 256 under one superblock device, so /proc/locks
// names two different files alike. A lock on one must not make the other look held.
TEST_F(Filesystems, BtrfsFilesThatShareAKernelNameAreToldApart) {
  const fs::path r = root_->path();
  const fs::path held_file = r / "btrfs/sub/twin.lock";
  const fs::path other_file = r / "btrfs/other/twin.lock";
  test::write_text(held_file, "");
  test::write_text(other_file, "");
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat(held_file.c_str(), &a), 0);
  ASSERT_EQ(::stat(other_file.c_str(), &b), 0);
  ASSERT_EQ(a.st_ino, b.st_ino) << "the first file of two fresh subvolumes";
  ::chmod(other_file.c_str(), 0644);
  Held held = hold_with_pidlock(held_file);

  const json other = status_json(other_file, 0);
  EXPECT_EQ(other["state"], "free") << other.dump();
  const auto lock_other = run({pidlock_binary(), "run", "-n", other_file.string(), "--", "true"});
  EXPECT_EQ(lock_other.code, 0) << lock_other.err;

  // An unprivileged viewer cannot verify root's holder: the probe tells the twins apart.
  ::chmod(r.c_str(), 0755);
  const auto as_nobody = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              pidlock_binary(), "status", "--json", other_file.string()});
  EXPECT_EQ(as_nobody.code, 0) << as_nobody.out << as_nobody.err;
  const json seen = json::parse(as_nobody.out, nullptr, false);
  EXPECT_EQ(seen["state"], "free");
  EXPECT_EQ(seen["evidence"], "probe");
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
}

// --- PID and user namespaces -------------------------------------------------------------------

class Namespaces : public testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || !have("unshare")) GTEST_SKIP() << "needs root and unshare(1)";
    path_ = dir_ / "ns.lock";
    ::chmod(dir_.path().c_str(), 0755);
  }
  // argv run inside new PID (and, when asked, user) namespaces, with a /proc of their own.
  static std::vector<std::string> inside(std::vector<std::string> argv, bool user = false) {
    std::vector<std::string> full{"unshare"};
    if (user) full.insert(full.end(), {"--user", "--map-root-user"});
    full.insert(full.end(), {"--pid", "--fork", "--mount-proc"});
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
  }
  TempDir dir_;
  fs::path path_;
};

TEST_F(Namespaces, AHolderOutsideIsNeverReportedFree) {
  for (const bool user : {false, true}) {
    SCOPED_TRACE(user ? "user and PID namespaces" : "PID namespace");
    Held held = hold_with_pidlock(path_);
    const auto r = run(inside({pidlock_binary(), "status", "--json", path_.string()}, user));
    EXPECT_EQ(r.code, 75) << r.out << r.err;
    const json st = json::parse(r.out, nullptr, false);
    EXPECT_EQ(st["state"], "held");
    EXPECT_EQ(st["held"], true);
    EXPECT_EQ(st["evidence"], "probe");
    ASSERT_TRUE(st["holder"].is_object()) << st.dump();
    EXPECT_EQ(st["holder"]["verified"], false);
    EXPECT_EQ(st["holder"]["unverified_reason"], "pid_namespace");
    EXPECT_EQ(st["holder"]["pid"], held.child.pid()) << "the record's word, marked as such";

    const auto second =
        run(inside({pidlock_binary(), "run", "-n", path_.string(), "--", "true"}, user));
    EXPECT_EQ(second.code, 75);
    EXPECT_NE(second.err.find("it runs outside our PID namespace"), std::string::npos)
        << second.err;
    held.child.close_stdin();
    EXPECT_EQ(held.child.wait(), 0);

    const auto free = run(inside({pidlock_binary(), "status", "--json", path_.string()}, user));
    EXPECT_EQ(free.code, 0) << free.out << free.err;
    EXPECT_EQ(json::parse(free.out, nullptr, false)["state"], "free");
  }
}

// Inside a container, the kernel lists a lock under the PID of the process that took it, and
// hides the entry once that PID is gone from the container's view. Here `pidlock run` (pid 2
// inside) took the lock and was killed; its command, which inherited the lock, runs on. Status
// and the busy message name the command, verified, as they do from the host: not the record's
// dead pid 2, and not "outside our container".
TEST_F(Namespaces, AnHeirInsideIsNamedWhenTheLockerInsideDied) {
  const fs::path ready = dir_ / "ready";
  ASSERT_EQ(::mkfifo(ready.c_str(), 0600), 0);
  // pidlock becomes the outer shell (the locker, pid 2), whose child, the heir, inherits the lock
  // and says its PID ("; :" keeps the outer shell from exec'ing it in its own place).
  const fs::path heir = dir_ / "heir.sh";
  test::write_text(heir, "echo $$ >\"$1\"; exec sleep 600\n");
  const std::string script =
      "\"$0\" run \"$1\" -- sh -c 'sh \"$0\" \"$1\"; :' \"$3\" \"$2\" & locker=$!\n"
      "read command <\"$2\"\n"
      "kill -KILL $locker; wait $locker\n"  // reaped: its PID is gone from our view
      "echo \"locker $locker command $command\"\n"
      "\"$0\" status --json \"$1\"; echo \"status exit $?\"\n"
      "\"$0\" run -n \"$1\" -- true 2>&1; echo \"run exit $?\"\n";
  // When sh, the container's init, exits, the kernel kills the command with it.
  const auto r = run({"unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", script,
                      pidlock_binary(), path_.string(), ready.string(), heir.string()});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::istringstream lines(r.out);
  std::string ids, status_text, status_exit, busy_text, busy_exit;
  std::getline(lines, ids);
  std::getline(lines, status_text);
  std::getline(lines, status_exit);
  std::getline(lines, busy_text);
  std::getline(lines, busy_exit);
  pid_t locker = 0, command = 0;
  std::string word;
  std::istringstream(ids) >> word >> locker >> word >> command;
  ASSERT_EQ(locker, 2) << r.out;
  ASSERT_GT(command, 2) << r.out;

  EXPECT_EQ(status_exit, "status exit 75") << r.out;
  const json st = json::parse(status_text, nullptr, false);
  EXPECT_EQ(st["state"], "held") << r.out;
  ASSERT_TRUE(st["holder"].is_object()) << r.out;
  EXPECT_EQ(st["holder"]["pid"], command) << r.out;
  EXPECT_EQ(st["holder"]["verified"], true) << r.out;
  EXPECT_EQ(st["holder"]["command"], "sleep") << r.out;
  EXPECT_EQ(st["recorded_pid"], 2);
  EXPECT_EQ(st["record"], "stale") << r.out;
  for (const auto& warning : st["warnings"]) {
    EXPECT_EQ(warning.get<std::string>().find("outside our container"), std::string::npos) << r.out;
  }
  EXPECT_EQ(busy_exit, "run exit 75") << r.out;
  EXPECT_EQ(busy_text.find("another installer is running (pid " + std::to_string(command) +
                           ", sleep, for "),
            0u)
      << r.out;
}

TEST_F(Namespaces, AnUnprivilegedViewerInARootlessContainerWhoCannotOpenTheFileCannotTell) {
  Held held = hold_with_pidlock(path_);  // a 0600 file of root's
  const auto r = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare",
                      "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
                      pidlock_binary(), "status", "--json", path_.string()});
  EXPECT_EQ(r.code, 69) << r.out << r.err;
  const json st = json::parse(r.out, nullptr, false);
  EXPECT_EQ(st["state"], "unknown");
  EXPECT_EQ(st["held"], nullptr);
  EXPECT_EQ(st["evidence"], "none");
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
}

TEST_F(Namespaces, AHolderInAChildNamespaceIsShownWithOurPidAndItsRecordAgrees) {
  Child held = Child::spawn(inside(
      {pidlock_binary(), "run", path_.string(), "--", "sh", "-c", "sh -c 'echo $$; read _ || :'"}));
  ASSERT_EQ(held.read_line(), "2") << "the inner shell is pid 2 in its namespace, pidlock (which "
                                      "became the outer one) pid 1";
  const json st = status_json(path_, 75);
  EXPECT_EQ(st["evidence"], "kernel");
  EXPECT_EQ(st["holder"]["verified"], true);
  EXPECT_EQ(st["recorded_pid"], 1);
  EXPECT_EQ(st["record"], "agrees") << st.dump();
  const pid_t outer = st["holder"]["pid"].get<pid_t>();
  EXPECT_NE(outer, 1);
  EXPECT_EQ(st["holder"]["command"], "sh");
  // Our PID for it: its parent is the unshare(1) we started.
  std::ifstream stat("/proc/" + std::to_string(outer) + "/stat");
  std::string pid, comm, state;
  pid_t parent = 0;
  stat >> pid >> comm >> state >> parent;
  EXPECT_EQ(parent, held.pid());
  held.close_stdin();
  EXPECT_EQ(held.wait(), 0);
}

TEST_F(Namespaces, UnderHidepidTheHolderIsAnUnverifiedObject) {
  if (!have("setpriv")) GTEST_SKIP() << "needs setpriv(1)";
  Held held = hold_with_pidlock(path_);
  const std::string script =
      "mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=65534 "
      "--regid=65534 --clear-groups \"$0\" status --json \"$1\"";
  const auto r = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                      pidlock_binary(), path_.string()});
  EXPECT_EQ(r.code, 75) << r.out << r.err;
  const json st = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(st["holder"].is_object()) << r.out;
  EXPECT_EQ(st["holder"]["pid"], held.child.pid());
  EXPECT_EQ(st["holder"]["inspectable"], false);
  EXPECT_EQ(st["holder"]["verified"], false);
  EXPECT_EQ(st["holder"]["unverified_reason"], "hidepid");
  EXPECT_EQ(st["holder"]["command"], nullptr);
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
}

// After kill -9 of a `pidlock run` whose command keeps the lock, /proc/locks still names the
// dead pidlock's PID. A process that reuses it must not be shown as the holder to a viewer who
// cannot read its descriptors.
TEST_F(Namespaces, ARecycledPidIsNotShownAsTheHolderToAnUnprivilegedViewer) {
  if (!have("setpriv")) GTEST_SKIP() << "needs setpriv(1)";
  test::write_text(path_, "");
  ::chmod(path_.c_str(), 0644);
  Held held = hold_with_pidlock(path_);
  // The lock was taken a minute ago: start times are only as fine as a clock tick, and the
  // file's mtime as the kernel's coarse clock, so "started after" needs a margin.
  const timespec a_minute_ago[2] = {{0, UTIME_OMIT}, {::time(nullptr) - 60, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path_.c_str(), a_minute_ago, 0), 0);
  const pid_t dead = held.child.pid();
  held.child.signal(SIGKILL);
  EXPECT_EQ(held.child.wait(), 128 + SIGKILL);

  // Hand the dead PID to a process of nobody's: ns_last_pid names the PID the next fork gets
  // before it. Other processes on the machine may fork in between: try a few times.
  std::optional<Child> impostor;
  for (int attempt = 0; attempt < 50 && !impostor; ++attempt) {
    {
      std::ofstream last("/proc/sys/kernel/ns_last_pid");
      last << dead - 1;
    }
    Child candidate = Child::fork([] {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
      std::printf("ready\n");
      std::fflush(stdout);
      test::wait_for_eof_on_stdin();
      return 0;
    });
    ASSERT_EQ(candidate.read_line(), "ready");
    if (candidate.pid() == dead) impostor.emplace(std::move(candidate));
  }
  if (!impostor) {
    ::kill(held.command_pid, SIGKILL);
    GTEST_SKIP() << "could not get the PID back";
  }
  const auto r = run({"setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                      pidlock_binary(), "status", "--json", path_.string()});
  EXPECT_EQ(r.code, 75) << r.err;
  const json st = json::parse(r.out, nullptr, false);
  EXPECT_EQ(st["holder"]["pid"], dead);
  EXPECT_EQ(st["holder"]["verified"], false);
  EXPECT_EQ(st["holder"]["unverified_reason"], "pid_reused");
  EXPECT_EQ(st["holder"]["command"], nullptr) << "never the impostor's name";
  EXPECT_NE(st["record"], "agrees");
  ::kill(held.command_pid, SIGKILL);
}

TEST_F(Namespaces, WithoutProcStatusStillTellsHeldFromFreeAndSaysWhatItCannotSee) {
#ifdef __SANITIZE_ADDRESS__
  // LeakSanitizer reads /proc at exit, and its options from /proc/self/environ: a sanitized
  // pidlock cannot run without /proc. The -Werror suite runs this test.
  GTEST_SKIP() << "a sanitized pidlock needs /proc";
#endif
  Held held = hold_with_pidlock(path_);
  const std::string script = "umount -l /proc && exec \"$0\" status --json \"$1\"";
  const auto r = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                      pidlock_binary(), path_.string()});
  EXPECT_EQ(r.code, 75) << r.out << r.err;
  const json st = json::parse(r.out, nullptr, false);
  EXPECT_EQ(st["state"], "held");
  EXPECT_EQ(st["evidence"], "probe");
  EXPECT_EQ(st["holder"]["pid"], held.child.pid());
  EXPECT_EQ(st["holder"]["unverified_reason"], "no_proc");
  const std::string run_script = "umount -l /proc && exec \"$0\" run -n \"$1\" true";
  const auto second = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", run_script,
                           pidlock_binary(), path_.string()});
  EXPECT_EQ(second.code, 75);
  EXPECT_NE(second.err.find("/proc is not available; the record says pid " +
                            std::to_string(held.child.pid())),
            std::string::npos)
      << second.err;
  held.child.close_stdin();
  EXPECT_EQ(held.child.wait(), 0);
  const auto free = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                         pidlock_binary(), path_.string()});
  EXPECT_EQ(free.code, 0) << free.out << free.err;
}

// --- other users ---------------------------------------------------------------------------------

TEST(OtherUsers, NewLockFilesAreTheOwnersAloneAndStatusWarnsWhenOthersMayOpenOne) {
  TempDir dir;
  ASSERT_EQ(run({pidlock_binary(), "run", (dir / "new").string(), "--", "true"}).code, 0);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const json mine = status_json(dir / "new", 0);
  EXPECT_EQ(mine["file_mode"], "0600");
  for (const auto& warning : mine["warnings"]) {
    EXPECT_EQ(warning.get<std::string>().find("may open the lock file"), std::string::npos);
  }
  test::write_text(dir / "open", "");
  ::chmod((dir / "open").c_str(), 0644);
  const json open = status_json(dir / "open", 0);
  EXPECT_NE(open.dump().find("every user may open the lock file (mode 0644"), std::string::npos)
      << open.dump();
}

TEST(OtherUsers, AHolderWhoDoesNotOwnTheFileIsNamedAsSuch) {
  if (::geteuid() != 0 || !have("setpriv")) GTEST_SKIP() << "needs root and setpriv(1)";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const fs::path path = dir / "root.lock";
  test::write_text(path, "");
  ::chmod(path.c_str(), 0644);  // readable: so anyone may flock it
  Child squatter =
      Child::spawn({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "flock", "-s",
                    path.string(), "sh", "-c", "echo ready; read _ || :"});
  ASSERT_EQ(squatter.read_line(), "ready");
  const auto busy = run({pidlock_binary(), "run", "-n", path.string(), "--", "true"});
  EXPECT_EQ(busy.code, 75);
  EXPECT_NE(busy.err.find("user nobody (not the lock file's owner)"), std::string::npos)
      << busy.err;
  const json st = status_json(path, 75);
  EXPECT_EQ(st["holder"]["foreign_user"], true);
  EXPECT_EQ(st["holder"]["user"], "nobody");
  squatter.close_stdin();
  EXPECT_EQ(squatter.wait(), 0);
}

// --- the caller itself, and kernel interfaces ----------------------------------------------------

TEST(Self, AProcessThatInheritedTheLockIsToldItHoldsItItself) {
  TempDir dir;
  const auto r = run({pidlock_binary(), "run", "--exec", (dir / "l").string(), "--",
                      pidlock_binary(), "run", "-w", "0.2", (dir / "l").string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(r.err.rfind("another installer is running (pid ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(", this process, "), std::string::npos) << r.err;
}

struct Interface {
  std::string path;
  std::string filesystem;
};

class KernelInterfaces : public testing::TestWithParam<Interface> {};

TEST_P(KernelInterfaces, AreRefusedBeforeAnythingIsWritten) {
  const auto& [path, filesystem] = GetParam();
  if (!fs::exists(path)) GTEST_SKIP() << path << " is not here";
  const std::string before = test::read_text(path);
  const auto r = run({pidlock_binary(), "run", path, "--", "true"});
  EXPECT_EQ(r.code, 73) << r.err;
  EXPECT_NE(r.err.find("refusing a lock file on " + filesystem + ", a kernel interface"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(test::read_text(path), before);
  const auto st = run({pidlock_binary(), "status", path});
  EXPECT_EQ(st.code, 66) << st.err;
}

INSTANTIATE_TEST_SUITE_P(Kernel, KernelInterfaces,
                         testing::Values(Interface{"/proc/sys/fs/lease-break-time", "proc"},
                                         Interface{"/proc/sys/kernel/pid_max", "proc"},
                                         Interface{"/sys/kernel/mm/transparent_hugepage/enabled",
                                                   "sysfs"}),
                         [](const auto& param_info) { return std::to_string(param_info.index); });

// Where a cgroup hierarchy is mounted, from /proc/self/mountinfo: " - cgroup2 " or " - cgroup ".
std::optional<std::pair<fs::path, std::string>> cgroup_mount() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    for (const std::string type : {"cgroup2", "cgroup"}) {
      if (line.find(" - " + type + " ") == std::string::npos) continue;
      std::istringstream fields(line);
      std::string id, parent, device, root, point;
      fields >> id >> parent >> device >> root >> point;
      return std::pair{fs::path(point), type};
    }
  }
  return std::nullopt;
}

TEST(KernelInterface, CgroupFilesAreRefusedAndNoCgroupIsMadeForAMissingDirectory) {
  const auto cgroup = cgroup_mount();
  if (!cgroup) GTEST_SKIP() << "no cgroup filesystem mounted";
  const auto& [point, type] = *cgroup;
  const fs::path procs = point / "cgroup.procs";
  const std::string before = test::read_text(procs);
  const auto r = run({pidlock_binary(), "run", procs.string(), "--", "true"});
  EXPECT_EQ(r.code, 73) << r.err;
  EXPECT_NE(r.err.find("refusing a lock file on " + type + ", a kernel interface"),
            std::string::npos)
      << r.err;

  const fs::path group = point / ("pidlock-test-" + std::to_string(::getpid()));
  const auto nested = run({pidlock_binary(), "run", (group / "x.lock").string(), "--", "true"});
  EXPECT_EQ(nested.code, 73) << nested.err;
  EXPECT_FALSE(fs::exists(group)) << "a cgroup was created";
  if (fs::exists(group)) ::rmdir(group.c_str());
}

}  // namespace
}  // namespace pidlock
