// The stock `penguiflow` binary: the example flows (quickstart, roadmap, flaky) plus a
// demo-only flow, and the full command line. Your own worker binary looks the same with
// your flows registered (docs/operations.md, examples/custom_worker).
#include <penguiflow/cli/cli.hpp>
#include <penguiflow/examples/flows.hpp>
#include <penguiflow/worker/job_context.hpp>

#include <boost/json/value.hpp>

#include <stdexcept>

namespace {

using namespace penguiflow;

/// Fails its first attempt (as a flaky downstream service would), succeeds on a retry.
/// Shows how a node reads its job through worker::job_context.
Flow make_unreliable_flow() {
  Node call("call_service", [](Message m, Context& ctx) -> Task<Message> {
    const auto* jc = worker::job_context(ctx);
    if (jc && jc->job->attempts < 2) throw std::runtime_error("service unavailable (first attempt fails on purpose)");
    co_return m.with_payload(boost::json::value(boost::json::object{{"status", "ok"}}));
  });
  return Flow({call.to()}, FlowOptions{.name = "unreliable"});
}

}  // namespace

int main(int argc, char** argv) {
  worker::FlowRegistry flows;
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); }, "triage -> retrieve -> pack; payload {\"query\": \"...\"}");
  flows.add("roadmap", [] { return examples::make_roadmap_flow(); },
            "status updates, streamed chunks, final answer; payload {\"query\": \"...\"}", worker::final_answer);
  flows.add("flaky", [] { return examples::make_flaky_flow(); }, "payload {\"fail\": true} throws, {\"sleep_ms\": N} sleeps");
  flows.add("unreliable", make_unreliable_flow, "fails its first attempt, succeeds when retried");
  return cli::run(argc, argv, std::move(flows));
}
