// pidlock status against bytes chosen by someone else: a holder whose comm and argv carry
// terminal escapes, a newline and invalid UTF-8, and lock paths that do. The human output must
// not let them act on the terminal or forge a line; the JSON must parse in any parser and give
// back the exact bytes by the rule pidlock(1) documents.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "support.hpp"

namespace pidlock {
namespace {

using test::Child;
using test::pidlock_binary;
using test::run;
using test::TempDir;

// Seen through /proc by any other user, and all chosen by the holder. Comm is cut at 15 bytes,
// here in the middle of 安 (E5 AE 89), leaving its first byte alone.
const std::string long_name = "ab安装安装安装";
const std::string cut_comm = "ab安装安装\xe5";
const std::string cut_comm_shown = "ab安装安装\\xe5";
const std::string hostile_argv0 = "\x1b]0;pwned\a\x1b[2Jsh";
const std::string forged_line = "line one\n/tmp/x: free";
const std::string invalid_arg = "\xff\xfe cut \xe5\xae";
const std::string script = "echo ready; read _ || :";

std::vector<std::string> hostile_argv() {
  return {hostile_argv0, "-c", script, forged_line, invalid_arg};
}

// A process that takes the lock with flock(2) itself and then execs sh through a symlink named
// long_name (comm is the name execve was given, cut) with hostile_argv(); sh inherits the
// locked descriptor, prints "ready" and holds the lock until its stdin closes.
Child hostile_holder(const std::filesystem::path& lock, const TempDir& dir) {
  const auto program = dir / long_name;
  std::filesystem::create_symlink("/bin/sh", program);
  Child child = Child::fork([lock, program] {
    const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_NOCTTY, 0644);  // inherited by sh
    if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      std::perror("lock");
      return 1;
    }
    std::vector<std::string> argv = hostile_argv();
    std::vector<char*> args;
    for (auto& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    ::execv(program.c_str(), args.data());
    std::perror("execv");
    return 127;
  });
  EXPECT_EQ(child.read_line(), "ready");
  return child;
}

// The warnings status adds as lines of their own (a world-writable $TMPDIR, say).
std::size_t warnings_about(const std::filesystem::path& lock) {
  const auto status = inspect(lock);
  EXPECT_TRUE(status) << status.error().message();
  return status ? status->warnings.size() : 0;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The bytes a terminal would act on: C0 controls other than the newline that ends each line,
// DEL, and C1 controls in their UTF-8 form (C2 80–C2 9F).
std::string raw_controls_in(const std::string& text) {
  std::string found;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    const bool c1 = b == 0xC2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9F;
    if ((b < 0x20 && b != '\n') || b == 0x7F || c1)
      found += std::to_string(b) + " at " + std::to_string(i) + "; ";
  }
  return found;
}

// Python's strict UTF-8 decoder as the judge, not ours.
bool python_finds_utf8(const TempDir& dir, const std::string& text) {
  test::write_text(dir / "out.txt", text);
  return run({"python3", "-c", "import sys; open(sys.argv[1], 'rb').read().decode('utf-8')",
              (dir / "out.txt").string()})
             .code == 0;
}

bool printable_ascii_line(const std::string& text) {
  if (text.empty() || text.back() != '\n') return false;
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x20 || b > 0x7E) return false;
  }
  return true;
}

std::string hex(const std::string& bytes) {
  std::string out;
  constexpr std::string_view digits = "0123456789abcdef";
  for (const char c : bytes) {
    out += digits[static_cast<unsigned char>(c) >> 4];
    out += digits[static_cast<unsigned char>(c) & 0x0Fu];
  }
  return out;
}

// Python's json module, as a script would read `pidlock status --json`: strict UTF-8, no NaN,
// and the documented decoding — a field's exact bytes are base64 of "<field>_base64" when that is
// present (and the field is then what Python's own decoder makes of them, U+FFFD for each
// maximal ill-formed subsequence), else the field in UTF-8. Prints the bytes of path,
// holder.command and each of holder.cmdline in hex, one per line.
constexpr const char* python_reader = R"(
import base64, json, sys

def refuse(name):
    raise ValueError("not JSON: " + name)

def exact(obj, key):
    value = obj[key]
    if key + "_base64" not in obj:
        return [v.encode("utf-8") for v in value] if isinstance(value, list) else value.encode("utf-8")
    coded = obj[key + "_base64"]
    if isinstance(value, list):
        raw = [base64.b64decode(c, validate=True) for c in coded]
        assert [r.decode("utf-8", "replace") for r in raw] == value, (raw, value)
        return raw
    raw = base64.b64decode(coded, validate=True)
    assert raw.decode("utf-8", "replace") == value, (raw, value)
    return raw

text = open(sys.argv[1], "rb").read().decode("utf-8")
doc = json.loads(text, parse_constant=refuse)
print("path", exact(doc, "path").hex())
holder = doc["holder"]
if holder is not None:
    print("command", exact(holder, "command").hex())
    print("cmdline", " ".join(arg.hex() for arg in exact(holder, "cmdline")))
)";

struct PythonView {
  int code = -1;
  std::string path, command, cmdline;  // hex
  std::string err;
};

PythonView read_with_python(const TempDir& dir, const std::string& json_text) {
  test::write_text(dir / "status.json", json_text);
  const auto r = run({"python3", "-c", python_reader, (dir / "status.json").string()});
  PythonView view{r.code, {}, {}, {}, r.err};
  for (const auto& line : lines_of(r.out)) {
    const auto space = line.find(' ');
    const std::string key = line.substr(0, space);
    const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (key == "path") view.path = value;
    if (key == "command") view.command = value;
    if (key == "cmdline") view.cmdline = value;
  }
  return view;
}

void expect_jq_accepts(const TempDir& dir, const std::string& json_text) {
  if (run({"sh", "-c", "command -v jq"}).code != 0) return;  // optional: python3 is the reference
  test::write_text(dir / "jq.json", json_text);
  const auto r = run({"jq", "-e", ".path", (dir / "jq.json").string()});
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(CliBytes, HostileHolderCannotDrawOnTheTerminalOrForgeLines) {
  TempDir dir;
  const auto lock = dir / "l";
  Child holder = hostile_holder(lock, dir);
  const auto r = run({pidlock_binary(), "status", lock.string()});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(raw_controls_in(r.out), "") << r.out;
  EXPECT_TRUE(python_finds_utf8(dir, r.out)) << r.out;
  const auto lines = lines_of(r.out);
  // Held by, command line, record; and whatever warnings the temporary directory earns.
  ASSERT_EQ(lines.size(), 3 + warnings_about(lock)) << r.out;
  EXPECT_EQ(lines[0].rfind(lock.string() + ": held by pid " + std::to_string(holder.pid()) + ", " +
                               cut_comm_shown + ", ",
                           0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[1],
            "  command line: \\e]0;pwned\\a\\e[2Jsh -c echo ready; read _ || : "
            "line one\\n/tmp/x: free \\xff\\xfe cut \\xe5\\xae");
  EXPECT_EQ(lines[2], "  record: empty");
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

TEST(CliBytes, TheBusyMessageNamingAHostileHolderIsOneEscapedLine) {
  TempDir dir;
  const auto lock = dir / "l";
  Child holder = hostile_holder(lock, dir);
  const auto r = run({pidlock_binary(), "run", "-n", lock.string(), "--", "true"});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(raw_controls_in(r.err), "") << r.err;
  EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_EQ(
      r.err.rfind("another installer is running (pid " + std::to_string(holder.pid()) + ", ", 0),
      0u)
      << r.err;
}

TEST(CliBytes, HostileHolderJsonParsesAndGivesBackTheExactBytes) {
  TempDir dir;
  const auto lock = dir / "l";
  Child holder = hostile_holder(lock, dir);
  const auto r = run({pidlock_binary(), "status", "--json", lock.string()});
  ASSERT_EQ(r.code, 75) << r.err;
  EXPECT_TRUE(printable_ascii_line(r.out)) << r.out;

  const PythonView python = read_with_python(dir, r.out);
  ASSERT_EQ(python.code, 0) << python.err;
  EXPECT_EQ(python.path, hex(lock.string()));
  EXPECT_EQ(python.command, hex(cut_comm));
  std::string argv_hex;
  for (const auto& arg : hostile_argv()) argv_hex += (argv_hex.empty() ? "" : " ") + hex(arg);
  EXPECT_EQ(python.cmdline, argv_hex);
  expect_jq_accepts(dir, r.out);

  // The readable fields, as a reader that ignores the _base64 ones would see them.
  const auto json = nlohmann::json::parse(r.out);
  const auto& h = json["holder"];
  EXPECT_EQ(h["command"], "ab安装安装\xef\xbf\xbd");
  EXPECT_FALSE(json.contains("path_base64"));  // a UTF-8 path needs none
  ASSERT_EQ(h["cmdline"].size(), 5u);
  EXPECT_EQ(h["cmdline"][0], hostile_argv0);  // valid UTF-8: JSON escapes the controls itself
  EXPECT_EQ(h["cmdline"][4], "\xef\xbf\xbd\xef\xbf\xbd cut \xef\xbf\xbd");
  ASSERT_EQ(h["cmdline_base64"].size(), 5u);  // one per element, so that indices match
  EXPECT_EQ(h["cmdline_base64"][1], "LWM=");  // "-c"
  holder.close_stdin();
  EXPECT_EQ(holder.wait(), 0);
}

// A file name with a newline, an escape sequence and invalid UTF-8 in it.
const std::string hostile_file = "lock\n\xff\x1b[31mred\xe5\xae";
const std::string hostile_file_shown = "lock\\n\\xff\\e[31mred\\xe5\\xae";

TEST(CliBytes, HostileLockPathIsEscapedAndRoundTripsInJson) {
  TempDir dir;
  const auto lock = dir / hostile_file;
  Child holder = test::lock_holder(lock);

  const auto json_r = run({pidlock_binary(), "status", "--json", lock.string()});
  ASSERT_EQ(json_r.code, 75) << json_r.err;
  EXPECT_TRUE(printable_ascii_line(json_r.out)) << json_r.out;
  const PythonView python = read_with_python(dir, json_r.out);
  ASSERT_EQ(python.code, 0) << python.err;
  EXPECT_EQ(python.path, hex(lock.string()));
  expect_jq_accepts(dir, json_r.out);
  const auto json = nlohmann::json::parse(json_r.out);
  EXPECT_EQ(json["path"], dir.path().string() + "/lock\n\xef\xbf\xbd\x1b[31mred\xef\xbf\xbd");

  const auto r = run({pidlock_binary(), "status", lock.string()});
  EXPECT_EQ(r.code, 75);
  EXPECT_EQ(raw_controls_in(r.out), "") << r.out;
  EXPECT_TRUE(python_finds_utf8(dir, r.out)) << r.out;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3 + warnings_about(lock)) << r.out;  // held by, command line, record
  EXPECT_EQ(lines[0].rfind(dir.path().string() + "/" + hostile_file_shown + ": held by pid " +
                               std::to_string(holder.pid()) + ", ",
                           0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[2], "  record: pid " + std::to_string(holder.pid()) + " (agrees)");
}

TEST(CliBytes, HostileMissingLockPathIsOneEscapedLine) {
  TempDir dir;
  const auto lock = dir / hostile_file;
  const auto r = run({pidlock_binary(), "status", lock.string()});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, dir.path().string() + "/" + hostile_file_shown + ": free (no lock file)\n");
  const auto json_r = run({pidlock_binary(), "status", "--json", lock.string()});
  EXPECT_EQ(json_r.code, 0);
  EXPECT_TRUE(printable_ascii_line(json_r.out)) << json_r.out;
  const PythonView python = read_with_python(dir, json_r.out);
  ASSERT_EQ(python.code, 0) << python.err;
  EXPECT_EQ(python.path, hex(lock.string()));
}

// A failure message quotes the path too.
TEST(CliBytes, FailureNamingAHostilePathIsOneEscapedLine) {
  TempDir dir;
  test::write_text(dir / hostile_file, "");
  const auto r = run({pidlock_binary(), "status", (dir / hostile_file / "l").string()});
  EXPECT_EQ(r.code, 66);
  EXPECT_EQ(r.err, "pidlock: open " + dir.path().string() + "/" + hostile_file_shown +
                       "/l: Not a directory\n");
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace pidlock
