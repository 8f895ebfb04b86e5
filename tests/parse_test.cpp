// The record and /proc parsers, on captured and hostile samples.
#include <gtest/gtest.h>

#include "fstype.hpp"
#include "pidlock/pidlock.hpp"
#include "proc_parse.hpp"
#include "record.hpp"

namespace pidlock {
namespace {

TEST(Record, FormatIsPidAndNewline) {
  EXPECT_EQ(record::format(4242).view(), "4242\n");
  EXPECT_EQ(record::format(1).view(), "1\n");
  EXPECT_EQ(record::format(4194304).view(), "4194304\n");
}

TEST(Record, ParsesWhatFormatWrites) {
  for (pid_t pid : {1, 42, 4242, 65535, 4194304}) {
    EXPECT_EQ(record::parse(record::format(pid).view()), pid);
  }
}

TEST(Record, OnlyTheFirstLineCounts) {
  // A reader that catches "99\n" written over "12345\n" before the truncate.
  EXPECT_EQ(record::parse("99\n45\n"), 99);
}

TEST(Record, ToleratesBlanksAroundTheNumber) {
  EXPECT_EQ(record::parse("  4242 \n"), 4242);
  EXPECT_EQ(record::parse("4242"), 4242);
  EXPECT_EQ(record::parse("4242\r\n"), 4242);
}

TEST(Record, RejectsWhatNamesNoProcess) {
  for (std::string_view junk : {"", " ", "\n", "abc", "-1", "0", "+5", "4194305", "99999999999",
                                "12 34", "0x10", "42abc", "\n42", "1e3"}) {
    EXPECT_FALSE(record::parse(junk)) << '"' << junk << '"';
  }
  EXPECT_FALSE(
      record::parse(std::string_view("4\0"
                                     "2",
                                     3)));
}

TEST(Record, Blank) {
  EXPECT_TRUE(record::blank(""));
  EXPECT_TRUE(record::blank(" \n\t"));
  EXPECT_FALSE(record::blank(" x "));
}

TEST(ProcLocks, ParsesAGrantedFlock) {
  const auto line = proc::parse_lock_line("1: FLOCK  ADVISORY  WRITE 2326 fe:00:10952837 0 EOF");
  ASSERT_TRUE(line);
  EXPECT_FALSE(line->blocked);
  EXPECT_EQ(line->kind, proc::LockKind::flock);
  EXPECT_TRUE(line->write);
  EXPECT_EQ(line->pid, 2326);
  EXPECT_EQ(line->file, (proc::FileId{0xfe, 0x00, 10952837}));
}

TEST(ProcLocks, ParsesABlockedWaiter) {
  const auto line = proc::parse_lock_line("1: -> FLOCK  ADVISORY  WRITE 2349 fe:00:10952837 0 EOF");
  ASSERT_TRUE(line);
  EXPECT_TRUE(line->blocked);
  EXPECT_EQ(line->pid, 2349);
}

TEST(ProcLocks, ParsesOtherKinds) {
  const auto posix = proc::parse_lock_line("2: POSIX  ADVISORY  READ 812 00:1a:4242 0 EOF");
  ASSERT_TRUE(posix);
  EXPECT_EQ(posix->kind, proc::LockKind::posix);
  EXPECT_FALSE(posix->write);
  const auto ofd = proc::parse_lock_line("3: OFDLCK ADVISORY  WRITE -1 08:01:77 0 0");
  ASSERT_TRUE(ofd);
  EXPECT_EQ(ofd->kind, proc::LockKind::ofd);
  EXPECT_EQ(ofd->pid, -1);
  const auto lease = proc::parse_lock_line("4: LEASE  ACTIVE    READ 900 103:02:5 0 EOF");
  ASSERT_TRUE(lease);
  EXPECT_EQ(lease->kind, proc::LockKind::lease);
  EXPECT_EQ(lease->file.major, 0x103u);
}

TEST(ProcLocks, RejectsMalformedLines) {
  for (std::string_view bad :
       {"", "1:", "1: FLOCK", "1: FLOCK ADVISORY WRITE x fe:00:1 0 EOF",
        "1: FLOCK ADVISORY WRITE 5 fe:00 0 EOF", "FLOCK ADVISORY WRITE 5 fe:00:1",
        "1: FLOCK ADVISORY WRITE 5 zz:00:1 0 EOF", "1: -> "}) {
    EXPECT_FALSE(proc::parse_lock_line(bad)) << bad;
  }
}

TEST(ProcLocks, ForEachSkipsJunkLines) {
  int count = 0;
  proc::for_each_lock_line(
      "1: FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF\ngarbage\n2: -> FLOCK  ADVISORY  WRITE 2 fe:00:1 "
      "0 EOF",
      [&](const proc::LockLine&) { ++count; });
  EXPECT_EQ(count, 2);
}

TEST(FdInfo, ParsesInodeAndLocks) {
  const auto info = proc::parse_fdinfo(
      "pos:\t0\nflags:\t0100000\nmnt_id:\t27\nino:\t10952858\n"
      "lock:\t1: FLOCK  ADVISORY  WRITE 2378 fe:00:10952858 0 EOF\n");
  EXPECT_EQ(info.inode, 10952858u);
  EXPECT_EQ(info.mount_id, 27);
  ASSERT_EQ(info.locks.size(), 1u);
  EXPECT_EQ(info.locks[0].pid, 2378);
  EXPECT_EQ(info.locks[0].file.inode, 10952858u);
}

TEST(FdInfo, WithoutLocks) {
  const auto info = proc::parse_fdinfo("pos:\t0\nflags:\t02\n");
  EXPECT_FALSE(info.inode);
  EXPECT_TRUE(info.locks.empty());
}

TEST(Stat, ParsesCommandParentAndStartTime) {
  const auto stat = proc::parse_stat(
      "2378 (flock) S 1 2378 2378 0 -1 4194560 113 0 0 0 0 0 0 0 20 0 1 0 46698 2539520 "
      "104 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0");
  ASSERT_TRUE(stat);
  EXPECT_EQ(stat->command, "flock");
  EXPECT_EQ(stat->parent, 1);
  EXPECT_EQ(stat->start_ticks, 46698u);
}

TEST(Stat, CommandMayHoldParenthesesAndSpaces) {
  const auto stat =
      proc::parse_stat("7 (a) b (c)) R 5 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0");
  ASSERT_TRUE(stat);
  EXPECT_EQ(stat->command, "a) b (c)");
  EXPECT_EQ(stat->parent, 5);
  EXPECT_EQ(stat->start_ticks, 123u);
}

TEST(Stat, RejectsTruncatedText) {
  EXPECT_FALSE(proc::parse_stat("7 (x) R 5 7"));
  EXPECT_FALSE(proc::parse_stat("no parentheses"));
  EXPECT_FALSE(proc::parse_stat(")("));
}

TEST(Status, EffectiveUid) {
  EXPECT_EQ(proc::parse_status("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\n").euid, 0u);
  EXPECT_FALSE(proc::parse_status("Name:\tx\n").euid);
}

TEST(Status, NamespacePidsFromTheReadersNamespaceInward) {
  const auto fields = proc::parse_status("Name:\tsleep\nNSpid:\t4242\t17\t1\nUid:\t0\t0\t0\t0\n");
  EXPECT_EQ(fields.namespace_pids, (std::vector<pid_t>{4242, 17, 1}));
  EXPECT_TRUE(proc::parse_status("NSpid:\t12\tx\n").namespace_pids.empty());
  // "NSpidX:" is another field, not this one.
  EXPECT_TRUE(proc::parse_status("NSpidX:\t12\n").namespace_pids.empty());
}

TEST(MountInfo, TheSuperblockDeviceOfAMount) {
  constexpr std::string_view text =
      "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
      "43 27 0:39 / /mnt/bt rw,relatime - btrfs /dev/loop0 rw,subvol=/\n"
      "46 27 0:43 / /mnt/ovl rw,relatime - overlay overlay rw,lowerdir=/a\n";
  EXPECT_EQ(proc::mount_device(text, 43), (proc::Device{0, 39}));
  EXPECT_EQ(proc::mount_device(text, 46), (proc::Device{0, 43}));
  EXPECT_FALSE(proc::mount_device(text, 4));
  EXPECT_FALSE(proc::mount_device("43 27 junk / /x - a b c\n", 43));
  EXPECT_FALSE(proc::mount_device("", 43));
}

TEST(Cmdline, SplitsOnNul) {
  using namespace std::string_literals;
  EXPECT_EQ(proc::parse_cmdline("sh\0-c\0echo hi\0"s),
            (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_TRUE(proc::parse_cmdline("").empty());
}

TEST(Children, SpaceSeparatedPidsAndNothingElse) {
  EXPECT_EQ(proc::parse_children("4 7 1234 "), (std::vector<pid_t>{4, 7, 1234}));
  EXPECT_EQ(proc::parse_children("4\n"), (std::vector<pid_t>{4}));
  EXPECT_TRUE(proc::parse_children("").empty());
  EXPECT_EQ(proc::parse_children("0 -3 x 12a 99999999999 5"), (std::vector<pid_t>{5}));
}

TEST(Filesystem, NetworkFilesystemsAreFlaggedLocalOnesAreNot) {
  for (const long magic : {0x6969L, 0x65735546L, 0xFF534D42L, 0xFE534D42L, 0x517BL, 0x01021997L}) {
    const auto kind = fstype::classify(magic);
    EXPECT_TRUE(kind.network) << kind.name;
    ASSERT_TRUE(fstype::warning(kind));
    EXPECT_NE(fstype::warning(kind)->find("not reliable across hosts"), std::string::npos);
  }
  EXPECT_EQ(fstype::classify(0x6969).name, "nfs");
  EXPECT_EQ(fstype::classify(0x01021994).name, "tmpfs");
  EXPECT_FALSE(fstype::classify(0xEF53).network);
  EXPECT_FALSE(fstype::warning(fstype::classify(0xEF53)));
  EXPECT_EQ(fstype::classify(0x12345678).name, "0x12345678");
}

TEST(Filesystem, TheLockDirectoryHereIsLocal) {
  EXPECT_FALSE(unreliable_filesystem("/tmp"));
  auto status = inspect("/tmp/pidlock-no-such-file");
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->warnings.size() <= 1);  // /tmp is world-writable: that warning, no other
}

}  // namespace
}  // namespace pidlock
