// The Redis backend's pure parts, without sockets or a server: RESP formatting and
// parsing (hiredis reader), the connection core's FIFO reply matching, key layout, and
// URL parsing.
#include "connection.hpp"
#include "connection_core.hpp"
#include "resp.hpp"
#include "scripts.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace penguiflow::queue::redis {
namespace {

std::string cmd(std::vector<std::string> args) { return format_command(args); }

TEST(RedisResp, FormatsBinarySafeBulkStrings) {
  EXPECT_EQ(cmd({"GET", "k"}), "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  std::string bin("a\0b\r\n", 5);
  static const char kWire[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0b\r\n\r\n";
  EXPECT_EQ(cmd({"SET", "k", bin}), std::string(kWire, sizeof kWire - 1));
  EXPECT_EQ(cmd({"SET", "k", ""}), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

TEST(RedisResp, ParsesEveryReplyTypeAcrossArbitrarySplits) {
  const std::string wire =
      "+OK\r\n-ERR boom\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n"
      "*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n$0\r\n\r\n$2\r\nzz\r\n";
  // Feed one byte at a time: partial reads must not matter.
  RespReader r;
  std::vector<RespValue> got;
  for (char ch : wire) {
    r.feed(std::string_view(&ch, 1));
    while (auto v = r.next()) got.push_back(std::move(*v));
  }
  ASSERT_EQ(got.size(), 7u);
  EXPECT_EQ(got[0].type, RespValue::Type::status);
  EXPECT_EQ(got[0].str, "OK");
  EXPECT_TRUE(got[1].is_error());
  EXPECT_EQ(got[1].str, "ERR boom");
  EXPECT_EQ(got[2].as_int(), 42);
  EXPECT_EQ(got[3].str, "hello");
  EXPECT_TRUE(got[4].is_nil());
  EXPECT_TRUE(got[5].is_nil());
  ASSERT_TRUE(got[6].is_array());
  ASSERT_EQ(got[6].elements.size(), 3u);
  EXPECT_EQ(got[6].elements[0].as_int(), 1);
  const auto& nested = got[6].elements[1];
  ASSERT_EQ(nested.elements.size(), 2u);
  EXPECT_EQ(nested.elements[0].str, "a");
  ASSERT_EQ(nested.elements[1].elements.size(), 1u);
  EXPECT_EQ(nested.elements[1].elements[0].str, "");
  EXPECT_EQ(got[6].elements[2].str, "zz");
}

TEST(RedisResp, LargeNestedReplyInAnySplitParsesOnceAndWhole) {
  // A fetch-like reply: {next_due, {{id, doc-with-CRLF, nil, ...}, ...}} then a status.
  std::string wire = "*2\r\n$0\r\n\r\n*300\r\n";
  for (int i = 0; i < 300; ++i) {
    std::string id = "job-" + std::to_string(i);
    std::string doc = "{\"a\":\"x\r\ny\"," + std::string(static_cast<std::size_t>(i), 'z') + "}";
    wire += "*4\r\n$" + std::to_string(id.size()) + "\r\n" + id + "\r\n$" + std::to_string(doc.size()) + "\r\n" + doc +
            "\r\n$-1\r\n:" + std::to_string(i) + "\r\n";
  }
  wire += "+OK\r\n";
  for (std::size_t chunk : {std::size_t(1), std::size_t(7), std::size_t(4096), wire.size()}) {
    RespReader r;
    std::vector<RespValue> got;
    for (std::size_t at = 0; at < wire.size(); at += chunk) {
      r.feed(std::string_view(wire).substr(at, chunk));
      while (auto v = r.next()) got.push_back(std::move(*v));
    }
    ASSERT_EQ(got.size(), 2u) << chunk;
    ASSERT_EQ(got[0].elements.size(), 2u);
    EXPECT_EQ(got[0].elements[0].str, "");
    const auto& jobs = got[0].elements[1].elements;
    ASSERT_EQ(jobs.size(), 300u);
    EXPECT_EQ(jobs[299].elements[0].str, "job-299");
    EXPECT_EQ(jobs[299].elements[1].str.size(), 13u + 299u);
    EXPECT_NE(jobs[5].elements[1].str.find("x\r\ny"), std::string::npos);
    EXPECT_TRUE(jobs[7].elements[2].is_nil());
    EXPECT_EQ(jobs[9].elements[3].as_int(), 9);
    EXPECT_EQ(got[1].str, "OK");
    EXPECT_FALSE(r.next().has_value());
  }
}

TEST(RedisResp, MalformedInputIsAProtocolError) {
  RespReader r;
  r.feed("?what\r\n");
  EXPECT_THROW(r.next(), RespProtocolError);
}

TEST(RedisConnectionCore, PipelinedRepliesMatchRequestsInOrder) {
  ConnectionCore core;
  auto a = core.push(cmd({"GET", "a"}));
  auto b = core.push(cmd({"INCR", "n"}));
  auto c = core.push(cmd({"GET", "c"}));
  EXPECT_EQ(core.take_output(), cmd({"GET", "a"}) + cmd({"INCR", "n"}) + cmd({"GET", "c"}));
  EXPECT_FALSE(core.has_output());
  EXPECT_EQ(core.pending(), 3u);
  // Replies arrive split at awkward places, the middle one an error.
  core.feed("$1\r\n");
  EXPECT_FALSE(core.pop_completion());
  core.feed("A\r\n-WRONGTYPE bad\r");
  auto first = core.pop_completion();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->id, a);
  EXPECT_EQ(first->replies.at(0).str, "A");
  EXPECT_FALSE(core.pop_completion());
  core.feed("\n$-1\r\n");
  auto second = core.pop_completion();
  auto third = core.pop_completion();
  ASSERT_TRUE(second && third);
  EXPECT_EQ(second->id, b);
  EXPECT_TRUE(second->replies.at(0).is_error());
  EXPECT_EQ(third->id, c);
  EXPECT_TRUE(third->replies.at(0).is_nil());
  EXPECT_EQ(core.pending(), 0u);
}

TEST(RedisConnectionCore, MultiReplyRequestCompletesOnItsLastReply) {
  ConnectionCore core;
  auto p = core.push(cmd({"HSETNX", "h", "k", "v"}) + cmd({"HGET", "h", "k"}), 2);
  auto q = core.push(cmd({"PING"}));
  core.feed(":1\r\n");
  EXPECT_FALSE(core.pop_completion());
  core.feed("$1\r\nv\r\n+PONG\r\n");
  auto c1 = core.pop_completion();
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->id, p);
  ASSERT_EQ(c1->replies.size(), 2u);
  EXPECT_EQ(c1->replies[0].as_int(), 1);
  EXPECT_EQ(c1->replies[1].str, "v");
  auto c2 = core.pop_completion();
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->id, q);
}

TEST(RedisConnectionCore, AbandonedRequestKeepsItsPlace) {
  ConnectionCore core;
  auto a = core.push(cmd({"BLPOP", "w", "1"}));
  auto b = core.push(cmd({"PING"}));
  EXPECT_TRUE(core.abandon(a));
  core.feed("*-1\r\n+PONG\r\n");
  auto c1 = core.pop_completion();
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->id, a);
  EXPECT_TRUE(c1->abandoned);
  auto c2 = core.pop_completion();
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->id, b);
  EXPECT_FALSE(c2->abandoned);
  EXPECT_EQ(c2->replies[0].str, "PONG");
  EXPECT_FALSE(core.abandon(a));
}

TEST(RedisConnectionCore, ReplyWithoutRequestIsAProtocolError) {
  ConnectionCore core;
  EXPECT_THROW(core.feed("+OK\r\n"), RespProtocolError);
}

TEST(RedisConnectionCore, ResetFailsEveryPendingRequestAndStartsClean) {
  ConnectionCore core;
  auto a = core.push(cmd({"PING"}));
  (void)core.take_output();
  auto b = core.push(cmd({"PING"}));  // not written yet
  core.feed("+PO");                    // half a reply
  auto ids = core.reset();
  EXPECT_EQ(ids, (std::vector<ConnectionCore::RequestId>{a, b}));
  EXPECT_EQ(core.pending(), 0u);
  EXPECT_FALSE(core.has_output());
  // The half reply is gone with the old connection.
  auto c = core.push(cmd({"PING"}));
  core.feed("+PONG\r\n");
  auto done = core.pop_completion();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->id, c);
  EXPECT_EQ(done->replies[0].str, "PONG");
}

// Redis Cluster hashes only the part between the first '{' and the next '}'.
std::string hash_tag(const std::string& key) {
  auto open = key.find('{');
  if (open == std::string::npos) return key;
  auto close = key.find('}', open + 1);
  if (close == std::string::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

TEST(RedisKeys, EveryKeyOfAQueueSharesOneHashTag) {
  QueueKeys k("pft_0123abcd");
  std::vector<std::string> all = k.script_keys();
  all.push_back(k.effects);
  all.push_back(k.job("some:id{with}braces"));
  for (const auto& key : all) EXPECT_EQ(hash_tag(key), "pft_0123abcd") << key;
  EXPECT_EQ(k.script_keys().size(), 11u);
}

TEST(RedisScripts, EveryScriptReadsTheSharedKeysOnly) {
  for (auto s : {Script::enqueue, Script::fetch, Script::settle, Script::admin, Script::settle_batch}) {
    const auto& text = script_text(s);
    EXPECT_NE(text.find("KEYS[11]"), std::string::npos);
    EXPECT_EQ(text.find("KEYS[12]"), std::string::npos);
    EXPECT_EQ(text.find("HELLO"), std::string::npos);
  }
}

TEST(RedisUrl, ParsesHostPortDbAndPassword) {
  auto ep = parse_redis_url("redis://:s3cret@10.1.2.3:6380/4");
  EXPECT_EQ(ep.host, "10.1.2.3");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.db, 4);
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_TRUE(ep.username.empty());
  EXPECT_EQ(ep.redacted.find("s3cret"), std::string::npos);
  auto user = parse_redis_url("redis://app:pw@localhost");
  EXPECT_EQ(user.username, "app");
  EXPECT_EQ(user.port, 6379);
  EXPECT_EQ(user.db, 0);
}

TEST(RedisUrl, PasswordFromEnvironmentWhenTheUrlHasNone) {
  ::setenv("REDIS_PASSWORD", "from-env", 1);
  auto ep = parse_redis_url("redis://127.0.0.1:7000/0");
  ::unsetenv("REDIS_PASSWORD");
  EXPECT_EQ(ep.password, "from-env");
}

TEST(RedisUrl, BadUrlsAreQueueErrorsNamingTheRedactedUrl) {
  for (std::string url : {"redis://:pw-secret@127.0.0.1:6379/notadb", "http://127.0.0.1:6379", "redis://",
                          "rediss://:pw-secret@h:1/0", "redis://:pw-secret@127.0.0.1:99999/0",
                          // a password Boost.URL refuses (unencoded '?' / '#'): the URL is invalid, and
                          // the message must still not carry it
                          "redis://:pw-secret?x@127.0.0.1:6379/0", "redis://u:pw-secret#x@127.0.0.1:6379/0"}) {
    try {
      parse_redis_url(url);
      ADD_FAILURE() << "accepted " << url;
    } catch (const QueueError& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find("pw-secret"), std::string::npos) << msg;
      EXPECT_NE(msg.find(redact_url(url)), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace penguiflow::queue::redis
