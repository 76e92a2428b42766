// C8 bounded fetch: Flow::fetch_for / fetch_until (one timer per call, no parallel group).
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>

using namespace penguiflow;
using penguiflow::testing::eventually;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

Node identity(std::string name) {
  return Node(std::move(name), [](std::any m, Context&) -> Task<std::any> { co_return m; });
}

/// A node that holds every message until the test opens the gate (cancels the timer).
Node gated(std::string name, std::shared_ptr<asio::steady_timer> gate) {
  return Node(std::move(name), [gate](std::any m, Context&) -> Task<std::any> {
    co_await gate->async_wait(asio::as_tuple(asio::use_awaitable));
    co_return m;
  });
}

/// Lets coroutines spawned just before run up to their first wait (one post starts them;
/// the loop is FIFO on one thread).
Task<void> yield_twice(asio::any_io_executor ex) {
  co_await asio::post(ex, asio::use_awaitable);
  co_await asio::post(ex, asio::use_awaitable);
}

}  // namespace

TEST(C8_BoundedFetch, ReturnsTheTracesResultBeforeTheDeadline) {
  run_async([]() -> Task<void> {
    auto a = identity("a"), b = identity("b");
    Flow flow({a.to(b), b.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(7, "t1");
    co_await flow.emit(8, "t2");
    auto r2 = co_await flow.fetch_for("t2", 5s);
    auto r1 = co_await flow.fetch_item_for("t1", 5s);
    EXPECT_TRUE(r2 && std::any_cast<int>(*r2) == 8);
    EXPECT_TRUE(r1 && std::any_cast<int>(r1->value) == 7 && r1->trace_id == "t1" && r1->source == "b");
    EXPECT_EQ(flow.active_traces(), 0u);
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, AResultAlreadyWaitingIsReturnedEvenWithAZeroTimeout) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1, "t");
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return flow.sink_size() == 1; }));
    auto r = co_await flow.fetch_for("t", Clock::duration::zero());
    EXPECT_TRUE(r && std::any_cast<int>(*r) == 1);
    auto none = co_await flow.fetch_for("t", Clock::duration::zero());
    EXPECT_FALSE(none.has_value());
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, TimesOutWithNulloptAndTheResultStaysFetchable) {
  run_async([]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto gate = std::make_shared<asio::steady_timer>(ex, Clock::time_point::max());
    auto slow = gated("slow", gate);
    Flow flow({slow.to()});
    flow.run(ex);
    co_await flow.emit(5, "t");
    auto t0 = Clock::now();
    auto r = co_await flow.fetch_for("t", 30ms);
    EXPECT_FALSE(r.has_value());
    EXPECT_GE(Clock::now() - t0, 30ms);
    gate->cancel();  // the node finishes only now: its result must still reach a fetch
    auto later = co_await flow.fetch_for("t", 10s);
    EXPECT_TRUE(later && std::any_cast<int>(*later) == 5);
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, TimeoutsOfOneTraceLeaveOtherTracesAlone) {
  run_async([]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto gate = std::make_shared<asio::steady_timer>(ex, Clock::time_point::max());
    Node route("route", [gate](int x, Context&) -> Task<int> {
      if (x < 0) co_await gate->async_wait(asio::as_tuple(asio::use_awaitable));  // negative: held
      co_return x;
    });
    Flow flow({route.to()}, FlowOptions{.queue_maxsize = 0});
    flow.run(ex);
    int timed_out = 0, served = 0, done = 0;
    // One held trace first (it blocks the single node worker until the gate opens), then
    // 20 traces whose fetches outlive its timeout.
    asio::co_spawn(ex, [&]() -> Task<void> {
      co_await flow.emit(-1, "held");
      if (!(co_await flow.fetch_for("held", 20ms))) ++timed_out;
      gate->cancel();
      ++done;
    }, asio::detached);
    for (int i = 0; i < 20; ++i)
      asio::co_spawn(ex, [&, i]() -> Task<void> {
        std::string trace = "t";
        trace += std::to_string(i);
        co_await flow.emit(i, trace);
        auto r = co_await flow.fetch_for(trace, 10s);
        if (r && std::any_cast<int>(*r) == i) ++served;
        ++done;
      }, asio::detached);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return done == 21; }));
    EXPECT_EQ(timed_out, 1);
    EXPECT_EQ(served, 20);
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, FetchUntilBoundsSeveralFetchesWithOneDeadline) {
  run_async([]() -> Task<void> {
    Node chatty("chatty", [](int x, Context& ctx) -> Task<int> {
      co_await ctx.emit(x * 10);  // progress first, then the answer
      co_return x;
    });
    Flow flow({chatty.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(3, "t");
    auto deadline = Clock::now() + 10s;
    auto progress = co_await flow.fetch_until("t", deadline);
    auto answer = co_await flow.fetch_until("t", deadline);
    EXPECT_TRUE(progress && std::any_cast<int>(*progress) == 30);
    EXPECT_TRUE(answer && std::any_cast<int>(*answer) == 3);
    auto nothing = co_await flow.fetch_until("t", Clock::now() + 20ms);
    EXPECT_FALSE(nothing.has_value());
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, UntracedBoundedFetchTakesTheNextResult) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    auto none = co_await flow.fetch_for("", 10ms);
    EXPECT_FALSE(none.has_value());
    co_await flow.emit(4);
    auto r = co_await flow.fetch_for("", 10s);
    EXPECT_TRUE(r && std::any_cast<int>(*r) == 4);
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, CancellingTheCallerAbortsItNotATimeout) {
  run_async([]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto gate = std::make_shared<asio::steady_timer>(ex, Clock::time_point::max());
    auto slow = gated("slow", gate);
    Flow flow({slow.to()});
    flow.run(ex);
    co_await flow.emit(1, "t");
    asio::cancellation_signal cancel;
    bool aborted = false, returned = false, done = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      try {
        auto r = co_await flow.fetch_for("t", 60s);
        returned = true;
        (void)r;
      } catch (const boost::system::system_error& e) {
        aborted = e.code() == asio::error::operation_aborted;
      }
      done = true;
    }, asio::bind_cancellation_slot(cancel.slot(), asio::detached));
    co_await yield_twice(ex);  // the fetch is now waiting in the sink
    EXPECT_FALSE(done);
    cancel.emit(asio::cancellation_type::terminal);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return done; }));
    EXPECT_TRUE(aborted);
    EXPECT_FALSE(returned);
    gate->cancel();
    auto r = co_await flow.fetch_for("t", 10s);  // the flow is unaffected
    EXPECT_TRUE(r && std::any_cast<int>(*r) == 1);
    co_await flow.stop();
  }());
}

TEST(C8_BoundedFetch, StopWakesAWaitingBoundedFetchWithFlowStopped) {
  run_async([]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto gate = std::make_shared<asio::steady_timer>(ex, Clock::time_point::max());
    auto slow = gated("slow", gate);
    Flow flow({slow.to()});
    flow.run(ex);
    co_await flow.emit(1, "t");
    bool stopped = false, done = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      try {
        (void)co_await flow.fetch_for("t", 60s);
      } catch (const FlowStoppedError&) {
        stopped = true;
      }
      done = true;
    }, asio::detached);
    co_await yield_twice(ex);  // the fetch is now waiting in the sink
    EXPECT_FALSE(done);
    co_await flow.stop();
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return done; }));
    EXPECT_TRUE(stopped);
  }());
}
