// C13: map_concurrent.
#include "support/async_test.hpp"

#include <penguiflow/patterns/map_concurrent.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <numeric>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

Task<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

/// Counts calls in flight and the most seen at once.
struct Gauge {
  int now = 0, max = 0, started = 0, finished = 0, cancelled = 0;
};

}  // namespace

TEST(C13_MapConcurrent, ResultsInInputOrderNeverMoreThanMaxInFlight) {
  run_async([]() -> Task<void> {
    std::vector<int> items(20);
    std::iota(items.begin(), items.end(), 0);
    Gauge g;
    auto results = co_await map_concurrent(items, [&](int x) -> Task<std::string> {
      ++g.started;
      g.max = std::max(g.max, ++g.now);
      // Later items finish sooner, so completion order differs from input order.
      co_await sleep_for(std::chrono::milliseconds(1 + (20 - x) % 7));
      --g.now;
      co_return "r" + std::to_string(x);
    }, 3);
    EXPECT_EQ(results.size(), 20u);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(results[i], "r" + std::to_string(i));
    EXPECT_EQ(g.max, 3);  // reached the bound and never passed it
    EXPECT_EQ(g.started, 20);
  }());
}

TEST(C13_MapConcurrent, MaxOneIsSequentialAndEmptyIsEmpty) {
  run_async([]() -> Task<void> {
    std::vector<int> order;
    std::vector<int> items{3, 1, 2};
    auto r = co_await map_concurrent(items, [&](int x) -> Task<int> {
      order.push_back(x);
      co_await sleep_for(1ms);
      co_return x * 10;
    }, 1);
    EXPECT_EQ(r, (std::vector<int>{30, 10, 20}));
    EXPECT_EQ(order, (std::vector<int>{3, 1, 2}));
    std::vector<int> none;
    auto e = co_await map_concurrent(none, [](int x) -> Task<int> { co_return x; }, 4);
    EXPECT_TRUE(e.empty());
  }());
}

TEST(C13_MapConcurrent, ZeroConcurrencyIsAUsageError) {
  run_async([]() -> Task<void> {
    std::vector<int> items{1};
    try {
      co_await map_concurrent(items, [](int x) -> Task<int> { co_return x; }, 0);
      ADD_FAILURE() << "expected FlowUsageError";
    } catch (const FlowUsageError& e) {
      EXPECT_NE(std::string(e.what()).find("max_concurrency"), std::string::npos);
    }
  }());
}

TEST(C13_MapConcurrent, FirstErrorCancelsTheOthersThenPropagates) {
  run_async([]() -> Task<void> {
    std::vector<int> items(10);
    std::iota(items.begin(), items.end(), 0);
    Gauge g;
    auto started = std::chrono::steady_clock::now();
    try {
      co_await map_concurrent(items, [&](int x) -> Task<int> {
        ++g.started;
        if (x == 1) {
          co_await sleep_for(5ms);
          throw std::runtime_error("item 1 is broken");
        }
        try {
          co_await sleep_for(30s);  // would hang the test if not cancelled
        } catch (const boost::system::system_error&) {
          ++g.cancelled;
          throw;
        }
        ++g.finished;
        co_return x;
      }, 4);
      ADD_FAILURE() << "expected the item's exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "item 1 is broken");
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
    EXPECT_EQ(g.started, 4);    // nothing new started after the failure
    EXPECT_EQ(g.cancelled, 3);  // the other three in flight were cancelled and awaited
    EXPECT_EQ(g.finished, 0);
  }());
}

TEST(C13_MapConcurrent, CancellingTheCallerCancelsEveryCall) {
  run_async([]() -> Task<void> {
    using namespace asio::experimental::awaitable_operators;
    std::vector<int> items(6);
    Gauge g;
    auto work = map_concurrent(items, [&](int) -> Task<int> {
      ++g.started;
      try {
        co_await sleep_for(30s);
      } catch (const boost::system::system_error&) {
        ++g.cancelled;
        throw;
      }
      co_return 0;
    }, 2);
    auto r = co_await (std::move(work) || sleep_for(20ms));
    EXPECT_EQ(r.index(), 1u);  // the timer won
    EXPECT_EQ(g.started, 2);
    EXPECT_EQ(g.cancelled, 2);  // both calls in flight were cancelled before we resumed
  }());
}

TEST(C13_MapConcurrent, RunsInsideANodeOnTheFlowsExecutor) {
  run_async([]() -> Task<void> {
    auto node = Node("fanout", [](std::vector<int> xs, Context&) -> Task<int> {
      auto squares = co_await map_concurrent(xs, [](int x) -> Task<int> {
        co_await sleep_for(1ms);
        co_return x * x;
      }, 2);
      co_return std::accumulate(squares.begin(), squares.end(), 0);
    });
    Flow flow({node.to()});
    flow.run(co_await asio::this_coro::executor);
    std::vector<int> xs{1, 2, 3, 4};
    co_await flow.emit(xs, "t");
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch("t")), 30);
    co_await flow.stop();
  }());
}
