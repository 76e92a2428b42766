// C11 events and middlewares, C16 logging.
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/json/parse.hpp>

#include <cstdio>
#include <fstream>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;

TEST(C11_Events, LifecycleEventsInOrderWithDepthsAndTraceCounts) {
  run_async([]() -> Task<void> {
    std::vector<FlowEvent> seen;
    int calls = 0;
    Node flaky("flaky", [&](int x, Context&) -> Task<int> {
      if (++calls == 1) throw std::runtime_error("first fails");
      co_return x;
    }, NodePolicy{.max_retries = 1, .backoff_base = 0.001});
    Node bad("bad", [](int, Context&) -> Task<int> {
      throw std::runtime_error("always");
      co_return 0;
    });
    Flow flow({flaky.to(bad), bad.to()}, FlowOptions{.queue_maxsize = 8});
    flow.add_middleware([&](const FlowEvent& e) { seen.push_back(e); });
    flow.add_middleware([](const FlowEvent&) { throw std::runtime_error("a broken middleware"); });
    flow.run(co_await asio::this_coro::executor);
    co_await flow.emit(1, "T");
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> {
      co_return !seen.empty() && seen.back().type == EventType::node_failed;
    }));
    std::vector<std::string> types;
    for (auto& e : seen) types.emplace_back(to_string(e.type));
    std::vector<std::string> want{"node_start", "node_error", "node_retry", "node_start",
                                  "node_success", "node_start", "node_error", "node_failed"};
    EXPECT_EQ(types, want);
    const FlowEvent& ok = seen[4];
    EXPECT_EQ(ok.node_name, "flaky");
    EXPECT_EQ(ok.trace_id, "T");
    EXPECT_EQ(ok.attempt, 1);
    EXPECT_TRUE(ok.latency_ms.has_value());
    EXPECT_EQ(ok.queue_maxsize, 8);
    EXPECT_EQ(ok.outgoing_edges, 1u);
    EXPECT_EQ(ok.trace_inflight, 1u);
    EXPECT_EQ(seen[7].extra.at("code"), "NODE_EXCEPTION");
    auto j = ok.to_json();
    EXPECT_EQ(j.at("event"), "node_success");
    EXPECT_EQ(j.at("trace_id"), "T");
    bool has_latency = false;
    for (auto& [k, v] : ok.metric_samples()) has_latency |= (k == "latency_ms" && v >= 0);
    EXPECT_TRUE(has_latency);
    co_await flow.stop();
  }());
}

TEST(C16_Logging, JsonLinesWithLevel) {
  std::string path = ::testing::TempDir() + "pf_log_test.jsonl";
  std::remove(path.c_str());
  configure_logging({.format = LogFormat::json, .level = LogLevel::info, .file = path});
  log_record(LogLevel::debug, "hidden", {{"k", 1}});
  log_record(LogLevel::info, "shown", {{"job_id", "42"}});
  auto mw = log_flow_events("info");
  FlowEvent ev{EventType::node_start};
  ev.node_name = "n";
  mw(ev);
  configure_logging({.format = LogFormat::text, .level = LogLevel::warn});  // flushes & closes the file
  std::ifstream in(path);
  std::string line;
  std::vector<boost::json::object> lines;
  while (std::getline(in, line)) lines.push_back(boost::json::parse(line).as_object());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("event"), "shown");
  EXPECT_EQ(lines[0].at("level"), "info");
  EXPECT_EQ(lines[0].at("job_id"), "42");
  EXPECT_EQ(lines[1].at("event"), "node_start");
  EXPECT_EQ(lines[1].at("node_name"), "n");
  EXPECT_THROW(parse_log_level("loud"), std::invalid_argument);
}
