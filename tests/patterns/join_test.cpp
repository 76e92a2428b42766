// C13: join_k.
#include "support/async_test.hpp"

#include <penguiflow/patterns/join.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/json/serialize.hpp>

using namespace penguiflow;
using penguiflow::testing::eventually;
using penguiflow::testing::run_async;
namespace asio = boost::asio;

namespace {

Node worker(std::string name) {
  return Node(name, [name](Message m, Context&) -> Task<Message> {
    co_return std::move(m).with_payload(name + ":" + std::any_cast<std::string>(m.payload));
  });
}

std::vector<std::string> batch_of(const std::any& result) {
  std::vector<std::string> out;
  const auto& m = std::any_cast<const Message&>(result);
  for (auto& p : std::any_cast<const std::vector<std::any>&>(m.payload)) out.push_back(std::any_cast<std::string>(p));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(C13_JoinK, KBelowOneRejectedNamingTheNode) {
  for (int k : {0, -3}) {
    try {
      join_k("gather", k);
      FAIL();
    } catch (const FlowUsageError& e) {
      EXPECT_NE(std::string(e.what()).find("join_k 'gather': k must be >= 1"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(join_k("one", 1));
}

TEST(C13_JoinK, FanOutJoinsKPerTraceKeepingTheFirstEnvelope) {
  run_async([]() -> Task<void> {
    auto fan = Node("fan", [](Message m, Context&) -> Task<Message> { co_return m; });
    auto a = worker("a"), b = worker("b"), c = worker("c");
    auto join = join_k("join", 3);
    Flow flow({fan.to(a, b, c), a.to(join), b.to(join), c.to(join), join.to()},
              FlowOptions{.middlewares = {join.cleanup()}});
    flow.run(co_await asio::this_coro::executor);
    // Several traces interleaved: each batch holds exactly its own trace's three parts.
    for (int t = 0; t < 5; ++t) {
      Message m{std::string("q") + std::to_string(t), Headers{.tenant = "tenant" + std::to_string(t), .topic = "join"}};
      m.meta["n"] = t;
      co_await flow.emit(std::move(m), "trace-" + std::to_string(t));
    }
    for (int t = 0; t < 5; ++t) {
      std::string q = "q" + std::to_string(t);
      auto result = co_await flow.fetch("trace-" + std::to_string(t));
      EXPECT_EQ(batch_of(result), (std::vector<std::string>{"a:" + q, "b:" + q, "c:" + q}));
      const auto& m = std::any_cast<const Message&>(result);
      EXPECT_EQ(m.trace_id, "trace-" + std::to_string(t));
      EXPECT_EQ(m.headers.tenant, "tenant" + std::to_string(t));
      EXPECT_EQ(m.meta.at("n").as_int64(), t);
      auto j = to_json(m.payload);  // a batch converts to a JSON array at the edges
      EXPECT_TRUE(j.is_array() && j.as_array().size() == 3u) << boost::json::serialize(j);
    }
    EXPECT_EQ(join.pending_traces(), 0u);
    co_await flow.stop();
  }());
}

TEST(C13_JoinK, BareValuesJoinIntoAVector) {
  run_async([]() -> Task<void> {
    auto join = join_k("join", 2);
    Flow flow({join.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1, "t");
    co_await flow.emit(2, "t");
    auto r = co_await flow.fetch("t");
    const auto& v = std::any_cast<const std::vector<std::any>&>(r);
    EXPECT_EQ(v.size(), 2u);
    if (v.size() == 2) {
      EXPECT_EQ(std::any_cast<int>(v[0]) + std::any_cast<int>(v[1]), 3);
    }
    co_await flow.stop();
  }());
}

TEST(C13_JoinK, MessageWithoutTraceIdFailsClearlyAndOtherTracesAreServed) {
  run_async([]() -> Task<void> {
    std::vector<std::string> failures;
    auto join = join_k("gather", 2);
    Middleware watch = [&](const FlowEvent& ev) {
      if (ev.type == EventType::node_failed) failures.push_back(ev.node_name + ": " + ev.extra.at("error").as_string().c_str());
    };
    Flow flow({join.to()}, FlowOptions{.emit_errors_to_rookery = true, .middlewares = {watch}});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(7);  // a bare value, no trace id
    co_await flow.emit(1, "ok");
    co_await flow.emit(2, "ok");
    auto r = co_await flow.fetch("ok");
    EXPECT_EQ(std::any_cast<const std::vector<std::any>&>(r).size(), 2u);
    EXPECT_EQ(failures.size(), 1u);
    if (!failures.empty()) {
      EXPECT_NE(failures[0].find("gather: join_k 'gather': message has no trace id"), std::string::npos) << failures[0];
    }
    co_await flow.stop();
  }());
}

TEST(C13_JoinK, CancelledTraceLosesItsPartialBatch) {
  run_async([]() -> Task<void> {
    // Two branches; "slow" hangs on "hang" until cancelled, so the trace stays active
    // with half a batch in the join.
    auto fan = Node("fan", [](Message m, Context&) -> Task<Message> { co_return m; });
    auto fast = Node("fast", [](Message m, Context&) -> Task<Message> { co_return m; });
    auto slow = Node("slow", [](Message m, Context& ctx) -> Task<Message> {
      if (std::any_cast<std::string>(m.payload) == "hang") co_await ctx.sleep(30);
      co_return m;
    });
    auto join = join_k("join", 2);
    Flow flow({fan.to(fast, slow), fast.to(join), slow.to(join), join.to()}, FlowOptions{.middlewares = {join.cleanup()}});
    flow.run(co_await asio::this_coro::executor);
    Message m{std::string("hang")};
    co_await flow.emit(std::move(m), "doomed");
    bool half = co_await eventually([&]() -> Task<bool> { co_return join.pending_traces() == 1; });
    EXPECT_TRUE(half);
    EXPECT_TRUE(flow.cancel("doomed"));
    EXPECT_EQ(join.pending_traces(), 0u);
    // Other traces are served as before.
    Message ok{std::string("ok")};
    co_await flow.emit(std::move(ok), "other");
    auto r = co_await flow.fetch("other");
    EXPECT_EQ(batch_of(r), (std::vector<std::string>{"ok", "ok"}));
    co_await flow.stop();
  }());
}

TEST(C13_JoinK, ForgetDropsAPartialBatchOfAFinishedTrace) {
  run_async([]() -> Task<void> {
    // Once the flow holds nothing else of a trace, cancel() no longer knows it (returns
    // false); the join's partial batch stays until forget(), its TTL, its deadline or
    // eviction.
    auto join = join_k("join", 2);
    Flow flow({join.to()}, FlowOptions{.middlewares = {join.cleanup()}});
    flow.run(co_await asio::this_coro::executor);
    Message m{std::string("half")};
    co_await flow.emit(std::move(m), "orphan");
    bool waiting = co_await eventually([&]() -> Task<bool> { co_return join.pending_traces() == 1 && flow.active_traces() == 0; });
    EXPECT_TRUE(waiting);
    EXPECT_FALSE(flow.cancel("orphan"));
    EXPECT_TRUE(join.forget("orphan"));
    EXPECT_EQ(join.pending_traces(), 0u);
    co_await flow.stop();
  }());
}

TEST(C13_JoinK, PartialBatchesAreBoundedAndExpire) {
  run_async([]() -> Task<void> {
    auto join = join_k("join", 2, JoinOptions{.max_pending_traces = 2});
    Flow flow({join.to()});
    flow.run(co_await asio::this_coro::executor);
    for (std::string t : {"t1", "t2", "t3"}) co_await flow.emit(0, t);
    bool three = co_await eventually([&]() -> Task<bool> { co_return flow.active_traces() == 0; });
    EXPECT_TRUE(three);
    EXPECT_EQ(join.pending_traces(), 2u);  // t1 was evicted for t3
    co_await flow.emit(1, "t1");           // starts a new bucket for t1 (evicting t2)
    co_await flow.emit(3, "t3");
    auto r = co_await flow.fetch("t3");
    EXPECT_EQ(std::any_cast<const std::vector<std::any>&>(r).size(), 2u);
    EXPECT_TRUE(join.forget("t1"));
    EXPECT_EQ(join.pending_traces(), 0u);
    co_await flow.stop();

    auto aging = join_k("aging", 2, JoinOptions{.bucket_ttl_s = 0.0});
    Flow flow2({aging.to()});
    flow2.run(co_await asio::this_coro::executor);
    co_await flow2.emit(0, "old");
    bool one = co_await eventually([&]() -> Task<bool> { co_return aging.pending_traces() == 1; });
    EXPECT_TRUE(one);
    co_await flow2.emit(0, "new");  // arrives later than the TTL: "old" is swept
    bool swept = co_await eventually([&]() -> Task<bool> { co_return flow2.active_traces() == 0; });
    EXPECT_TRUE(swept);
    EXPECT_EQ(aging.pending_traces(), 1u);
    EXPECT_FALSE(aging.forget("old"));
    co_await flow2.stop();
  }());
}

TEST(C13_JoinK, PartialBatchPastItsDeadlineIsSweptBeforeEvictingOthers) {
  run_async([]() -> Task<void> {
    auto join = join_k("join", 2, JoinOptions{.max_pending_traces = 2});
    Flow flow({join.to()});
    flow.run(co_await asio::this_coro::executor);
    Message late{std::string("late")};
    late.deadline_s = wall_now() + 0.3;  // generous: the join must see it before it passes
    const double deadline = *late.deadline_s;
    co_await flow.emit(std::move(late), "late");
    Message keep{std::string("keep")};
    co_await flow.emit(std::move(keep), "keep");
    bool passed = co_await eventually([&]() -> Task<bool> { co_return join.pending_traces() == 2 && wall_now() > deadline; });
    EXPECT_TRUE(passed);
    Message fresh{std::string("fresh")};
    co_await flow.emit(std::move(fresh), "fresh");  // at the cap: the expired batch goes, not "keep"
    bool done = co_await eventually([&]() -> Task<bool> { co_return flow.active_traces() == 0; });
    EXPECT_TRUE(done);
    EXPECT_FALSE(join.forget("late"));
    EXPECT_TRUE(join.forget("keep"));
    EXPECT_TRUE(join.forget("fresh"));
    co_await flow.stop();
  }());
}
