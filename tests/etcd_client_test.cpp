// The etcd client from below: base64, the wire format and slot records on their own; the typed
// calls against a real etcd on loopback ports and against endpoints that are not etcd.
#include "fleet/etcd_client.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "base64.hpp"
#include "escape.hpp"
#include "fleet/certificate.hpp"
#include "fleet/errors.hpp"
#include "fleet/keys.hpp"
#include "fleet/slot_record.hpp"
#include "fleet/timing.hpp"
#include "fleet/wire.hpp"
#include "fleet_support.hpp"

namespace pidlock::fleet {
namespace {

using namespace std::chrono_literals;
using test::Cluster;
using test::FakeEndpoint;
using Clock = std::chrono::steady_clock;

// --- Base64 ---

TEST(Base64, EncodesAndDecodesTheRfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [bytes, text] : vectors) {
    EXPECT_EQ(base64::encode(bytes), text);
    EXPECT_EQ(base64::decode(text), bytes) << text;
  }
}

TEST(Base64, RoundTripsEveryByte) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  for (std::size_t length = 0; length <= bytes.size(); length += 37) {
    const auto part = bytes.substr(0, length);
    EXPECT_EQ(base64::decode(base64::encode(part)), part) << length;
  }
  EXPECT_EQ(base64::encode("\xfb\xff"), "+/8=");  // the last two letters of the alphabet
}

TEST(Base64, RefusesWhatIsNotACanonicalEncoding) {
  for (const std::string text : {"Zg", "Zg=", "Zm9vY", "Z===", "====", "Zm9v!", "Zm9v Zg==",
                                 " Zg==", "Zg==\n", "Zg==Zg==", "Zm=v", "Zh==", "Zm9=", "Zg-_"}) {
    EXPECT_FALSE(base64::decode(text)) << text;
  }
  EXPECT_FALSE(base64::decode(std::string("Zm\0v", 4)));
}

// --- Errors ---

TEST(Errors, FleetFailuresNameTheirPlace) {
  const auto e = Errors::failure(errc::unreachable, "lease grant", "http://127.0.0.1:1",
                                 "etcd: Couldn't connect to server");
  EXPECT_EQ(e.kind(), ErrorKind::unreachable);
  EXPECT_EQ(e.place(), "http://127.0.0.1:1");
  EXPECT_EQ(e.message(),
            "pidlock: lease grant http://127.0.0.1:1: etcd: Couldn't connect to server");
}

// One table: each failure of the etcd client has a code, and the code decides the kind.
TEST(Errors, EachClientFailureHasOneCodeAndOneKind) {
  const std::pair<etcd::FailureKind, std::pair<errc, ErrorKind>> table[] = {
      {etcd::FailureKind::unreachable, {errc::unreachable, ErrorKind::unreachable}},
      {etcd::FailureKind::timeout, {errc::timed_out, ErrorKind::unreachable}},
      {etcd::FailureKind::etcd_error, {errc::etcd_error, ErrorKind::etcd_error}},
      {etcd::FailureKind::malformed_response, {errc::malformed_response, ErrorKind::etcd_error}},
      {etcd::FailureKind::client_setup, {errc::client_setup, ErrorKind::system}},
      {etcd::FailureKind::tls, {errc::tls_failed, ErrorKind::tls}},
      {etcd::FailureKind::auth, {errc::auth_failed, ErrorKind::authentication}},
      {etcd::FailureKind::permission, {errc::permission_denied, ErrorKind::permission_denied}},
  };
  for (const auto& [failure_kind, meaning] : table) {
    etcd::Failure failure;
    failure.kind = failure_kind;
    failure.operation = "range";
    failure.endpoint = "http://127.0.0.1:1";
    const Error error = error_of(failure, Options{});
    EXPECT_EQ(error.code(), meaning.first) << error.message();
    EXPECT_EQ(error.kind(), meaning.second) << error.message();
  }
  EXPECT_EQ(kind_of(errc::slot_lost), ErrorKind::lease_lost);
  EXPECT_EQ(kind_of(errc::slot_count_mismatch), ErrorKind::slot_count_mismatch);
}

// A fleet holder's record says when it took its slot: "for" is how long it has held it.
TEST(Describe, AFleetHolderIsNamedWithItsHost) {
  SlotHolder holder;
  holder.pid = 77;
  holder.host = "web-2";
  holder.held_for = std::chrono::seconds(9);
  EXPECT_EQ(describe(holder), "pid 77 on web-2, for 9s");
}

// --- Keys ---

TEST(Keys, NamesWithoutPercentOrSlashKeepTheirKeys) {
  EXPECT_EQ(keys::slots_prefix("pidlock/", "web"), "pidlock/web/slots/");
  EXPECT_EQ(keys::waiters_prefix("pidlock/", "web"), "pidlock/web/waiters/");
  EXPECT_EQ(keys::encode("a b:c.d-\x01\xff"), "a b:c.d-\x01\xff");
  EXPECT_EQ(keys::encode("a/slots/0"), "a%2Fslots%2F0");
  EXPECT_EQ(keys::encode("100%/x"), "100%25%2Fx");
  EXPECT_EQ(keys::slots_prefix("p/", "a/b"), "p/a%2Fb/slots/");
}

TEST(Keys, DecodeUndoesEncodeAndRefusesWhatEncodeNeverWrites) {
  for (const std::string name : {"", "a", "a/slots/0", "%", "%%2F/", "/", "%25", "%2f"}) {
    EXPECT_EQ(keys::decode(keys::encode(name)), name) << name;
  }
  for (const std::string text : {"a/b", "%", "%2", "%2f", "%41", "%zz", "a%"}) {
    EXPECT_FALSE(keys::decode(text)) << text;
  }
}

TEST(Keys, ThePrefixMustEndWithASlash) {
  EXPECT_TRUE(keys::check_prefix("pidlock/").empty());
  EXPECT_TRUE(keys::check_prefix("/").empty());
  EXPECT_TRUE(keys::check_prefix("a/b/").empty());
  EXPECT_FALSE(keys::check_prefix("").empty());
  EXPECT_FALSE(keys::check_prefix("pidlock").empty());
}

// Every name over a small alphabet rich in the bytes that matter, up to 5 long, against every
// other: no two share a key, nor does one's key range hold the other's.
TEST(Keys, NoTwoNamesShareKeys) {
  const std::string alphabet = "a/%2Fs";
  std::vector<std::string> names = {""};
  for (std::size_t begin = 0, length = 0; length < 5; ++length) {
    const std::size_t end = names.size();
    for (std::size_t i = begin; i < end; ++i) {
      for (const char c : alphabet) names.push_back(names[i] + c);
    }
    begin = end;
  }
  names.erase(names.begin());  // the empty name is refused before any key is made
  std::set<std::string> prefixes;
  for (const auto& name : names) prefixes.insert(keys::slots_prefix("pidlock/", name));
  ASSERT_EQ(prefixes.size(), names.size());
  // In sorted order, a key range that held another name's would sit right before it.
  std::string previous;
  for (const auto& prefix : prefixes) {
    if (!previous.empty()) {
      EXPECT_FALSE(prefix.starts_with(previous)) << previous << " " << prefix;
    }
    previous = prefix;
  }
  for (const auto& name : names) {
    const auto slots = keys::slots_prefix("pidlock/", name);
    EXPECT_FALSE(prefixes.contains(keys::waiters_prefix("pidlock/", name)));
    EXPECT_EQ(keys::decode(slots.substr(8, slots.size() - 8 - 7)), name);
  }
}

// Random bytes, any length: encode is injective and its output holds no '/'.
TEST(Keys, RandomNamesRoundTrip) {
  std::mt19937 random(20240611);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(1, 40);
  std::set<std::string> names;
  std::set<std::string> encoded;
  for (int i = 0; i < 20000; ++i) {
    std::string name;
    for (int n = length(random); n > 0; --n) {
      // Mostly '/', '%', '2', 'F': the bytes an encoding could confuse.
      const int b = byte(random);
      name += b < 160 ? "/%2F"[b % 4] : static_cast<char>(b);
    }
    const auto key = keys::encode(name);
    EXPECT_EQ(key.find('/'), std::string::npos);
    EXPECT_EQ(keys::decode(key), name);
    names.insert(name);
    encoded.insert(key);
  }
  EXPECT_EQ(names.size(), encoded.size());
}

// --- The wire format ---

TEST(Wire, ReadsTheGrpcStatusOfARefusedWatch) {
  const auto status = etcd::wire::parse_cancel_reason(
      "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 16);
  EXPECT_EQ(status->message, "etcdserver: invalid auth token");
  for (const std::string reason :
       {"", "mvcc: required revision has been compacted", "rpc error: code = OK desc = x",
        "rpc error: code = Bogus desc = x", "rpc error: code = NotFound"}) {
    EXPECT_FALSE(etcd::wire::parse_cancel_reason(reason)) << reason;
  }
}

TEST(Wire, ReadsAnAuthenticateAnswerAndChecksItsToken) {
  const auto ok =
      etcd::wire::parse_authenticate(R"({"header":{"revision":"3"},"token":"AbCdEf.12"})");
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_EQ(*ok, "AbCdEf.12");
  for (const std::string body :
       {R"({"header":{}})", R"({"header":{},"token":""})", R"({"header":{},"token":5})",
        R"({"token":"abc"})", R"({"header":{},"token":"a
X-Evil: 1"})",
        R"({"header":{},"token":"a b"})", "not json"}) {
    EXPECT_FALSE(etcd::wire::parse_authenticate(body)) << body;
  }
  EXPECT_FALSE(etcd::wire::parse_authenticate(R"({"header":{},"token":")" + std::string(9000, 'a') +
                                              R"("})"));
  EXPECT_EQ(etcd::wire::authenticate_request("u", "p\"w"), R"({"name":"u","password":"p\"w"})");
}

TEST(Wire, ReadsARangeAnswer) {
  const auto range = etcd::wire::parse_range(
      R"({"header":{"revision":"7"},"kvs":[{"key":"YQ==","value":"Yg==","create_revision":"5",)"
      R"("mod_revision":6,"version":"2","lease":"4111120304004526858"}],"count":"1"})");
  ASSERT_TRUE(range) << range.error();
  EXPECT_EQ(range->revision, 7);
  ASSERT_EQ(range->kvs.size(), 1u);
  EXPECT_EQ(range->kvs[0].key, "a");
  EXPECT_EQ(range->kvs[0].value, "b");
  EXPECT_EQ(range->kvs[0].create_revision, 5);
  EXPECT_EQ(range->kvs[0].mod_revision, 6);  // numbers as well as strings
  EXPECT_EQ(range->kvs[0].lease, 4111120304004526858);
  // proto3 leaves defaults out: no kvs is no keys.
  const auto empty = etcd::wire::parse_range(R"({"header":{"revision":"3"}})");
  ASSERT_TRUE(empty) << empty.error();
  EXPECT_TRUE(empty->kvs.empty());
}

TEST(Wire, SaysWhatIsWrongWithAMalformedAnswer) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "not JSON"},
      {"garbage", "not JSON"},
      {"[]", "not a JSON object"},
      {"{}", "header: missing"},
      {R"({"header":[]})", "header: not a JSON object"},
      {R"({"header":{"revision":"7x"}})", "header.revision: not a 64-bit integer"},
      {R"({"header":{"revision":1.5}})", "header.revision: not a 64-bit integer"},
      {R"({"header":{},"kvs":{}})", "kvs: not a JSON array"},
      {R"({"header":{},"kvs":[7]})", "kvs[0]: not a JSON object"},
      {R"({"header":{},"kvs":[{"key":"!!"}]})", "kvs[0].key: not base64"},
      {R"({"header":{},"kvs":[{"key":5}]})", "kvs[0].key: not base64"},
      {R"({"header":{},"kvs":[{"lease":18446744073709551615}]})",
       "kvs[0].lease: not a 64-bit integer"},
      {R"({"header":{},"kvs":[{"lease":"99999999999999999999"}]})",
       "kvs[0].lease: not a 64-bit integer"},
      {R"({"header":{},"kvs":[{"lease":true}]})", "kvs[0].lease: not a 64-bit integer"},
  };
  for (const auto& [body, problem] : cases) {
    const auto range = etcd::wire::parse_range(body);
    ASSERT_FALSE(range) << body;
    EXPECT_EQ(range.error(), problem) << body;
  }
}

TEST(Wire, ReadsGrantsTransactionsAndKeepAlives) {
  const auto lease = etcd::wire::parse_grant(R"({"header":{"revision":"1"},"ID":"42","TTL":"5"})");
  ASSERT_TRUE(lease) << lease.error();
  EXPECT_EQ(lease->id, 42);
  EXPECT_EQ(lease->ttl, 5s);
  EXPECT_EQ(etcd::wire::parse_grant(R"({"header":{},"TTL":"5"})").error(),
            "ID: missing: etcd granted no lease");
  EXPECT_EQ(etcd::wire::parse_grant(R"({"header":{},"ID":"42","TTL":"5","error":"no"})").error(),
            "error: no");

  const auto created =
      etcd::wire::parse_create_if_absent(R"({"header":{"revision":"9"},"succeeded":true})");
  ASSERT_TRUE(created) << created.error();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->revision, 9);
  const auto existing = etcd::wire::parse_create_if_absent(
      R"({"header":{"revision":"9"},"responses":[{"response_range":{"kvs":[{"key":"YQ==","lease":"3"}]}}]})");
  ASSERT_TRUE(existing) << existing.error();
  EXPECT_FALSE(existing->created);
  ASSERT_TRUE(existing->existing);
  EXPECT_EQ(existing->existing->lease, 3);
  EXPECT_EQ(etcd::wire::parse_create_if_absent(R"({"header":{},"succeeded":"yes"})").error(),
            "succeeded: not a boolean");
  EXPECT_EQ(
      etcd::wire::parse_create_if_absent(R"({"header":{},"responses":[{"response_range":[]}]})")
          .error(),
      "responses[0].response_range: not a JSON object");

  const auto alive = etcd::wire::parse_keep_alive(R"({"result":{"header":{},"ID":"42","TTL":"5"}})"
                                                  "\n");
  ASSERT_TRUE(alive) << alive.error();
  EXPECT_EQ(alive->ttl, 5s);
  const auto gone = etcd::wire::parse_keep_alive(R"({"result":{"header":{},"ID":"42"}})");
  ASSERT_TRUE(gone) << gone.error();
  EXPECT_EQ(gone->ttl, 0s);
  const auto failed =
      etcd::wire::parse_keep_alive(R"({"error":{"grpc_code":14,"message":"no leader"}})");
  ASSERT_TRUE(failed) << failed.error();
  ASSERT_TRUE(failed->error);
  EXPECT_EQ(failed->error->code, 14);
  EXPECT_EQ(etcd::wire::parse_keep_alive(R"({"result":5})").error(), "result: not a JSON object");
}

TEST(Wire, ChecksEveryFieldOfAWatchMessage) {
  const auto deleted = etcd::wire::parse_watch_message(
      R"({"result":{"header":{"revision":"12"},"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"12"}},)"
      R"({"kv":{"key":"Yg=="}}]}})");
  ASSERT_TRUE(deleted) << deleted.error();
  ASSERT_EQ(deleted->events.size(), 2u);
  EXPECT_EQ(deleted->events[0].type, etcd::EventType::del);
  EXPECT_EQ(deleted->events[0].kv.key, "a");
  EXPECT_EQ(deleted->events[1].type, etcd::EventType::put);
  const auto canceled = etcd::wire::parse_watch_message(
      R"({"result":{"header":{},"canceled":true,"compact_revision":"4","cancel_reason":"compacted"}})");
  ASSERT_TRUE(canceled) << canceled.error();
  EXPECT_TRUE(canceled->canceled);
  EXPECT_EQ(canceled->compact_revision, 4);
  const auto failed = etcd::wire::parse_watch_message(
      R"({"error":{"grpc_code":14,"http_code":503,"message":"x"}})");
  ASSERT_TRUE(failed) << failed.error();
  ASSERT_TRUE(failed->error);
  EXPECT_EQ(failed->error->code, 14);

  const std::pair<std::string, std::string> cases[] = {
      {"[]", "not a JSON object"},
      {R"({"result":[]})", "result: not a JSON object"},
      {R"({"result":{"header":{},"events":{}}})", "result.events: not a JSON array"},
      {R"({"result":{"header":{},"events":[{"type":"BOGUS"}]}})",
       "result.events[0].type: neither PUT nor DELETE"},
      {R"({"result":{"header":{},"events":[{"type":1}]}})", "result.events[0].type: not a string"},
      {R"({"result":{"header":{},"events":[{"type":"DELETE","kv":"x"}]}})",
       "result.events[0].kv: not a JSON object"},
      {R"({"result":{"header":{},"canceled":1}})", "result.canceled: not a boolean"},
      {R"({"error":"x"})", "error: not a gRPC status"},
      {R"({"result":{"events":[]}})", "result.header: missing"},
  };
  for (const auto& [line, problem] : cases) {
    const auto message = etcd::wire::parse_watch_message(line);
    ASSERT_FALSE(message) << line;
    EXPECT_EQ(message.error(), problem) << line;
  }
}

TEST(Wire, ReadsEtcdsErrorBodies) {
  const auto error = etcd::wire::parse_error(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, 5);
  EXPECT_EQ(error->message, "etcdserver: requested lease not found");
  for (const std::string body :
       {"", "Not Found", "[]", "{}", R"({"code":"x"})", R"({"code":99,"message":"m"})"}) {
    EXPECT_FALSE(etcd::wire::parse_error(body)) << body;
  }
}

// A status code is checked as it was sent, before it is narrowed to an int: 2^32 + 5 is not
// NotFound (5), and an answer that says it is no etcd error.
TEST(Wire, AGrpcCodeOutOfRangeIsNoStatusWhateverItsLowBits) {
  for (const std::string code : {"4294967301", "-4294967291", "\"4294967301\""}) {
    EXPECT_FALSE(etcd::wire::parse_error(
        R"({"message":"etcdserver: requested lease not found","code":)" + code + "}"))
        << code;
    const auto keep_alive = etcd::wire::parse_keep_alive(R"({"error":{"grpc_code":)" + code +
                                                         R"(,"message":"lease not found"}})");
    EXPECT_FALSE(keep_alive) << code;
  }
}

// No lease is longer than etcd's MaxLeaseTTL (9e9 s): an answer granting or renewing one longer
// is not etcd's, and would overflow a deadline counted in nanoseconds.
TEST(Wire, ALeaseLongerThanEtcdGrantsIsNotEtcdsAnswer) {
  const auto longest = etcd::wire::parse_grant(R"({"header":{},"ID":"42","TTL":"9000000000"})");
  ASSERT_TRUE(longest) << longest.error();
  EXPECT_EQ(longest->ttl, etcd::max_lease_ttl);
  for (const std::string ttl : {"9000000001", "9223372036854775807"}) {
    EXPECT_EQ(etcd::wire::parse_grant(R"({"header":{},"ID":"42","TTL":")" + ttl + R"("})").error(),
              "TTL: beyond etcd's longest lease")
        << ttl;
    EXPECT_EQ(
        etcd::wire::parse_keep_alive(R"({"result":{"header":{},"ID":"42","TTL":")" + ttl + R"("}})")
            .error(),
        "result.TTL: beyond etcd's longest lease")
        << ttl;
  }
}

TEST(Wire, ReadsATransactionOfRanges) {
  const auto read = etcd::wire::parse_read(
      R"({"header":{"revision":"9"},"succeeded":true,"responses":[)"
      R"({"response_range":{"header":{"revision":"9"},"kvs":[{"key":"YQ==","create_revision":"4"}]}},)"
      R"({"response_range":{"header":{"revision":"9"}}}]})");
  ASSERT_TRUE(read) << read.error();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].revision, 9);
  ASSERT_EQ((*read)[0].kvs.size(), 1u);
  EXPECT_EQ((*read)[0].kvs[0].key, "a");
  EXPECT_TRUE((*read)[1].kvs.empty());
  EXPECT_EQ(
      etcd::wire::parse_read(R"({"header":{},"responses":[{"response_range":{"kvs":5}}]})").error(),
      "responses[0].response_range.kvs: not a JSON array");
  EXPECT_EQ(etcd::wire::read_request({{"a", "b", true, 0}, {"c", {}, false, 7}}),
            R"({"success":[{"request_range":{"key":"YQ==","keys_only":true,"range_end":"Yg=="}},)"
            R"({"request_range":{"key":"Yw==","revision":"7"}}]})");
}

TEST(Wire, PrintableEscapesWhatATerminalWouldObey) {
  EXPECT_EQ(text::printable_ascii("ok \x1b[31m\\\xff"), "ok \\x1b[31m\\x5c\\xff");
  EXPECT_EQ(text::printable_ascii(std::string(300, 'a'), 4), "aaaa...");
}

TEST(Wire, PrefixEndIsTheFirstKeyPastThePrefix) {
  EXPECT_EQ(etcd::wire::prefix_end("pidlock/x/"), "pidlock/x0");
  EXPECT_EQ(etcd::wire::prefix_end("a\xff"), "b");
  EXPECT_EQ(etcd::wire::prefix_end("\xff"), std::string(1, '\0'));
}

// --- Slot records ---

TEST(SlotRecord, RoundTrips) {
  const record::SlotRecord mine{"web-1", 4242, "apt-get upgrade", 1700000000, "installer", 3};
  const auto reading = record::parse(record::format(mine));
  ASSERT_TRUE(reading.well_formed()) << reading.problem;
  EXPECT_EQ(reading.record.host, "web-1");
  EXPECT_EQ(reading.record.pid, 4242);
  EXPECT_EQ(reading.record.command, "apt-get upgrade");
  EXPECT_EQ(reading.record.started_at, 1700000000);
  EXPECT_EQ(reading.record.slots, 3);
  // A command line that is not UTF-8 is recorded (replaced), not a reason to throw.
  const record::SlotRecord odd{"web-1", 1, "rm \xff\xfe", 0, "installer", 1};
  EXPECT_TRUE(record::parse(record::format(odd)).well_formed());
}

TEST(SlotRecord, NamesWhatIsWrongAndKeepsWhatIsRight) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"host":"web-1","pid":"4242"})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":-5})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":0})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":4194305})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":99999999999999999999})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":18446744073709551615})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":42.5})", "pid: not an integer from 1 to 4194304"},
      {R"({"host":"web-1","pid":1e400})", "not JSON"},
      {R"({"host":7,"pid":1})", "host: not a string"},
      {R"({"pid":1})", "host: missing"},
      {R"({"host":"h","pid":1,"command":["rm"]})", "command: not a string"},
      {R"({"host":"h","pid":1,"started_at":-1})",
       "started_at: not an integer from 0 to 9223372036854775807"},
      {R"({"host":"h","pid":1,"slots":0})", "slots: not an integer from 1 to 2147483647"},
      {R"({"host":"h","pid":1,"slots":2147483648})", "slots: not an integer from 1 to 2147483647"},
      {"not json", "not JSON"},
      {"", "not JSON"},
      {"[]", "not a JSON object"},
      {"\"web-1\"", "not a JSON object"},
      {"null", "not a JSON object"},
  };
  for (const auto& [value, problem] : cases) {
    const auto reading = record::parse(value);
    EXPECT_EQ(reading.problem, problem) << value;
  }
  const auto partial = record::parse(R"({"host":"web-1","pid":"4242","command":"x"})");
  EXPECT_EQ(partial.record.host, "web-1");
  EXPECT_EQ(partial.record.command, "x");
  EXPECT_EQ(partial.record.pid, 0);
}

TEST(SlotRecord, OnlyCanonicalNumbersNameSlots) {
  EXPECT_EQ(record::slot_index("p/slots/0", "p/slots/"), 0);
  EXPECT_EQ(record::slot_index("p/slots/17", "p/slots/"), 17);
  for (const std::string key : {"p/slots/", "p/slots/007", "p/slots/+1", "p/slots/-1", "p/slots/1x",
                                "p/slots/99999999999", "q/slots/1"}) {
    EXPECT_FALSE(record::slot_index(key, "p/slots/")) << key;
  }
}

// --- Deadlines ---

TEST(Timing, DeadlinesSaturateInsteadOfOverflowing) {
  const auto now = Clock::now();
  EXPECT_EQ(timing::saturating_add(now, std::chrono::nanoseconds::max()), Clock::time_point::max());
  EXPECT_EQ(
      timing::saturating_add(now, std::chrono::nanoseconds::max() - std::chrono::nanoseconds(1)),
      Clock::time_point::max());
  EXPECT_EQ(timing::saturating_add(Clock::time_point::max() - 1s, 2s), Clock::time_point::max());
  EXPECT_EQ(timing::saturating_add(now, 5s), now + 5s);
  EXPECT_EQ(timing::saturating_add(now, -5s), now - 5s);  // in the past: no wait at all
  EXPECT_LT(timing::saturating_add(now, std::chrono::nanoseconds::min()), now);  // no wrap-around
  EXPECT_EQ(timing::saturating_add(Clock::time_point::min() + 1s, -2s), Clock::time_point::min());
  EXPECT_EQ(timing::time_between(now + 1s, now), Clock::duration::zero());
}

// Each pause lies in the upper half of its step, and the steps double up to the cap.
TEST(Timing, BackoffDoublesUpToItsCapWithinEachStep) {
  timing::Backoff backoff(1);
  auto expect_within = [&](Clock::duration step) {
    const auto pause = backoff.next();
    EXPECT_GE(pause, step / 2);
    EXPECT_LE(pause, step);
  };
  expect_within(50ms);
  expect_within(100ms);
  for (int i = 0; i < 10; ++i) (void)backoff.next();
  expect_within(1s);
  backoff.reset();
  expect_within(50ms);
}

// Waiters that failed together must not retry together: two backoffs seeded apart draw apart.
TEST(Timing, BackoffIsJitteredSoThatWaitersDoNotRetryInStep) {
  timing::Backoff first(1);
  timing::Backoff second(2);
  int differ = 0;
  for (int i = 0; i < 8; ++i) differ += first.next() != second.next() ? 1 : 0;
  EXPECT_GE(differ, 6) << "the pauses of two waiters mostly coincide";
  timing::Backoff unseeded;
  timing::Backoff other;
  EXPECT_NE(unseeded.next(), other.next()) << "two default backoffs start with the same pause";
}

// --- Client certificates' dates ---

// Valid 2020-01-01 00:00:00 to 2020-01-02 00:00:00 UTC (UTCTime), a v3 certificate.
constexpr std::string_view expired_pem = R"(-----BEGIN CERTIFICATE-----
MIIBdDCCARqgAwIBAgIBATAKBggqhkjOPQQDAjANMQswCQYDVQQDDAJjYTAeFw0y
MDAxMDEwMDAwMDBaFw0yMDAxMDIwMDAwMDBaMA4xDDAKBgNVBAMMA29sZDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABL5xlaU7NEAFexNvXqANh1CRiUvI41enyfhb
P721YNBJJ9pv2z+N5T97KKS5e016Bla6MOSpAaHmetWXvAsQYVmjajBoMBMGA1Ud
JQQMMAoGCCsGAQUFBwMCMBEGA1UdEQQKMAiCBmNsaWVudDAdBgNVHQ4EFgQUd6rv
OF3iDjoXPPps5fXYn/b0vM8wHwYDVR0jBBgwFoAU/90npLo6yUAF1Vh+1sgtNlj7
xDYwCgYIKoZIzj0EAwIDSAAwRQIgUyxBiszWWR9spSeDeaMVFnNgtMJFAFd7DNQw
jt8L9CYCIQCuAGaCbzBO6h7gMmZCA7+37moiAwLDI6qVc/Yme8T8Lw==
-----END CERTIFICATE-----
)";
// Valid until 2051-01-02 03:04:05 UTC (GeneralizedTime), a v1 certificate (no version field).
constexpr std::string_view far_pem = R"(-----BEGIN CERTIFICATE-----
MIIBAzCBqwIBAjAKBggqhkjOPQQDAjANMQswCQYDVQQDDAJjYTAgFw0yMDAxMDEw
MDAwMDBaGA8yMDUxMDEwMjAzMDQwNVowDjEMMAoGA1UEAwwDZmFyMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEvnGVpTs0QAV7E29eoA2HUJGJS8jjV6fJ+Fs/vbVg
0Ekn2m/bP43lP3sopLl7TXoGVrow5KkBoeZ61Ze8CxBhWTAKBggqhkjOPQQDAgNH
ADBEAiAV66yAn3kkTsSBsfunWo4BMQlTHzNbMcBPbsdUDOq3EgIgazOq/2NfF2ID
e8heDXlKdvQ+5Byqo1ViUtMI6soC84E=
-----END CERTIFICATE-----
)";

TEST(Certificate, ReadsTheValidityOfThePemsFirstCertificate) {
  const auto expired = certificate::validity(expired_pem);
  ASSERT_TRUE(expired);
  EXPECT_EQ(expired->not_before, 1577836800);
  EXPECT_EQ(expired->not_after, 1577923200);
  EXPECT_EQ(certificate::utc(expired->not_after), "2020-01-02 00:00:00 UTC");
  const auto far = certificate::validity("junk before\n" + std::string(far_pem));
  ASSERT_TRUE(far);
  EXPECT_EQ(far->not_after, 2556241445);
  EXPECT_EQ(certificate::utc(far->not_after), "2051-01-02 03:04:05 UTC");
}

TEST(Certificate, NothingToReadIsNoValidityNeverACrash) {
  const std::string pem(expired_pem);
  for (const std::string& text :
       {std::string(), std::string("not PEM"), pem.substr(0, pem.size() / 2),
        std::string("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        std::string("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")}) {
    EXPECT_FALSE(certificate::validity(text)) << text;
  }
  // Every prefix of the DER, re-encoded: cut short anywhere, it reads as nothing.
  const auto der = base64::decode(
      "MIIBAzCBqwIBAjAKBggqhkjOPQQDAjANMQswCQYDVQQDDAJjYTAgFw0yMDAxMDEwMDAwMDBaGA8yMDUxMDEwMjAz"
      "MDQwNVowDjEMMAoGA1UEAwwDZmFyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvnGVpTs0QAV7E29eoA2HUJGJ"
      "S8jjV6fJ+Fs/vbVg0Ekn2m/bP43lP3sopLl7TXoGVrow5KkBoeZ61Ze8CxBhWTAKBggqhkjOPQQDAgNHADBEAiAV"
      "66yAn3kkTsSBsfunWo4BMQlTHzNbMcBPbsdUDOq3EgIgazOq/2NfF2IDe8heDXlKdvQ+5Byqo1ViUtMI6soC84E=");
  ASSERT_TRUE(der);
  for (std::size_t length = 0; length < 150; ++length) {
    const std::string cut = "-----BEGIN CERTIFICATE-----\n" +
                            base64::encode(der->substr(0, length)) +
                            "\n-----END CERTIFICATE-----\n";
    EXPECT_FALSE(certificate::validity(cut)) << length;
  }
}

TEST(Certificate, TellsAFileWithAPrivateKeyFromOneWithout) {
  EXPECT_FALSE(certificate::holds_private_key(expired_pem));
  EXPECT_TRUE(certificate::holds_private_key(std::string(expired_pem) +
                                             "-----BEGIN EC PRIVATE KEY-----\nx\n"));
  EXPECT_TRUE(certificate::holds_private_key("-----BEGIN PRIVATE KEY-----\nx\n"));
}

// --- The client against a real etcd ---

class EtcdClient : public test::SharedCluster<EtcdClient> {
 public:
  static test::ClusterConfig config() { return {}; }

 protected:
  static etcd::Client client(std::vector<std::string> endpoints = {},
                             std::chrono::milliseconds timeout = 2s) {
    if (endpoints.empty()) endpoints = {cluster_->endpoint(0)};
    auto opened = etcd::Client::open(std::move(endpoints), timeout);
    EXPECT_TRUE(opened);
    return std::move(*opened);
  }
  static std::string unique(const std::string& base) { return "test/" + test::unique_name(base); }
};

TEST_F(EtcdClient, GrantsRenewsAndRevokesALease) {
  auto etcd = client();
  const auto lease = etcd.grant(5s);
  ASSERT_TRUE(lease) << lease.error().cause();
  EXPECT_GT(lease->id, 0);
  EXPECT_GE(lease->ttl, 5s);  // etcd may raise a TTL to its minimum, never lower it
  const auto renewed = etcd.keep_alive(lease->id);
  ASSERT_TRUE(renewed) << renewed.error().cause();
  EXPECT_EQ(*renewed, lease->ttl);
  ASSERT_TRUE(etcd.revoke(lease->id));
  const auto gone = etcd.keep_alive(lease->id);
  ASSERT_TRUE(gone) << gone.error().cause();
  EXPECT_EQ(*gone, 0s);
  EXPECT_TRUE(etcd.revoke(lease->id)) << "revoking twice is not an error";
}

TEST_F(EtcdClient, CreatesAKeyOnlyIfAbsent) {
  auto etcd = client();
  const auto key = unique("create");
  const auto lease = etcd.grant(30s);
  ASSERT_TRUE(lease);
  const auto first = etcd.create_if_absent(key, "mine", lease->id);
  ASSERT_TRUE(first) << first.error().cause();
  EXPECT_TRUE(first->created);
  const auto second = etcd.create_if_absent(key, "theirs", 0);
  ASSERT_TRUE(second) << second.error().cause();
  EXPECT_FALSE(second->created);
  ASSERT_TRUE(second->existing);
  EXPECT_EQ(second->existing->value, "mine");
  EXPECT_EQ(second->existing->lease, lease->id);
  EXPECT_EQ(second->existing->create_revision, first->revision);
  const auto got = etcd.get(key, true);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->create_revision, first->revision);
  EXPECT_TRUE((*got)->value.empty()) << "keys only";
  ASSERT_TRUE(etcd.revoke(lease->id));
  const auto after = etcd.get(key);
  ASSERT_TRUE(after);
  EXPECT_FALSE(*after) << "the key went with its lease";
}

// The condition a slot is created on: nothing in a range created or changed since a read. A key
// deleted since does not count.
TEST_F(EtcdClient, CreatesAKeyOnlyIfNothingUnderItsPrefixChangedSinceARead) {
  auto etcd = client();
  const auto prefix = unique("guarded") + "/";
  const auto empty = etcd.range_prefix(prefix);
  ASSERT_TRUE(empty) << empty.error().cause();
  ASSERT_TRUE(etcd.put(prefix + "other", "came since", 0));
  const auto end = etcd::wire::prefix_end(prefix);
  const etcd::Unchanged since_empty{prefix, end, empty->revision};
  const auto refused = etcd.create_if_absent(prefix + "mine", "v", 0, since_empty);
  ASSERT_TRUE(refused) << refused.error().cause();
  EXPECT_FALSE(refused->created);
  EXPECT_FALSE(refused->existing) << "the key itself is free";
  EXPECT_FALSE(etcd.get(prefix + "mine").value()) << "nothing was written";
  const auto reread = etcd.range_prefix(prefix);
  ASSERT_TRUE(reread);
  ASSERT_TRUE(etcd.delete_key(prefix + "other"));
  const etcd::Unchanged since_reread{prefix, end, reread->revision};
  const auto created = etcd.create_if_absent(prefix + "mine", "v", 0, since_reread);
  ASSERT_TRUE(created) << created.error().cause();
  EXPECT_TRUE(created->created);
  // Keys outside the prefix never stand in the way.
  const auto again = etcd.range_prefix(prefix);
  ASSERT_TRUE(again);
  ASSERT_TRUE(etcd.put(prefix.substr(0, prefix.size() - 1) + "x", "outside", 0));
  const auto beside =
      etcd.create_if_absent(prefix + "also", "v", 0, etcd::Unchanged{prefix, end, again->revision});
  ASSERT_TRUE(beside);
  EXPECT_TRUE(beside->created);
}

TEST_F(EtcdClient, RangesOverAPrefixOnly) {
  auto etcd = client();
  const auto prefix = unique("range") + "/";
  for (const std::string key : {"a", "b", "c\xff\x01"})
    ASSERT_TRUE(etcd.put(prefix + key, "v-" + key, 0));
  ASSERT_TRUE(etcd.put(prefix.substr(0, prefix.size() - 1) + "0", "outside", 0));
  const auto range = etcd.range_prefix(prefix);
  ASSERT_TRUE(range) << range.error().cause();
  ASSERT_EQ(range->kvs.size(), 3u);
  EXPECT_EQ(range->kvs[0].key, prefix + "a");
  EXPECT_EQ(range->kvs[2].key, prefix + "c\xff\x01");  // keys are bytes, through base64
  EXPECT_EQ(range->kvs[1].value, "v-b");
  EXPECT_GT(range->revision, 0);
  const auto deleted = etcd.delete_key(prefix + "a");
  ASSERT_TRUE(deleted);
  EXPECT_EQ(*deleted, 1);
}

TEST_F(EtcdClient, WatchesAPrefixFromARevision) {
  auto etcd = client();
  const auto prefix = unique("watch") + "/";
  const auto put = etcd.put(prefix + "k", "v", 0);
  ASSERT_TRUE(put);
  ASSERT_TRUE(etcd.delete_key(prefix + "k"));
  // From the put's revision on, etcd replays the put and then the delete: no race to set up.
  std::vector<etcd::WatchEvent> seen;
  const auto end = etcd.watch_prefix(prefix, *put, 10s, [&](const etcd::WatchEvent& event) {
    seen.push_back(event);
    return event.type != etcd::EventType::del;
  });
  ASSERT_TRUE(end) << end.error().cause();
  EXPECT_EQ(*end, etcd::WatchEnd::stopped);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].type, etcd::EventType::put);
  EXPECT_EQ(seen[0].kv.value, "v");
  EXPECT_EQ(seen[1].type, etcd::EventType::del);
  EXPECT_EQ(seen[1].kv.key, prefix + "k");
}

TEST_F(EtcdClient, AWatchWithNothingToSayTimesOut) {
  auto etcd = client();
  const auto range = etcd.range_prefix(unique("quiet"));
  ASSERT_TRUE(range);
  const auto started = Clock::now();
  const auto end = etcd.watch_prefix(unique("quiet"), range->revision + 1, 300ms,
                                     [](const etcd::WatchEvent&) { return false; });
  ASSERT_TRUE(end) << end.error().cause();
  EXPECT_EQ(*end, etcd::WatchEnd::timed_out);
  EXPECT_GE(Clock::now() - started, 300ms);
}

TEST_F(EtcdClient, EtcdsErrorsCarryTheirGrpcStatus) {
  auto etcd = client();
  const auto put = etcd.put(unique("nolease"), "v", 12345);  // a lease nobody granted
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().kind, etcd::FailureKind::etcd_error);
  EXPECT_EQ(put.error().grpc_code, 5);
  EXPECT_EQ(put.error().http_status, 404);
  EXPECT_TRUE(put.error().lease_not_found());
  EXPECT_FALSE(put.error().transient());
  EXPECT_EQ(put.error().operation, "put");
  EXPECT_EQ(put.error().endpoint, cluster_->endpoint(0));
  EXPECT_EQ(put.error().cause(), "etcd: NotFound: etcdserver: requested lease not found");
}

TEST_F(EtcdClient, NoAnswerIsUnreachableAndTransient) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(test::free_port());
  auto etcd = client({dead});
  const auto lease = etcd.grant(5s);
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.error().kind, etcd::FailureKind::unreachable);
  EXPECT_TRUE(lease.error().transient());
  EXPECT_EQ(lease.error().operation, "lease grant");
  EXPECT_EQ(lease.error().endpoint, dead);
  EXPECT_EQ(lease.error().cause(), "etcd: Couldn't connect to server");
}

TEST_F(EtcdClient, FailsOverToTheNextEndpoint) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(test::free_port());
  FakeEndpoint garbage({200, "garbage"});
  auto etcd = client({dead, garbage.url(), cluster_->endpoint(0)});
  const auto lease = etcd.grant(5s);
  ASSERT_TRUE(lease) << lease.error().cause();
  EXPECT_EQ(etcd.endpoint(), cluster_->endpoint(0));
  EXPECT_EQ(garbage.requests(), 1);
  ASSERT_TRUE(etcd.keep_alive(lease->id));  // the next call starts where the last one answered
  EXPECT_EQ(garbage.requests(), 1);
}

TEST_F(EtcdClient, AnErrorFromEtcdIsFinalAndNotRetriedElsewhere) {
  FakeEndpoint other({200, "{}"});
  auto etcd = client({cluster_->endpoint(0), other.url()});
  const auto put = etcd.put(unique("final"), "v", 12345);
  ASSERT_FALSE(put);
  EXPECT_TRUE(put.error().lease_not_found());
  EXPECT_EQ(other.requests(), 0) << "another member would have said the same";
}

TEST_F(EtcdClient, EndpointsThatAreNotEtcdGiveTypedFailures) {
  struct Case {
    FakeEndpoint::Answer answer;
    etcd::FailureKind kind;
    bool transient;
    std::string cause;
  };
  const Case cases[] = {
      {{200, "[]"},
       etcd::FailureKind::malformed_response,
       false,
       "not an etcd answer (HTTP 200): not a JSON object"},
      {{200, "{}"},
       etcd::FailureKind::malformed_response,
       false,
       "not an etcd answer (HTTP 200): header: missing"},
      {{200, "\x1b]0;pwned\x07"},
       etcd::FailureKind::malformed_response,
       false,
       "not an etcd answer (HTTP 200): not JSON"},
      {{500, "oops"},
       etcd::FailureKind::malformed_response,
       true,
       "not an etcd answer (HTTP 500): not etcd's error: oops"},
      {{404, "\x1b[2J"},
       etcd::FailureKind::malformed_response,
       false,
       "not an etcd answer (HTTP 404): not etcd's error: \\x1b[2J"},
      {{503, R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})"},
       etcd::FailureKind::etcd_error,
       true,
       "etcd: Unavailable: etcdserver: no leader"},
      // Closed before a word: curl's words for it depend on timing ("Server returned nothing",
      // "Failure when receiving data from the peer").
      {{200, "", false, true}, etcd::FailureKind::unreachable, true, ""},
  };
  for (const auto& c : cases) {
    FakeEndpoint fake(c.answer);
    auto etcd = client({fake.url()});
    for (const auto& failure : {etcd.grant(5s).error(), etcd.range_prefix("x").error()}) {
      EXPECT_EQ(failure.kind, c.kind) << c.answer.body;
      EXPECT_EQ(failure.transient(), c.transient) << c.answer.body;
      if (c.cause.empty()) {
        EXPECT_EQ(failure.cause().rfind("etcd: ", 0), 0u) << failure.cause();
      } else {
        EXPECT_EQ(failure.cause(), c.cause);
      }
      EXPECT_EQ(failure.endpoint, fake.url());
    }
  }
}

TEST_F(EtcdClient, AWatchStreamThatIsNotEtcdsIsMalformed) {
  FakeEndpoint fake(
      {200, "{\"result\":{\"header\":{},\"created\":true}}\n{\"result\":{\"events\":7}}\n"});
  auto etcd = client({fake.url()});
  const auto end = etcd.watch_prefix("x", 1, 5s, [](const etcd::WatchEvent&) { return true; });
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().kind, etcd::FailureKind::malformed_response);
  EXPECT_EQ(end.error().cause(), "not an etcd answer (HTTP 200): result.header: missing");
}

TEST_F(EtcdClient, AnEndpointThatNeverAnswersTimesOut) {
  FakeEndpoint silent({200, "", true});
  auto etcd = client({silent.url()}, 300ms);
  const auto started = Clock::now();
  const auto lease = etcd.grant(5s);
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.error().kind, etcd::FailureKind::timeout);
  EXPECT_TRUE(lease.error().transient());
  EXPECT_LT(Clock::now() - started, 2s);
}

TEST_F(EtcdClient, ADeadlineCutsACallShortWhateverTheEndpointsLeft) {
  FakeEndpoint first({200, "", true});
  FakeEndpoint second({200, "", true});
  // Whether the second is asked at all depends on how soon the first fails on a loaded machine;
  // what matters is that the call ends at the deadline, not after each endpoint's timeout.
  auto etcd = client({first.url(), second.url()}, 10s);
  const auto started = Clock::now();
  std::expected<std::chrono::seconds, etcd::Failure> renewed;
  {
    const etcd::Client::Deadline in_time(etcd, started + 300ms);
    renewed = etcd.keep_alive(1);
  }
  const auto took = Clock::now() - started;
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().kind, etcd::FailureKind::timeout);
  EXPECT_LT(took, 3s) << "not 2 × 10 s";
}

TEST_F(EtcdClient, HasNoDefaultEndpoint) {
  const auto opened = etcd::Client::open(std::vector<std::string>{}, 2s);
  ASSERT_FALSE(opened) << "opened with an endpoint nobody gave";
  EXPECT_EQ(opened.error().detail, "no etcd endpoints given");
}

TEST_F(EtcdClient, ReadsSeveralRangesAtOneRevisionInOneRequest) {
  FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(cluster_->endpoint(0));
  FakeEndpoint counted(relaying);
  auto etcd = client({counted.url()});
  const auto prefix = unique("read") + "/";
  ASSERT_TRUE(etcd.put(prefix + "a/1", std::string(1000, 'x'), 0));
  ASSERT_TRUE(etcd.put(prefix + "b/1", "v", 0));
  const int before = counted.requests();
  const auto read = etcd.read({{prefix + "a/", etcd::wire::prefix_end(prefix + "a/"), true, 0},
                               {prefix + "b/1", {}, false, 0}});
  ASSERT_TRUE(read) << read.error().cause();
  EXPECT_EQ(counted.requests(), before + 1);
  ASSERT_EQ(read->size(), 2u);
  ASSERT_EQ((*read)[0].kvs.size(), 1u);
  EXPECT_TRUE((*read)[0].kvs[0].value.empty()) << "keys only";
  ASSERT_EQ((*read)[1].kvs.size(), 1u);
  EXPECT_EQ((*read)[1].kvs[0].value, "v");
  EXPECT_EQ((*read)[0].revision, (*read)[1].revision);
}

TEST_F(EtcdClient, DeletesAKeyOnlyIfItIsTheOneCreatedThen) {
  auto etcd = client();
  const auto key = unique("delete-if");
  const auto first = etcd.create_if_absent(key, "v", 0);
  ASSERT_TRUE(first && first->created);
  const auto other = etcd.delete_if_created(key, first->revision + 1000);
  ASSERT_TRUE(other) << other.error().cause();
  EXPECT_FALSE(*other);
  EXPECT_TRUE(etcd.get(key).value());
  const auto mine = etcd.delete_if_created(key, first->revision);
  ASSERT_TRUE(mine) << mine.error().cause();
  EXPECT_TRUE(*mine);
  EXPECT_FALSE(etcd.get(key).value());
}

// What a watch's handler throws must not unwind through libcurl's C frames: it ends the watch as
// a failure, and the client goes on working.
TEST_F(EtcdClient, AnExceptionInAWatchHandlerIsAFailureNotAnUnwindThroughCurl) {
  auto etcd = client();
  const auto prefix = unique("throwing") + "/";
  const auto put = etcd.put(prefix + "k", "v", 0);
  ASSERT_TRUE(put);
  std::optional<std::expected<etcd::WatchEnd, etcd::Failure>> end;
  EXPECT_NO_THROW(end = etcd.watch_prefix(prefix, *put, 10s, [](const etcd::WatchEvent&) -> bool {
    throw std::runtime_error("handler failed");
  }));
  ASSERT_TRUE(end);
  ASSERT_FALSE(*end);
  EXPECT_EQ(end->error().kind, etcd::FailureKind::client_setup);
  EXPECT_EQ(end->error().cause(), "etcd: an exception in the answer's handling: handler failed");
  const auto after = etcd.get(prefix + "k");
  ASSERT_TRUE(after) << after.error().cause();
  EXPECT_TRUE(*after);
}

// When every endpoint fails, the failure names each, not only the last one tried.
TEST_F(EtcdClient, AFailureOfEveryEndpointNamesEachOfThem) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(test::free_port());
  FakeEndpoint unavailable(
      {503, R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})"});
  auto etcd = client({dead, unavailable.url()});
  const auto lease = etcd.grant(5s);
  ASSERT_FALSE(lease);
  EXPECT_EQ(lease.error().endpoint, unavailable.url());
  EXPECT_EQ(lease.error().cause(), "etcd: Unavailable: etcdserver: no leader (before it, " + dead +
                                       ": etcd: Couldn't connect to server)");
}

// A call that a deadline leaves no time for names the member that failed last, not the next one
// in line, which may never have been asked, and may be healthy.
TEST_F(EtcdClient, NoTimeLeftNamesAMemberThatFailedNotOneNeverAsked) {
  FakeEndpoint silent({200, "", true});
  FakeEndpoint::Answer relaying;
  relaying.relay_to_port = test::port_of(cluster_->endpoint(0));
  FakeEndpoint healthy(relaying);
  auto etcd = client({silent.url(), healthy.url()}, 10s);
  const auto until = Clock::now() + 300ms;
  const etcd::Client::Deadline in_time(etcd, until);
  // The silent member takes all the time there is (the healthy one may get a last millisecond).
  const auto first = etcd.keep_alive(1);
  ASSERT_FALSE(first);
  std::this_thread::sleep_until(until);  // the deadline passed is what is tested, not a sync
  const auto second = etcd.keep_alive(1);
  ASSERT_FALSE(second);
  const std::string& named = second.error().endpoint;
  const int asked = named == silent.url() ? silent.requests() : healthy.requests();
  EXPECT_GT(asked, 0) << "blames " << named << ", which was never asked";
  EXPECT_EQ(named, first.error().endpoint);
  EXPECT_EQ(second.error().cause(),
            "etcd: no time left to ask (the caller's deadline has passed); the last try there: " +
                first.error().cause());
}

}  // namespace
}  // namespace pidlock::fleet
