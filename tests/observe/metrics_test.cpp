// W10 metrics: the registry, the Prometheus text format read back by a strict parser,
// thread safety, and FlowEvents from real running flows turned into node metrics.
#include "observe/exposition.hpp"
#include "support/async_test.hpp"

#include <penguiflow/observe/metrics.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <cmath>
#include <thread>

using namespace penguiflow;
using namespace penguiflow::observe;
using penguiflow::testing::eventually;
using penguiflow::testing::parse_exposition;
using penguiflow::testing::run_async;
namespace asio = boost::asio;

TEST(W10_Exposition, CountersAndGaugesRoundTripWithEscapedLabelsAndHelp) {
  Registry r;
  const std::string nasty = "say \"hi\"\\back\nslash";
  r.counter("pf_requests_total", "Requests.\nSecond \\ line \"quoted\"", {{"path", nasty}, {"code", "200"}}).inc(3);
  r.counter("pf_requests_total", "ignored: the first help wins", {{"path", "/"}, {"code", "500"}}).inc();
  r.gauge("pf_depth", "Depth.").set(-2.5);
  std::string text = r.render_prometheus();
  auto e = parse_exposition(text);

  EXPECT_EQ(e.type.at("pf_requests_total"), "counter");
  EXPECT_EQ(e.type.at("pf_depth"), "gauge");
  EXPECT_EQ(e.help.at("pf_requests_total"), "Requests.\nSecond \\ line \"quoted\"");
  EXPECT_EQ(e.value("pf_requests_total", {{"path", nasty}, {"code", "200"}}), 3);
  EXPECT_EQ(e.value("pf_requests_total", {{"path", "/"}, {"code", "500"}}), 1);
  EXPECT_EQ(e.value("pf_depth"), -2.5);
  EXPECT_EQ(e.samples.size(), 3u);
  // The raw text keeps one sample per line: the newline in the label is escaped.
  EXPECT_NE(text.find(R"(path="say \"hi\"\\back\nslash")"), std::string::npos) << text;
  // HELP/TYPE once per family (the parser refuses repeats).
  EXPECT_EQ(std::count(text.begin(), text.end(), '#'), 4);
}

TEST(W10_Exposition, HistogramBucketsAreCumulativeAndInfEqualsCount) {
  Registry r;
  auto& h = r.histogram("pf_latency_ms", "Latency.", {{"node", "a"}}, {1, 5, 10});
  for (double v : {0.5, 1.0, 3.0, 7.0, 100.0}) h.observe(v);
  h.observe(NAN);  // ignored
  auto e = parse_exposition(r.render_prometheus());
  EXPECT_EQ(e.type.at("pf_latency_ms"), "histogram");
  auto buckets = e.find("pf_latency_ms_bucket", {{"node", "a"}});
  ASSERT_EQ(buckets.size(), 4u);
  std::vector<std::pair<std::string, double>> got;
  for (auto& b : buckets) got.emplace_back(b.labels.at("le"), b.value);
  std::vector<std::pair<std::string, double>> want{{"1", 2}, {"5", 3}, {"10", 4}, {"+Inf", 5}};  // le is inclusive
  EXPECT_EQ(got, want);
  EXPECT_EQ(e.value("pf_latency_ms_count", {{"node", "a"}}), 5);
  EXPECT_EQ(e.value("pf_latency_ms_sum", {{"node", "a"}}), 111.5);
  EXPECT_EQ(h.count(), 5u);
}

TEST(W10_Exposition, DefaultBucketsAndSpecialValues) {
  Registry r;
  auto& h = r.histogram("pf_h", "H.");
  h.observe(0.05);
  h.observe(1e9);
  r.gauge("pf_g", "G.", {{"v", "inf"}}).set(HUGE_VAL);
  r.gauge("pf_g", "G.", {{"v", "nan"}}).set(NAN);
  r.gauge("pf_g", "G.", {{"v", "big"}}).set(1e21);
  r.gauge("pf_g", "G.", {{"v", "small"}}).set(0.1);
  auto e = parse_exposition(r.render_prometheus());
  auto buckets = e.find("pf_h_bucket");
  ASSERT_EQ(buckets.size(), default_latency_buckets_ms().size() + 1);
  double prev = 0;
  for (auto& b : buckets) {
    EXPECT_GE(b.value, prev);  // cumulative
    prev = b.value;
  }
  EXPECT_EQ(buckets.front().value, 1);
  EXPECT_EQ(buckets.back().labels.at("le"), "+Inf");
  EXPECT_EQ(buckets.back().value, e.value("pf_h_count"));
  EXPECT_EQ(e.value("pf_g", {{"v", "inf"}}), HUGE_VAL);
  EXPECT_TRUE(std::isnan(e.value("pf_g", {{"v", "nan"}})));
  EXPECT_EQ(e.value("pf_g", {{"v", "big"}}), 1e21);
  EXPECT_EQ(e.value("pf_g", {{"v", "small"}}), 0.1);
}

TEST(W10_Registry, SameNameAndLabelsGiveTheSameObjectWhateverTheLabelOrder) {
  Registry r;
  auto& a = r.counter("pf_c", "C.", {{"x", "1"}, {"y", "2"}});
  auto& b = r.counter("pf_c", "C.", {{"y", "2"}, {"x", "1"}});
  auto& c = r.counter("pf_c", "C.", {{"x", "1"}, {"y", "3"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  EXPECT_EQ(&r.histogram("pf_h", "H.", {}, {1, 2}), &r.histogram("pf_h", "H.", {}, {1, 2}));
  EXPECT_EQ(&r.gauge("pf_g", "G."), &r.gauge("pf_g", "G."));
}

TEST(W10_Registry, RefusesBadNamesTypeClashesAndTraceIdLabels) {
  Registry r;
  r.counter("pf_c", "C.");
  EXPECT_THROW(r.gauge("pf_c", "G."), std::invalid_argument);
  EXPECT_THROW(r.counter("9bad", "C."), std::invalid_argument);
  EXPECT_THROW(r.counter("bad-name", "C."), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_d", "C.", {{"bad-label", "x"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_d", "C.", {{"__reserved", "x"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_d", "C.", {{"le", "x"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_d", "C.", {{"a", "1"}, {"a", "2"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_d", "C.", {{"trace_id", "abc"}}), std::invalid_argument);
  r.histogram("pf_h", "H.", {}, {1, 2});
  EXPECT_THROW(r.histogram("pf_h", "H.", {}, {1, 3}), std::invalid_argument);
  EXPECT_THROW(r.histogram("pf_h2", "H.", {}, {2, 1}), std::invalid_argument);
  EXPECT_THROW(r.histogram("pf_h3", "H.", {}, {1, HUGE_VAL}), std::invalid_argument);
  EXPECT_THROW(r.counter("pf_c", "C.").inc(-1), std::invalid_argument);
  // Nothing half-registered: the output still parses.
  EXPECT_NO_THROW(parse_exposition(r.render_prometheus()));
}

TEST(W10_Registry, ScrapeHooksRunBeforeRenderingAndABrokenHookIsSkipped) {
  Registry r;
  int depth = 0;
  r.on_scrape([&] { throw std::runtime_error("broken hook"); });
  r.on_scrape([&] { r.gauge("pf_queue_depth", "Depth.", {{"state", "queued"}}).set(++depth); });
  EXPECT_EQ(parse_exposition(r.render_prometheus()).value("pf_queue_depth", {{"state", "queued"}}), 1);
  EXPECT_EQ(parse_exposition(r.render_prometheus()).value("pf_queue_depth", {{"state", "queued"}}), 2);
}

TEST(W10_ThreadSafety, ConcurrentUpdatesGiveExactTotals) {
  Registry r;
  constexpr int kThreads = 6;
  constexpr int kPerThread = 50'000;
  std::atomic<bool> go{false};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      // Registration races too: every thread resolves the same series itself.
      auto& c = r.counter("pf_c_total", "C.", {{"k", "shared"}});
      auto& mine = r.counter("pf_c_total", "C.", {{"k", "t" + std::to_string(t)}});
      auto& g = r.gauge("pf_g", "G.");
      auto& h = r.histogram("pf_h", "H.", {}, {10, 100});
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        mine.inc(2);
        g.add(i % 2 ? 1 : -1);
        h.observe(i % 200);  // 0..199: 11 values <= 10, 90 in (10, 100], 99 above
      }
      done.fetch_add(1);
    });
  }
  go = true;
  // Render while the threads write: every snapshot must stay self-consistent.
  while (done.load() < kThreads) {
    auto e = parse_exposition(r.render_prometheus());
    auto inf = e.find("pf_h_bucket", {{"le", "+Inf"}});
    if (!inf.empty()) {
      ASSERT_EQ(inf[0].value, e.value("pf_h_count"));
    }
  }
  for (auto& t : threads) t.join();
  auto e = parse_exposition(r.render_prometheus());
  EXPECT_EQ(e.value("pf_c_total", {{"k", "shared"}}), double(kThreads) * kPerThread);
  for (int t = 0; t < kThreads; ++t)
    EXPECT_EQ(e.value("pf_c_total", {{"k", "t" + std::to_string(t)}}), 2.0 * kPerThread);
  EXPECT_EQ(e.value("pf_g"), 0);
  const double n = double(kThreads) * kPerThread;
  EXPECT_EQ(e.value("pf_h_count"), n);
  EXPECT_EQ(e.value("pf_h_bucket", {{"le", "10"}}), n / 200 * 11);
  EXPECT_EQ(e.value("pf_h_bucket", {{"le", "100"}}), n / 200 * 101);
  EXPECT_EQ(e.value("pf_h_sum"), n / 200 * (199.0 * 200 / 2));
}

namespace {

// Counts events so a test can wait until the flow has produced all it should.
struct EventTally {
  std::map<std::string, int> by_type;
  Middleware middleware() {
    return [this](const FlowEvent& e) { ++by_type[std::string(to_string(e.type))]; };
  }
};

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST(W10_FlowMetrics, RealFlowEventsBecomeNodeMetricsWithoutTraceIds) {
  Registry r;
  std::string text;
  run_async([&]() -> Task<void> {
    EventTally tally;
    int flaky_calls = 0;
    Node ok("ok", [](Message m, Context&) -> Task<Message> { co_return m; });
    Node flaky("flaky", [&](Message m, Context&) -> Task<Message> {
      if (++flaky_calls == 1) throw std::runtime_error("first attempt fails");
      co_return m;
    }, NodePolicy{.max_retries = 1, .backoff_base = 0.001});
    Node slow("slow", [](Message m, Context& ctx) -> Task<Message> {
      co_await ctx.sleep(m.trace_id == "trace-slow" ? 3600 : 0);
      co_return m;
    }, NodePolicy{.timeout_s = 0.02});
    int hold_started = 0;
    Node hold("hold", [&](Message m, Context& ctx) -> Task<Message> {
      ++hold_started;
      co_await ctx.sleep(3600);
      co_return m;
    });
    Flow flow({ok.to(flaky), flaky.to(slow), slow.to(), hold.to()},
              FlowOptions{.name = "demo", .middlewares = {metrics_middleware(r, "demo"), tally.middleware()}});
    flow.run(co_await asio::this_coro::executor);
    Targets to_ok{ok};  // `hold` is an ingress too

    for (int i = 0; i < 3; ++i) {
      Message m{i};
      std::string trace = "trace-ok-" + std::to_string(i);
      co_await flow.emit(m, trace, to_ok);
      (void)co_await flow.fetch(trace);
    }
    Message to_time_out{7};
    co_await flow.emit(to_time_out, "trace-slow", to_ok);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return tally.by_type["node_failed"] == 1; }));

    Message late{8};
    late.deadline_s = wall_now() - 1;
    co_await flow.emit(late, "trace-late", to_ok);
    (void)co_await flow.fetch("trace-late");  // the "Deadline exceeded" answer

    // Two messages for one trace into `hold`: one in flight, one queued; cancel drops both.
    Targets to_hold{hold};
    Message h1{9}, h2{10};
    co_await flow.emit(h1, "trace-cancel", to_hold);
    co_await flow.emit(h2, "trace-cancel", to_hold);
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return hold_started == 1; }));
    EXPECT_TRUE(flow.cancel("trace-cancel"));
    EXPECT_TRUE(co_await eventually([&]() -> Task<bool> { co_return tally.by_type["trace_cancel_finish"] == 1; }));
    co_await flow.stop();
  }());

  text = r.render_prometheus();
  auto e = parse_exposition(text);
  auto events = [&](const std::string& node, const std::string& ev) {
    return e.value("penguiflow_node_events_total", {{"flow", "demo"}, {"node", node}, {"event", ev}});
  };
  EXPECT_EQ(e.type.at("penguiflow_node_events_total"), "counter");
  EXPECT_EQ(e.type.at("penguiflow_node_latency_ms"), "histogram");
  EXPECT_EQ(events("ok", "success"), 4);  // 3 + the one that later times out
  EXPECT_EQ(events("ok", "error"), 0);
  EXPECT_EQ(events("flaky", "error"), 1);
  EXPECT_EQ(events("flaky", "retry"), 1);
  EXPECT_EQ(events("flaky", "success"), 4);
  EXPECT_EQ(events("slow", "success"), 3);
  EXPECT_EQ(events("slow", "timeout"), 1);
  EXPECT_EQ(events("slow", "failed"), 1);
  EXPECT_EQ(events("ok", "deadline_skip"), 1);
  EXPECT_EQ(events("hold", "cancelled"), 1);
  EXPECT_EQ(e.value("penguiflow_node_cancel_dropped_total", {{"flow", "demo"}, {"node", "hold"}}), 1);
  EXPECT_EQ(e.value("penguiflow_trace_cancellations_total", {{"flow", "demo"}}), 1);
  // Latency: one observation per finished attempt (success, error, timeout).
  EXPECT_EQ(e.value("penguiflow_node_latency_ms_count", {{"flow", "demo"}, {"node", "ok"}}), 4);
  EXPECT_EQ(e.value("penguiflow_node_latency_ms_count", {{"flow", "demo"}, {"node", "flaky"}}), 5);
  EXPECT_EQ(e.value("penguiflow_node_latency_ms_count", {{"flow", "demo"}, {"node", "slow"}}), 4);
  EXPECT_GE(e.value("penguiflow_node_latency_ms_sum", {{"flow", "demo"}, {"node", "slow"}}), 20.0);  // the timeout
  // W10: no series carries a trace id, neither as a label name nor as a value.
  for (auto& s : e.samples) {
    EXPECT_EQ(s.labels.count("trace_id"), 0u) << s.name;
    for (auto& [k, v] : s.labels) EXPECT_FALSE(v.starts_with("trace-")) << s.name << " " << k << "=" << v;
  }
  EXPECT_FALSE(contains(text, "trace-")) << text;
}

TEST(W10_FlowMetrics, ShardsOnSeveralThreadsShareOneMiddlewareAndSumExactly) {
  Registry r;
  // One middleware object copied into flows on several threads (the worker's shards),
  // plus one made per shard: both must count exactly.
  Middleware shared = metrics_middleware(r, "sharded");
  constexpr int kShards = 4;
  constexpr int kMessages = 2000;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int s = 0; s < kShards; ++s) {
    threads.emplace_back([&, s] {
      try {
        run_async([&]() -> Task<void> {
          Node a("a", [](int x, Context&) -> Task<int> { co_return x + 1; });
          Node b("b", [](int x, Context&) -> Task<int> { co_return x * 2; });
          Middleware mine = s % 2 ? shared : metrics_middleware(r, "sharded");
          Flow flow({a.to(b), b.to()}, FlowOptions{.name = "sharded", .middlewares = {mine}});
          flow.run(co_await asio::this_coro::executor);
          for (int i = 0; i < kMessages; ++i) {
            co_await flow.emit(i);
            (void)co_await flow.fetch();
          }
          co_await flow.stop();
        }(), std::chrono::seconds(60));
      } catch (...) {
        failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  auto e = parse_exposition(r.render_prometheus());
  for (const char* node : {"a", "b"}) {
    EXPECT_EQ(e.value("penguiflow_node_events_total", {{"flow", "sharded"}, {"node", node}, {"event", "success"}}),
              kShards * kMessages);
    EXPECT_EQ(e.value("penguiflow_node_latency_ms_count", {{"flow", "sharded"}, {"node", node}}),
              kShards * kMessages);
  }
}
