// C10 cancellation, C14 subflows.
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

using namespace penguiflow;
using penguiflow::testing::eventually;
using penguiflow::testing::run_async;
namespace asio = boost::asio;

TEST(C10_Cancel, DropsQueuedCancelsInflightLeavesOthers) {
  run_async([]() -> Task<void> {
    int finished_a = 0, started_a = 0;
    std::vector<std::string> events;
    Node slow("slow", [&](Message m, Context& ctx) -> Task<Message> {
      if (m.trace_id == "A") ++started_a;
      co_await ctx.sleep(m.trace_id == "A" ? 3600 : 0.001);
      if (m.trace_id == "A") ++finished_a;
      co_return m;
    });
    Node after("after", [](Message m, Context&) -> Task<Message> { co_return m; });
    Flow flow({slow.to(after), after.to()},
              FlowOptions{.middlewares = {[&](const FlowEvent& e) {
                if (e.trace_id == "A") events.emplace_back(to_string(e.type));
              }}});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    Message m1{1}, m2{2};
    co_await flow.emit(m1, "A");  // in flight in `slow`
    co_await flow.emit(m2, "A");  // queued behind it
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return started_a == 1; }));
    EXPECT_TRUE(flow.cancel("A"));
    EXPECT_FALSE(flow.cancel("unknown"));
    Message m3{3};
    co_await flow.emit(m3, "B");
    auto b = std::any_cast<Message>(co_await flow.fetch("B"));
    EXPECT_EQ(std::any_cast<int>(b.payload), 3);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return flow.active_traces() == 0; }));
    EXPECT_EQ(finished_a, 0);
    EXPECT_EQ(started_a, 1);  // the queued message of A was dropped, never run
    EXPECT_THROW(flow.fetch_nowait("A"), QueueEmptyError);
    std::vector<std::string> want{"node_start", "trace_cancel_start", "trace_cancel_drop", "node_trace_cancelled",
                                  "trace_cancel_finish"};
    EXPECT_EQ(events, want);
    co_await flow.stop();
  }());
}

TEST(C10_Cancel, ResultsAlreadyInSinkAreDropped) {
  run_async([]() -> Task<void> {
    Node a("a", [](int x, Context&) -> Task<int> { co_return x; });
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1, "T");
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return flow.sink_size() == 1; }));
    EXPECT_TRUE(flow.cancel("T"));
    EXPECT_EQ(flow.sink_size(), 0u);
    co_await flow.stop();
  }());
}

TEST(C10_Cancel, ManyTracesCancelHalf) {
  run_async([]() -> Task<void> {
    Node work("work", [](int x, Context& ctx) -> Task<int> {
      co_await ctx.sleep(0.002);
      co_return x;
    });
    Flow flow({work.to()}, FlowOptions{.queue_maxsize = 0});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    for (int i = 0; i < 40; ++i) co_await flow.emit(i, "t" + std::to_string(i));
    for (int i = 0; i < 40; i += 2) flow.cancel("t" + std::to_string(i));
    for (int i = 1; i < 40; i += 2) EXPECT_EQ(std::any_cast<int>(co_await flow.fetch("t" + std::to_string(i))), i);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return flow.active_traces() == 0; }));
    EXPECT_EQ(flow.sink_size(), 0u);
    co_await flow.stop();
  }());
}

TEST(C14_Subflow, ChildRunsForSameTraceAndIsCancelledWithParent) {
  run_async([]() -> Task<void> {
    int child_started = 0, child_finished = 0;
    Node inner("inner", [&](Message m, Context& ctx) -> Task<Message> {
      ++child_started;
      if (std::any_cast<int>(m.payload) < 0) co_await ctx.sleep(3600);
      ++child_finished;
      co_return m.with_payload(std::any_cast<int>(m.payload) * 10);
    });
    Flow child({inner.to()});
    Node outer("outer", [&](Message m, Context& ctx) -> Task<Message> {
      auto r = co_await call_subflow(ctx, child, m);
      co_return std::any_cast<Message>(r);
    });
    Flow parent({outer.to()});
    auto ex = co_await asio::this_coro::executor;
    child.run(ex);
    parent.run(ex);
    Message four{4}, hang{-1};
    co_await parent.emit(four, "ok");
    auto r = std::any_cast<Message>(co_await parent.fetch("ok"));
    EXPECT_EQ(std::any_cast<int>(r.payload), 40);
    EXPECT_EQ(r.trace_id, "ok");

    co_await parent.emit(hang, "hang");
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return child_started == 2; }));
    EXPECT_TRUE(parent.cancel("hang"));
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return child.active_traces() == 0; }));
    EXPECT_EQ(child_finished, 1);
    co_await parent.stop();
    co_await child.stop();
  }());
}
