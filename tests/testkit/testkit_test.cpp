// C17: run_one, Recorder + assert_node_sequence, failure injection.
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>
#include <penguiflow/testkit/testkit.hpp>

#include <boost/asio/this_coro.hpp>

using namespace penguiflow;
using penguiflow::testing::eventually;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
namespace tk = penguiflow::testkit;

namespace {

Node add(std::string name, int k, NodePolicy policy = {}) {
  return Node(std::move(name), [k](int x, Context&) -> Task<int> { co_return x + k; }, policy);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(C17_RunOne, RunsAStoppedFlowAndStopsItAfterwards) {
  run_async([]() -> Task<void> {
    auto a = add("a", 1), b = add("b", 10);
    Flow flow({a.to(b), b.to()});
    std::any r = co_await tk::run_one(flow, 1, 2.0);
    EXPECT_EQ(std::any_cast<int>(r), 12);
    EXPECT_FALSE(flow.running());
    // Again: the flow can be run again by the next call.
    EXPECT_EQ(std::any_cast<int>(co_await tk::run_one(flow, 5, 2.0)), 16);
  }());
}

TEST(C17_RunOne, UsesARunningFlowAndLeavesItRunning) {
  run_async([]() -> Task<void> {
    auto a = Node("echo", [](Message m, Context&) -> Task<Message> { co_return m; });
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    Message m{std::string("hi"), Headers{.tenant = "acme"}, "my-trace"};
    std::any r = co_await tk::run_one(flow, m, 2.0);
    const auto& out = std::any_cast<const Message&>(r);
    EXPECT_EQ(out.trace_id, "my-trace");  // the Message's own trace id
    EXPECT_EQ(out.headers.tenant, "acme");
    EXPECT_TRUE(flow.running());
    co_await flow.stop();
  }());
}

TEST(C17_RunOne, TimeoutIsAClearErrorAndCancelsOnlyThatTrace) {
  run_async([]() -> Task<void> {
    auto slow = Node("slow", [](int x, Context& ctx) -> Task<int> {
      if (x < 0) co_await ctx.sleep(30);
      co_return x;
    });
    Flow flow({slow.to()}, FlowOptions{.name = "sleepy"});
    flow.run(co_await asio::this_coro::executor);
    auto t0 = std::chrono::steady_clock::now();
    try {
      co_await tk::run_one(flow, -1, 0.05, "stuck");
      ADD_FAILURE() << "expected RunTimeoutError";
    } catch (const tk::RunTimeoutError& e) {
      EXPECT_EQ(e.trace_id(), "stuck");
      EXPECT_TRUE(contains(e.what(), "flow 'sleepy'") && contains(e.what(), "trace 'stuck'") &&
                  contains(e.what(), "within 0.05 s"))
          << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    bool cancelled = co_await eventually([&]() -> Task<bool> { co_return flow.active_traces() == 0; });
    EXPECT_TRUE(cancelled);  // the stuck invocation was cancelled with its trace
    EXPECT_EQ(std::any_cast<int>(co_await tk::run_one(flow, 7, 2.0)), 7);
    co_await flow.stop();
  }());
}

TEST(C17_RunOne, TimeoutOnAStoppedFlowStopsItAgain) {
  run_async([]() -> Task<void> {
    auto slow = Node("slow", [](int, Context& ctx) -> Task<int> {
      co_await ctx.sleep(30);
      co_return 0;
    });
    Flow flow({slow.to()});
    EXPECT_THROW(co_await tk::run_one(flow, 1, 0.02), tk::RunTimeoutError);
    EXPECT_FALSE(flow.running());
  }());
}

TEST(C17_Recorder, AssertsTheNodeSequenceOfATrace) {
  run_async([]() -> Task<void> {
    tk::Recorder rec;
    auto a = add("a", 1), b = add("b", 2), c = add("c", 3);
    Flow flow({a.to(b), b.to(c), c.to()}, FlowOptions{.middlewares = {rec.middleware()}});
    EXPECT_EQ(std::any_cast<int>(co_await tk::run_one(flow, 0, 2.0, "t1")), 6);
    auto ok = tk::assert_node_sequence(rec, "t1", {"a", "b", "c"});
    EXPECT_TRUE(ok.ok) << ok.message;
    auto wrong = tk::assert_node_sequence(rec, "t1", {"a", "c"});
    EXPECT_FALSE(wrong);
    EXPECT_TRUE(contains(wrong.message, "expected: ['a', 'c']") && contains(wrong.message, "actual:   ['a', 'b', 'c']"))
        << wrong.message;
    auto none = tk::assert_node_sequence(rec, "never", {"a"});
    EXPECT_FALSE(none);
    EXPECT_TRUE(contains(none.message, "no recorded events for trace 'never'")) << none.message;
    EXPECT_THROW(tk::require_node_sequence(rec, "t1", {"b"}), tk::AssertionError);
    EXPECT_NO_THROW(tk::require_node_sequence(rec, "t1", {"a", "b", "c"}));
    EXPECT_EQ(rec.traces(), (std::vector<std::string>{"t1"}));
  }());
}

TEST(C17_Recorder, RetriesCollapseAndOldTracesAreDropped) {
  run_async([]() -> Task<void> {
    tk::Recorder rec(2);
    tk::FailureInjector once(tk::FailureSpec{.fail_times = 1});
    auto a = add("a", 1);
    auto flaky = Node("flaky", once.wrap([](int x, Context&) -> Task<int> { co_return x * 2; }),
                      NodePolicy{.max_retries = 1, .backoff_base = 0});
    Flow flow({a.to(flaky), flaky.to()}, FlowOptions{.middlewares = {rec.middleware()}});
    EXPECT_EQ(std::any_cast<int>(co_await tk::run_one(flow, 1, 2.0, "r1")), 4);
    EXPECT_EQ(rec.node_sequence("r1"), (std::vector<std::string>{"a", "flaky"}));
    int starts = 0;
    for (auto& ev : rec.events("r1")) starts += ev.type == EventType::node_start && ev.node_name == "flaky";
    EXPECT_EQ(starts, 2);  // two attempts, one step in the sequence
    co_await tk::run_one(flow, 1, 2.0, "r2");
    co_await tk::run_one(flow, 1, 2.0, "r3");
    EXPECT_EQ(rec.traces(), (std::vector<std::string>{"r2", "r3"}));
    EXPECT_TRUE(rec.events("r1").empty());
  }());
}

TEST(C17_InjectFailure, FailsTheFirstNCallsThenRunsTheRealFunction) {
  run_async([]() -> Task<void> {
    tk::FailureInjector inj(tk::FailureSpec{.fail_times = 2, .error = "boom"});
    std::vector<std::string> errors;
    Middleware watch = [&](const FlowEvent& ev) {
      if (ev.type == EventType::node_error) errors.push_back(std::string(ev.extra.at("error").as_string()));
    };
    auto n = Node("n", inj.wrap([](int x, Context&) -> Task<int> { co_return x + 1; }),
                  NodePolicy{.max_retries = 2, .backoff_base = 0});
    Flow flow({n.to()}, FlowOptions{.middlewares = {watch}});
    EXPECT_EQ(std::any_cast<int>(co_await tk::run_one(flow, 1, 2.0)), 2);
    EXPECT_EQ(inj.calls(), 3);
    EXPECT_EQ(inj.failures(), 2);
    EXPECT_EQ(errors, (std::vector<std::string>{"boom", "boom"}));
  }());
}

TEST(C17_InjectFailure, MoreFailuresThanRetriesBecomeAFlowError) {
  run_async([]() -> Task<void> {
    auto n = Node("n", tk::inject_failure([](int x, Context&) -> Task<int> { co_return x; }, {.fail_times = 5, .delay_s = 0.005}),
                  NodePolicy{.max_retries = 1, .backoff_base = 0});
    Flow flow({n.to()}, FlowOptions{.emit_errors_to_rookery = true});
    std::any r = co_await tk::run_one(flow, 1, 2.0, "t");
    auto* fe = std::any_cast<FlowError>(&r);
    EXPECT_TRUE(fe);
    if (fe) {
      EXPECT_EQ(fe->code, FlowErrorCode::node_exception);
      EXPECT_EQ(fe->attempts, 2);
      EXPECT_EQ(fe->message, "injected failure");
      EXPECT_EQ(fe->node_name, "n");
    }
  }());
}

TEST(C17_InjectFailure, HangingCallsHitTheNodeTimeout) {
  run_async([]() -> Task<void> {
    tk::FailureInjector hang(tk::FailureSpec{.fail_times = 1, .hang = true});
    auto n = Node("n", hang.wrap([](Message m, Context&) -> Task<Message> { co_return m; }),
                  NodePolicy{.timeout_s = 0.05, .max_retries = 1, .backoff_base = 0});
    tk::Recorder rec;
    Flow flow({n.to()}, FlowOptions{.emit_errors_to_rookery = true, .middlewares = {rec.middleware()}});
    Message m{std::string("x")};
    std::any r = co_await tk::run_one(flow, m, 5.0, "h1");
    EXPECT_TRUE(std::any_cast<Message>(&r)) << "the retry after the timeout succeeds";
    int timeouts = 0;
    for (auto& ev : rec.events("h1")) timeouts += ev.type == EventType::node_timeout;
    EXPECT_EQ(timeouts, 1);

    tk::FailureInjector always(tk::FailureSpec{.fail_times = 100, .hang = true});
    auto stuck = Node("stuck", always.wrap([](Message m, Context&) -> Task<Message> { co_return m; }),
                      NodePolicy{.timeout_s = 0.02});
    Flow flow2({stuck.to()}, FlowOptions{.emit_errors_to_rookery = true});
    Message m2{std::string("y")};
    std::any r2 = co_await tk::run_one(flow2, m2, 5.0, "h2");
    auto* fe = std::any_cast<FlowError>(&r2);
    EXPECT_TRUE(fe && fe->code == FlowErrorCode::node_timeout);
  }());
}
