// C6 typed boundaries, C7 envelopes, C9 deadlines, C12 streaming.
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/describe/class.hpp>
#include <boost/json/parse.hpp>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
namespace json = boost::json;

namespace typed {
struct Query {
  std::string text;
  int top_k = 3;
  std::optional<std::string> lang;
  std::optional<std::string> validate() const {
    if (top_k <= 0) return "top_k must be positive";
    return std::nullopt;
  }
};
BOOST_DESCRIBE_STRUCT(Query, (), (text, top_k, lang))
struct Answer {
  std::string text;
  std::vector<std::string> sources;
};
BOOST_DESCRIBE_STRUCT(Answer, (), (text, sources))
}  // namespace typed
using typed::Answer;
using typed::Query;

TEST(C6_Typed, DecodeNamesTheField) {
  try {
    decode<Query>(json::parse(R"({"text": 5})"), "triage");
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.node(), "triage");
    EXPECT_EQ(e.field(), "text");
    EXPECT_NE(std::string(e.what()).find("got integer"), std::string::npos) << e.what();
  }
  try {
    decode<Query>(json::parse(R"({"top_k": 1})"), "triage");
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "text");
    EXPECT_NE(std::string(e.what()).find("required"), std::string::npos);
  }
  try {
    decode<Answer>(json::parse(R"({"text": "a", "sources": ["x", 3]})"));
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "sources[1]");
  }
  auto q = decode<Query>(json::parse(R"({"text": "hi", "top_k": 5, "extra": true})"));
  EXPECT_EQ(q.text, "hi");
  EXPECT_EQ(q.top_k, 5);
  EXPECT_FALSE(q.lang);
}

TEST(C6_Typed, JsonInputDecodedAndBadPayloadFailsWithFieldError) {
  run_async([]() -> Task<void> {
    Node answer("answer", [](Query q, Context&) -> Task<Answer> {
      co_return Answer{"re: " + q.text, {"doc-" + std::to_string(q.top_k)}};
    });
    Flow flow({answer.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(json::value(json::parse(R"({"text": "hello", "top_k": 2})")), "good");
    auto r = co_await flow.fetch("good");
    auto& a = std::any_cast<Answer&>(r);
    EXPECT_EQ(a.text, "re: hello");
    EXPECT_EQ(to_json(r), json::parse(R"({"text": "re: hello", "sources": ["doc-2"]})"));

    co_await flow.emit(json::value(json::parse(R"({"text": ["not", "a", "string"]})")), "bad");
    auto e = co_await flow.fetch("bad");
    auto& err = std::any_cast<FlowError&>(e);
    EXPECT_EQ(err.code, FlowErrorCode::validation_error);
    EXPECT_NE(err.message.find("answer"), std::string::npos) << err.message;
    EXPECT_NE(err.message.find("'text'"), std::string::npos) << err.message;

    co_await flow.emit(std::string("wrong type"), "wrong");
    auto w = co_await flow.fetch("wrong");
    EXPECT_NE(std::any_cast<FlowError&>(w).message.find("expected typed::Query"), std::string::npos);

    Query zero{"x", 0}, fine{"ok", 1};
    co_await flow.emit(zero, "hook");  // validate() hook rejects top_k = 0
    auto h = co_await flow.fetch("hook");
    EXPECT_NE(std::any_cast<FlowError&>(h).message.find("top_k must be positive"), std::string::npos);

    co_await flow.emit(fine, "after");  // the flow keeps serving
    EXPECT_EQ(std::any_cast<Answer>(co_await flow.fetch("after")).text, "re: ok");
    co_await flow.stop();
  }());
}

TEST(C6_Typed, ValidateNoneSkipsTheHook) {
  run_async([]() -> Task<void> {
    Node lax("lax", [](Query q, Context&) -> Task<int> { co_return q.top_k; }, NodePolicy{.validate = Validate::none});
    Flow flow({lax.to()});
    flow.run(co_await asio::this_coro::executor);
    Query zero{"x", 0};
    co_await flow.emit(zero);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), 0);
    co_await flow.stop();
  }());
}

TEST(C6_Typed, RunFailsFastForValidatedUntypedNode) {
  run_async([]() -> Task<void> {
    Node raw("raw", [](std::any m, Context&) -> Task<std::any> { co_return m; }, NodePolicy{.validate = Validate::in});
    Flow flow({raw.to()});
    try {
      flow.run(co_await asio::this_coro::executor);
      ADD_FAILURE();
    } catch (const FlowUsageError& e) {
      EXPECT_NE(std::string(e.what()).find("'raw'"), std::string::npos);
    }
  }());
}

TEST(C7_Envelope, NodesKeepTraceHeadersDeadlineMeta) {
  run_async([]() -> Task<void> {
    Node a("a", [](Message m, Context&) -> Task<Message> {
      co_return m.with_payload(std::any_cast<std::string>(m.payload) + "!");
    });
    Node b("b", [](Message m, Context&) -> Task<Message> { co_return std::move(m); });
    Flow flow({a.to(b), b.to()});
    flow.run(co_await asio::this_coro::executor);
    Message in{std::string("hi"), Headers{.tenant = "acme", .topic = "q", .priority = 2}};
    in.deadline_s = wall_now() + 60;
    in.meta["k"] = "v";
    co_await flow.emit(in);
    auto out = std::any_cast<Message>(co_await flow.fetch());
    EXPECT_EQ(std::any_cast<std::string>(out.payload), "hi!");
    EXPECT_EQ(out.trace_id.size(), 32u);  // random when not given
    EXPECT_EQ(out.headers.tenant, "acme");
    EXPECT_EQ(out.headers.priority, 2);
    EXPECT_EQ(out.deadline_s, in.deadline_s);
    EXPECT_EQ(out.meta.at("k"), "v");
    EXPECT_GT(out.ts, 0);
    co_await flow.stop();
  }());
}

TEST(C9_Deadline, ExpiredEnvelopeSkippedWithFinalAnswer) {
  run_async([]() -> Task<void> {
    int calls = 0;
    std::vector<std::string> events;
    Node a("a", [&](Message m, Context&) -> Task<Message> {
      ++calls;
      co_return m;
    });
    Flow flow({a.to()}, FlowOptions{.middlewares = {[&](const FlowEvent& e) { events.emplace_back(to_string(e.type)); }}});
    flow.run(co_await asio::this_coro::executor);
    Message late{1, Headers{.tenant = "t"}};
    late.deadline_s = wall_now() - 1;
    co_await flow.emit(late, "late");
    auto r = std::any_cast<Message>(co_await flow.fetch("late"));
    EXPECT_EQ(std::any_cast<FinalAnswer>(r.payload).text, "Deadline exceeded");
    EXPECT_EQ(r.trace_id, "late");
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(events, std::vector<std::string>{"deadline_skip"});
    co_await flow.stop();
  }());
}

TEST(C12_Streaming, ChunksCarrySeqPerStreamAndRestartAfterDone) {
  run_async([]() -> Task<void> {
    Node talk("talk", [](Message m, Context& ctx) -> Task<Message> {
      co_await ctx.emit_chunk(m, "a");
      co_await ctx.emit_chunk(m, "b");
      co_await ctx.emit_chunk(m, "c", true);
      co_await ctx.emit_chunk(m, "again");
      boost::json::object no_meta;
      Targets all;
      co_await ctx.emit_chunk(m, "other-stream", true, no_meta, all, "side");
      co_return m.with_payload(FinalAnswer{"done"});
    });
    Flow flow({talk.to()}, FlowOptions{.queue_maxsize = 2});  // chunks obey backpressure
    flow.run(co_await asio::this_coro::executor);
    Message q{std::string("q"), Headers{.tenant = "t"}};
    co_await flow.emit(q, "s1");
    std::vector<std::tuple<std::string, int, std::string, bool>> got;
    for (int i = 0; i < 5; ++i) {
      auto m = std::any_cast<Message>(co_await flow.fetch("s1"));
      auto& c = std::any_cast<StreamChunk&>(m.payload);
      got.emplace_back(c.stream_id, c.seq, c.text, c.done);
    }
    using T = std::tuple<std::string, int, std::string, bool>;
    EXPECT_EQ(got[0], T("s1", 0, "a", false));
    EXPECT_EQ(got[1], T("s1", 1, "b", false));
    EXPECT_EQ(got[2], T("s1", 2, "c", true));
    EXPECT_EQ(got[3], T("s1", 0, "again", false));
    EXPECT_EQ(got[4], T("side", 0, "other-stream", true));
    auto last = std::any_cast<Message>(co_await flow.fetch("s1"));
    EXPECT_EQ(std::any_cast<FinalAnswer>(last.payload).text, "done");
    co_await flow.stop();
  }());
}
