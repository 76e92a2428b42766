// C1 graph, C2 lifecycle, C3 backpressure, C4 invocation, C5 reliability, C8 trace-scoped
// round trips, C15 pictures.
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;

namespace {

Node identity(std::string name, NodeOptions opts = {}) {
  return Node(std::move(name), [](std::any m, Context&) -> Task<std::any> { co_return m; }, opts);
}

Node add(std::string name, int k) {
  return Node(std::move(name), [k](int x, Context&) -> Task<int> { co_return x + k; });
}

}  // namespace

TEST(C1_Graph, ChainDeliversToSink) {
  run_async([]() -> Task<void> {
    auto a = add("a", 1), b = add("b", 10), c = add("c", 100);
    Flow flow({a.to(b), b.to(c), c.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1);
    auto r = co_await flow.fetch();
    EXPECT_EQ(std::any_cast<int>(r), 1 + 1 + 10 + 100);
    co_await flow.stop();
  }());
}

TEST(C1_Graph, CycleRejectedNamingNodes) {
  auto a = identity("alpha"), b = identity("beta"), c = identity("gamma");
  try {
    Flow flow({a.to(b), b.to(c), c.to(a)});
    FAIL() << "expected CycleError";
  } catch (const CycleError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("alpha"), std::string::npos) << what;
    EXPECT_NE(what.find("beta"), std::string::npos) << what;
    EXPECT_NE(what.find("gamma"), std::string::npos) << what;
  }
}

TEST(C1_Graph, SelfLoopOnlyWhenNodeAllowsIt) {
  auto a = identity("a"), b = identity("b");
  EXPECT_THROW(Flow({a.to(a, b), b.to()}), CycleError);
  auto looping = identity("loop", NodeOptions{.allow_cycle = true});
  EXPECT_NO_THROW(Flow({looping.to(looping, b), b.to()}));
}

TEST(C1_Graph, CyclesAllowedForTheFlow) {
  auto a = identity("a"), b = identity("b"), start = identity("start");
  EXPECT_NO_THROW(Flow({start.to(a), a.to(b), b.to(a)}, FlowOptions{.allow_cycles = true}));
}

TEST(C1_Graph, DuplicateNamesRejected) {
  auto a1 = identity("same"), a2 = identity("same");
  EXPECT_THROW(Flow({a1.to(a2), a2.to()}), FlowUsageError);
}

TEST(C2_Lifecycle, EmitBeforeRunAndRunTwiceAreErrors) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()});
    EXPECT_THROW(co_await flow.emit(1), FlowUsageError);
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    try {
      flow.run(ex);
      ADD_FAILURE() << "second run must throw";
    } catch (const FlowUsageError& e) {
      EXPECT_NE(std::string(e.what()).find("already running"), std::string::npos);
    }
    co_await flow.stop();
    flow.run(ex);  // after stop, it can run again
    co_await flow.emit(5);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), 5);
    co_await flow.stop();
  }());
}

TEST(C2_Lifecycle, StopCancelsBlockedNodeAndWaitingFetch) {
  run_async([]() -> Task<void> {
    bool finished = false;
    Node hang("hang", [&](std::any, Context& ctx) -> Task<std::any> {
      co_await ctx.sleep(3600);
      finished = true;
      co_return std::any{};
    });
    Flow flow({hang.to()});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    co_await flow.emit(1);
    // A fetch waiting on the sink must be released by stop().
    bool fetch_failed = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      try {
        co_await flow.fetch();
      } catch (const FlowStoppedError&) {
        fetch_failed = true;
      }
    }, asio::detached);
    co_await flow.stop();
    EXPECT_FALSE(finished);
    EXPECT_FALSE(flow.running());
    co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetch_failed; });
    EXPECT_TRUE(fetch_failed);
  }());
}

TEST(C2_Lifecycle, StopEndsIdleAndBusyWorkersAndTheFlowRunsAgain) {
  run_async([]() -> Task<void> {
    auto guard = std::make_shared<int>(0);  // copied into the held invocation's frame
    bool finished = false;
    Node a = identity("a"), c = identity("c"), unused = identity("unused");
    Node hold("hold", [&, guard](int x, Context& ctx) -> Task<int> {
      auto mine = guard;
      if (x < 0) co_await ctx.sleep(3600);
      if (x < 0) finished = true;
      co_return x;
    });
    Flow flow({a.to(hold, unused), hold.to(c), c.to(), unused.to()});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    Targets only_a{a};
    co_await flow.emit(1, "t1", only_a);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch("t1")), 1);  // a, hold, c now idle
    Targets only_a2{a};
    co_await flow.emit(-1, "t2", only_a2);  // hold keeps it
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return guard.use_count() > 2; }));
    co_await flow.stop();  // idle a / c, busy hold, never-started unused
    EXPECT_FALSE(finished);
    EXPECT_EQ(guard.use_count(), 2);  // the held invocation's frame is gone (the node keeps one copy)
    flow.run(ex);
    Targets only_a3{a};
    co_await flow.emit(3, "t3", only_a3);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch("t3")), 3);
    co_await flow.stop();
  }());
}

TEST(C3_Backpressure, EmitNowaitFailsWhenFull) {
  run_async([]() -> Task<void> {
    bool started = false, release = false;
    Node slow("slow", [&](int x, Context& ctx) -> Task<int> {
      started = true;
      while (!release) co_await ctx.sleep(0.001);
      co_return x;
    });
    Flow flow({slow.to()}, FlowOptions{.queue_maxsize = 2});
    flow.run(co_await asio::this_coro::executor);
    flow.emit_nowait(0);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return started; }));
    flow.emit_nowait(1);  // the node holds 0; its inbox (capacity 2) takes 1 and 2
    flow.emit_nowait(2);
    EXPECT_THROW(flow.emit_nowait(3), QueueFullError);
    release = true;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), i);  // order within an edge
    co_await flow.stop();
  }());
}

TEST(C3_Backpressure, FetchNowaitOnEmptySinkFails) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    EXPECT_THROW(flow.fetch_nowait(), QueueEmptyError);
    co_await flow.stop();
  }());
}

TEST(C3_Backpressure, ProducerBlocksUntilConsumerDrains) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()}, FlowOptions{.queue_maxsize = 4});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    int emitted = 0;
    bool producer_done = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      for (int i = 0; i < 100; ++i) {
        co_await flow.emit(i);
        ++emitted;
      }
      producer_done = true;
    }, asio::detached);
    // Without a consumer the producer stalls: inbox (4) + the node's one in hand + sink (4).
    bool filled = co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return flow.sink_size() == 4; });
    EXPECT_TRUE(filled) << "sink size " << flow.sink_size() << ", emitted " << emitted;
    EXPECT_LT(emitted, 100);
    EXPECT_LE(emitted, 4 + 1 + 4);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), i);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return producer_done; }));
    co_await flow.stop();
  }());
}

TEST(C4_Invocation, ReturnGoesToEverySuccessorNothingEmitsNothing) {
  run_async([]() -> Task<void> {
    Node split("split", [](int x, Context&) -> Task<int> { co_return x; });
    auto l = add("left", 1), r = add("right", 2);
    Node drop_odd("drop_odd", [](int x, Context&) -> Task<std::optional<int>> {
      if (x % 2) co_return std::nullopt;
      co_return x;
    });
    Flow flow({split.to(l, r), l.to(), r.to(drop_odd), drop_odd.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1);  // left: 2, right: 3 -> dropped
    co_await flow.emit(2);  // left: 3, right: 4
    std::vector<int> got;
    for (int i = 0; i < 3; ++i) got.push_back(std::any_cast<int>(co_await flow.fetch()));
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<int>{2, 3, 4}));
    EXPECT_THROW(flow.fetch_nowait(), QueueEmptyError);
    co_await flow.stop();
  }());
}

TEST(C4_Invocation, CtxEmitToChosenSuccessorAndUnknownTargetIsError) {
  run_async([]() -> Task<void> {
    auto yes = identity("yes"), no = identity("no"), stranger = identity("stranger");
    std::string error;
    Node router("router", [&](int x, Context& ctx) -> Task<void> {
      if (x < 0) {
        try {
          ctx.emit_nowait(x, {stranger});
        } catch (const FlowUsageError& e) {
          error = e.what();
        }
        co_return;
      }
      Targets to{x > 0 ? yes : no};
      co_await ctx.emit(x, to);
    });
    Flow flow({router.to(yes, no), yes.to(), no.to(), stranger.to()});
    flow.run(co_await asio::this_coro::executor);
    Targets to_router{router};
    co_await flow.emit(5, "", to_router);
    auto f = co_await flow.fetch_item();
    EXPECT_EQ(f.source, "yes");
    co_await flow.emit(0, "", to_router);
    f = co_await flow.fetch_item();
    EXPECT_EQ(f.source, "no");
    co_await flow.emit(-1, "", to_router);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return !error.empty(); }));
    EXPECT_NE(error.find("stranger"), std::string::npos) << error;
    EXPECT_NE(error.find("router"), std::string::npos) << error;
    co_await flow.stop();
  }());
}

TEST(C4_Invocation, UnknownEmitTargetNamesIt) {
  run_async([]() -> Task<void> {
    auto a = identity("a"), ghost = identity("ghost");
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    try {
      Targets to_ghost{ghost};
      co_await flow.emit(1, "", to_ghost);
      ADD_FAILURE();
    } catch (const FlowUsageError& e) {
      EXPECT_NE(std::string(e.what()).find("ghost"), std::string::npos);
    }
    co_await flow.emit(2);  // the flow keeps serving
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), 2);
    co_await flow.stop();
  }());
}

TEST(C5_Reliability, RetriesThenSucceeds) {
  run_async([]() -> Task<void> {
    int calls = 0;
    Node flaky("flaky", [&](int x, Context&) -> Task<int> {
      if (++calls < 3) throw std::runtime_error("boom");
      co_return x;
    }, NodePolicy{.max_retries = 2, .backoff_base = 0.001});
    Flow flow({flaky.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(7);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch()), 7);
    EXPECT_EQ(calls, 3);
    co_await flow.stop();
  }());
}

TEST(C5_Reliability, TimeoutCancelsAttemptAndErrorReachesRookery) {
  run_async([]() -> Task<void> {
    int started = 0, finished = 0;
    Node slow("slow", [&](int x, Context& ctx) -> Task<int> {
      ++started;
      co_await ctx.sleep(10);
      ++finished;
      co_return x;
    }, NodePolicy{.timeout_s = 0.02, .max_retries = 1, .backoff_base = 0.001});
    Flow flow({slow.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1, "t-1");
    auto r = co_await flow.fetch("t-1");
    auto* err = std::any_cast<FlowError>(&r);
    EXPECT_NE(err, nullptr);
    if (err) {
      EXPECT_EQ(err->code, FlowErrorCode::node_timeout);
      EXPECT_EQ(err->node_name, "slow");
      EXPECT_EQ(err->trace_id, "t-1");
      EXPECT_EQ(err->attempts, 2);
      EXPECT_GT(err->latency_ms, 10);
    }
    EXPECT_EQ(started, 2);
    EXPECT_EQ(finished, 0);  // the timed-out attempts were really cancelled
    co_await flow.stop();
  }());
}

// A timeout bounds each attempt, not the node's busy time: 100 quick messages in a row,
// together far longer than the timeout, all succeed (the node's one watchdog timer, due at
// an earlier attempt's deadline, must re-arm instead of cancelling a later attempt).
TEST(C5_Reliability, TimeoutBoundsEachAttemptNotTheNodesBusyTime) {
  run_async([]() -> Task<void> {
    Node quick("quick", [](int x, Context& ctx) -> Task<int> {
      co_await ctx.sleep(0.003);
      co_return x;
    }, NodePolicy{.timeout_s = 0.05});
    Flow flow({quick.to()}, FlowOptions{.emit_errors_to_rookery = true});
    flow.run(co_await asio::this_coro::executor);
    for (int i = 0; i < 100; ++i) co_await flow.emit(i);
    for (int i = 0; i < 100; ++i) {
      auto r = co_await flow.fetch();
      EXPECT_EQ(r.type(), typeid(int)) << "message " << i << " did not succeed";
    }
    co_await flow.stop();
  }(), std::chrono::seconds(30));
}

// Timeouts still fire after the flow is stopped mid-attempt and run again (stop() cancels
// the node's armed watchdog; the next run must arm it anew).
TEST(C5_Reliability, TimeoutFiresAgainAfterStopAndRun) {
  run_async([]() -> Task<void> {
    int started = 0;
    Node hang("hang", [&](int x, Context& ctx) -> Task<int> {
      ++started;
      co_await ctx.sleep(30);
      co_return x;
    }, NodePolicy{.timeout_s = 0.2});
    Flow flow({hang.to()}, FlowOptions{.emit_errors_to_rookery = true});
    auto ex = co_await asio::this_coro::executor;
    for (int round = 0; round < 3; ++round) {
      flow.run(ex);
      co_await flow.emit(round, "stopped");
      auto began = [&]() -> Task<bool> { co_return started == 2 * round + 1; };
      EXPECT_TRUE(co_await penguiflow::testing::eventually(began));
      co_await flow.stop();  // the attempt is in flight: its watchdog is armed
      flow.run(ex);
      co_await flow.emit(round, "t");
      auto r = co_await flow.fetch("t");
      auto* err = std::any_cast<FlowError>(&r);
      EXPECT_TRUE(err && err->code == FlowErrorCode::node_timeout) << "round " << round;
      co_await flow.stop();
    }
  }(), std::chrono::seconds(20));
}

TEST(C5_Reliability, ExceptionBecomesFlowErrorOnlyWhenAsked) {
  run_async([]() -> Task<void> {
    Node bad("bad", [](int, Context&) -> Task<int> {
      throw std::runtime_error("kaput");
      co_return 0;
    });
    Flow quiet({bad.to()});
    auto ex = co_await asio::this_coro::executor;
    quiet.run(ex);
    co_await quiet.emit(1, "q");
    co_await quiet.emit(2, "q2");
    // Nothing reaches the sink without emit_errors_to_rookery.
    asio::steady_timer t(ex, std::chrono::milliseconds(20));
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(quiet.sink_size(), 0u);
    co_await quiet.stop();

    Flow loud({bad.to()}, FlowOptions{.emit_errors_to_rookery = true});
    loud.run(ex);
    co_await loud.emit(1, "x");
    auto r = co_await loud.fetch("x");
    auto& err = std::any_cast<FlowError&>(r);
    EXPECT_EQ(err.code, FlowErrorCode::node_exception);
    EXPECT_EQ(err.message, "kaput");
    EXPECT_EQ(err.attempts, 1);
    co_await loud.stop();
  }());
}

TEST(C5_Reliability, BackoffFormula) {
  NodePolicy p{.backoff_base = 0.5, .backoff_mult = 2.0, .max_backoff = 3.0};
  EXPECT_DOUBLE_EQ(p.backoff_for(0), 0.5);
  EXPECT_DOUBLE_EQ(p.backoff_for(1), 1.0);
  EXPECT_DOUBLE_EQ(p.backoff_for(2), 2.0);
  EXPECT_DOUBLE_EQ(p.backoff_for(3), 3.0);
}

TEST(C8_TraceScoped, HundredsOfConcurrentTracesStayIsolated) {
  run_async([]() -> Task<void> {
    Node work("work", [](Message m, Context& ctx) -> Task<Message> {
      int v = std::any_cast<int>(m.payload);
      co_await ctx.sleep(0.0001 * (v % 7));  // interleave traces
      co_return std::move(m).with_payload(v * 2);
    });
    Node tag("tag", [](Message m, Context&) -> Task<Message> { co_return m; });
    Flow flow({work.to(tag), tag.to()});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    constexpr int kTraces = 150;
    int ok = 0, done = 0;
    for (int i = 0; i < kTraces; ++i) {
      asio::co_spawn(ex, [&, i]() -> Task<void> {
        std::string trace = "trace-" + std::to_string(i);
        Message m{i, Headers{.tenant = "t"}};
        co_await flow.emit(std::move(m), trace);
        auto r = co_await flow.fetch(trace);
        auto& out = std::any_cast<Message&>(r);
        if (out.trace_id == trace && std::any_cast<int>(out.payload) == 2 * i && out.headers.tenant == "t") ++ok;
        ++done;
      }, asio::detached);
    }
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return done == kTraces; }));
    EXPECT_EQ(ok, kTraces);
    EXPECT_EQ(flow.active_traces(), 0u);
    co_await flow.stop();
  }());
}

TEST(C8_TraceScoped, RoundTripsOnOneTraceAreSerialized) {
  run_async([]() -> Task<void> {
    Node echo("echo", [](int x, Context& ctx) -> Task<int> {
      co_await ctx.sleep(0.001 * (5 - x));  // later calls would finish first if interleaved
      co_return x;
    });
    Flow flow({echo.to()});
    auto ex = co_await asio::this_coro::executor;
    flow.run(ex);
    std::vector<std::pair<int, int>> got;  // (sent, received)
    for (int i = 0; i < 5; ++i)
      asio::co_spawn(ex, [&, i]() -> Task<void> {
        auto r = co_await flow.call(i, "same");
        got.emplace_back(i, std::any_cast<int>(r));
      }, asio::detached);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return got.size() == 5; }));
    for (auto& [sent, received] : got) EXPECT_EQ(sent, received);
    co_await flow.stop();
  }());
}

TEST(C8_TraceScoped, SourceFilteringRefusedOnceTraceScoped) {
  run_async([]() -> Task<void> {
    auto a = identity("a");
    Flow flow({a.to()});
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1);
    EXPECT_EQ(std::any_cast<int>(co_await flow.fetch_from(a)), 1);
    co_await flow.emit(2, "t");
    (void)co_await flow.fetch("t");
    EXPECT_THROW(co_await flow.fetch_from(a), FlowUsageError);
    co_await flow.stop();
  }());
}

TEST(C15_Pictures, MermaidAndDotNameEveryNodeAndEdge) {
  auto a = identity("triage"), b = identity("retrieve"), c = identity("pack");
  Flow flow({a.to(b), b.to(c), c.to()});
  auto m = flow.to_mermaid();
  EXPECT_EQ(m.rfind("graph TD", 0), 0u);
  for (auto* n : {"triage", "retrieve", "pack", "OpenSea", "Rookery"}) EXPECT_NE(m.find(n), std::string::npos) << n;
  auto d = flow.to_dot();
  EXPECT_NE(d.find("\"triage\" -> \"retrieve\""), std::string::npos) << d;
  EXPECT_NE(d.find("\"pack\" -> Rookery"), std::string::npos) << d;
  EXPECT_NE(d.find("OpenSea -> \"triage\""), std::string::npos) << d;
}
