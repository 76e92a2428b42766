// The example flows the worker registers as jobs (W13), driven with the testkit (C17):
// JSON payloads in, the documented items out.
#include "support/async_test.hpp"

#include <penguiflow/examples/flows.hpp>
#include <penguiflow/penguiflow.hpp>
#include <penguiflow/testkit/testkit.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

using namespace penguiflow;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
namespace json = boost::json;
namespace tk = penguiflow::testkit;
namespace ex = penguiflow::examples;

namespace {
Message job(const char* payload) { return Message{json::parse(payload), Headers{.tenant = "acme"}}; }
}  // namespace

TEST(C17_ExampleFlows, QuickstartTurnsAJsonPayloadIntoAJsonResult) {
  run_async([]() -> Task<void> {
    tk::Recorder rec;
    Flow flow = ex::make_quickstart_flow(FlowOptions{.emit_errors_to_rookery = true, .middlewares = {rec.middleware()}});
    EXPECT_EQ(flow.options().name, "quickstart");
    std::any r = co_await tk::run_one(flow, job(R"({"query": "metrics are slow"})"), 2.0, "job-1");
    const auto& m = std::any_cast<const Message&>(r);
    EXPECT_EQ(m.trace_id, "job-1");
    EXPECT_EQ(m.headers.tenant, "acme");
    auto j = to_json(m.payload);  // what the worker stores as the job's result
    EXPECT_EQ(j.at("topic").as_string(), "metrics");
    EXPECT_EQ(j.at("docs").as_array().size(), 2u);
    EXPECT_TRUE(tk::assert_node_sequence(rec, "job-1", {"triage", "retrieve", "pack"}));

    std::any bad = co_await tk::run_one(flow, job(R"({"query": 3})"), 2.0, "job-2");
    auto* fe = std::any_cast<FlowError>(&bad);
    EXPECT_TRUE(fe && fe->code == FlowErrorCode::validation_error && fe->node_name == "triage" &&
                fe->message.find("field 'query'") != std::string::npos);
  }());
}

TEST(C17_ExampleFlows, RoadmapEndsEachTraceWithItsFinalAnswer) {
  run_async([]() -> Task<void> {
    Flow flow = ex::make_roadmap_flow();
    flow.run(co_await asio::this_coro::executor);
    Message m = job(R"({"query": "an incident in prod"})");
    co_await flow.emit(std::move(m), "job-r");
    int statuses = 0, chunks = 0;
    for (;;) {
      std::any item = co_await flow.fetch("job-r");
      const auto& msg = std::any_cast<const Message&>(item);
      to_json(msg.payload);  // every item converts
      if (payload_if<ex::StatusUpdate>(msg)) ++statuses;
      else if (payload_if<StreamChunk>(msg)) ++chunks;
      else if (auto* a = payload_if<FinalAnswer>(msg)) {
        EXPECT_NE(a->text.find("bugs branch"), std::string::npos) << a->text;
        break;
      } else ADD_FAILURE() << "unexpected item";
    }
    EXPECT_EQ(statuses, 10);
    EXPECT_EQ(chunks, 3);
    EXPECT_EQ(flow.sink_size(), 0u);  // the final answer was the last item
    co_await flow.stop();
  }());
}

TEST(C17_ExampleFlows, FlakyFailsOrSleepsAsItsPayloadAsks) {
  run_async([]() -> Task<void> {
    Flow flow = ex::make_flaky_flow(FlowOptions{.emit_errors_to_rookery = true});
    std::any ok = co_await tk::run_one(flow, job("{}"), 2.0);
    EXPECT_EQ(json::serialize(to_json(std::any_cast<Message&>(ok).payload)), R"({"status":"ok","slept_ms":0})");
    std::any failed = co_await tk::run_one(flow, job(R"({"fail": true})"), 2.0);
    auto* fe = std::any_cast<FlowError>(&failed);
    EXPECT_TRUE(fe && fe->node_name == "flaky" && fe->code == FlowErrorCode::node_exception);
    EXPECT_THROW(co_await tk::run_one(flow, job(R"({"sleep_ms": 5000})"), 0.05), tk::RunTimeoutError);
    std::any slept = co_await tk::run_one(flow, job(R"({"sleep_ms": 5})"), 2.0);
    EXPECT_EQ(payload_if<ex::FlakyResult>(std::any_cast<Message&>(slept))->slept_ms, 5);
  }());
}
