// Quickstart: a typed three-node flow, triage -> retrieve -> pack.
//
// The flow comes from the example-flows library (examples/flows), the same factory the
// job worker registers as the "quickstart" job flow. Each request travels in a Message
// envelope whose payload is JSON, as a job payload would be; the first node decodes it
// into a Boost.Describe'd struct, so a malformed payload fails with an error that names
// the field. Results are read per trace (C8), and converted back to JSON at the edge.
#include "example_main.hpp"

#include <penguiflow/examples/flows.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

#include <iostream>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow;
using penguiflow::examples::PackedAnswer;

Task<int> run() {
  // A failing node's FlowError reaches fetch() instead of only the logs.
  Flow flow = examples::make_quickstart_flow(FlowOptions{.emit_errors_to_rookery = true});
  flow.run(co_await asio::this_coro::executor);
  int failures = 0;

  const std::pair<const char*, const char*> cases[] = {
      {"q-1", R"({"query": "why did the latency metric spike?"})"},
      {"q-2", R"({"query": "where is my invoice?"})"},
      {"q-3", R"({"query": "hello penguins"})"}};
  for (auto& [trace, payload] : cases) {
    Message msg{json::parse(payload), Headers{.tenant = "acme"}};
    co_await flow.emit(std::move(msg), trace);
  }
  const char* expected_topics[] = {"metrics", "billing", "general"};
  for (int i = 0; i < 3; ++i) {
    std::any result = co_await flow.fetch(cases[i].first);
    const auto& answer = std::any_cast<const PackedAnswer&>(std::any_cast<Message&>(result).payload);
    std::cout << cases[i].first << " -> " << json::serialize(to_json(answer)) << "\n";
    if (answer.topic != expected_topics[i] || answer.docs.size() != 2) ++failures;
  }

  // A payload without "query": the triage node rejects it, naming the field.
  Message bad{json::parse(R"({"qurey": "typo"})"), Headers{.tenant = "acme"}};
  co_await flow.emit(std::move(bad), "q-bad");
  std::any err = co_await flow.fetch("q-bad");
  const auto* fe = std::any_cast<FlowError>(&err);
  std::cout << "q-bad -> " << (fe ? fe->message : "no error!") << "\n";
  if (!fe || fe->node_name != "triage" || fe->message.find("'query'") == std::string::npos) ++failures;

  co_await flow.stop();
  co_return failures;
}

int main() { return examples::run_example("quickstart", run); }
