// Roadmap status updates: progress for a UI, streamed text, then a final answer.
//
// The "roadmap" flow (examples/flows) triages a query into a "documents" or a "bugs"
// branch. The branch publishes its roadmap (the list of steps), then a "running" and an
// "ok" StatusUpdate per step; the synthesize step streams its answer as StreamChunks and
// ends the trace with a FinalAnswer. Everything reaches the sink for the message's trace,
// in causal order, with the FinalAnswer LAST: a consumer (here; in production, the job
// worker forwarding to a websocket) reads the trace's items until the FinalAnswer.
#include "example_main.hpp"

#include <penguiflow/examples/flows.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

#include <iostream>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow;
using penguiflow::examples::StatusUpdate;

// Prints one trace's items until its final answer; returns the number of problems seen.
Task<int> consume(Flow& flow, std::string trace, std::string expected_branch) {
  int problems = 0, statuses = 0, next_seq = 0;
  std::string streamed;
  for (;;) {
    std::any item = co_await flow.fetch(trace);
    const Message& m = std::any_cast<const Message&>(item);
    if (auto* s = payload_if<StatusUpdate>(m)) {
      ++statuses;
      std::cout << "  [" << trace << "] status " << json::serialize(to_json(*s)) << "\n";
      if (s->roadmap_step_list && s->message.find(expected_branch) == std::string::npos) ++problems;
    } else if (auto* c = payload_if<StreamChunk>(m)) {
      std::cout << "  [" << trace << "] chunk  #" << c->seq << " \"" << c->text << "\"" << (c->done ? " (done)" : "") << "\n";
      if (c->seq != next_seq++) ++problems;  // chunks arrive in order
      streamed += c->text;
    } else if (auto* a = payload_if<FinalAnswer>(m)) {
      std::cout << "  [" << trace << "] final  \"" << a->text << "\"\n";
      // 1 routing + 1 plan + 2 per step (3 steps) + running/ok of synthesize = 10.
      if (statuses != 10 || a->text != streamed || next_seq != 3) ++problems;
      co_return problems;
    } else {
      std::cout << "  [" << trace << "] unexpected item " << json::serialize(to_json(item)) << "\n";
      co_return problems + 1;
    }
  }
}

Task<int> run() {
  Flow flow = examples::make_roadmap_flow();
  flow.run(co_await asio::this_coro::executor);
  // Two traces in flight at once; each consumer sees only its own trace.
  Message docs{json::parse(R"({"query": "summarize the design documents"})"), Headers{.tenant = "acme"}};
  Message bug{json::parse(R"({"query": "the worker crashes on start"})"), Headers{.tenant = "acme"}};
  co_await flow.emit(std::move(docs), "docs-1");
  co_await flow.emit(std::move(bug), "bug-1");
  int problems = co_await consume(flow, "docs-1", "documents");
  problems += co_await consume(flow, "bug-1", "bugs");
  co_await flow.stop();
  co_return problems;
}

int main() { return examples::run_example("roadmap_status_updates", run); }
