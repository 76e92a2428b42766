// Trace cancellation: stop one request while the others finish (C10).
//
// Three requests run through a "research" node that takes a while (it sleeps in small
// steps, as a node awaiting an LLM or an API would). While the second request is being
// worked on, we cancel its trace: its in-flight invocation is cancelled at its next
// suspension point, nothing is produced for it, and the other two traces are untouched.
// A middleware prints the cancellation events as they happen.
#include "example_main.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>
#include <set>

namespace asio = boost::asio;
using namespace penguiflow;

Task<int> run() {
  std::set<std::string> started;  // traces the node began working on
  auto research = Node("research", [&started](Message m, Context& ctx) -> Task<Message> {
    started.insert(m.trace_id);
    for (int step = 0; step < 5; ++step) co_await ctx.sleep(0.01);  // cancellable waits
    co_return std::move(m).with_payload("report on " + std::any_cast<std::string>(m.payload));
  });
  Middleware show = [](const FlowEvent& ev) {
    auto type = to_string(ev.type);
    if (type.find("cancel") != std::string_view::npos) std::cout << "  event " << type << " trace=" << ev.trace_id << "\n";
  };
  Flow flow({research.to()}, FlowOptions{.middlewares = {show}});
  flow.run(co_await asio::this_coro::executor);

  for (std::string topic : {"penguins", "glaciers", "krill"}) {
    Message m{topic, Headers{.tenant = "acme"}};
    co_await flow.emit(std::move(m), "trace-" + topic);
  }
  // Wait (bounded) until "glaciers" is in flight, then cancel it.
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (int i = 0; i < 2000 && !started.contains("trace-glaciers"); ++i) {
    tick.expires_after(std::chrono::milliseconds(1));
    co_await tick.async_wait(asio::use_awaitable);
  }
  int problems = 0;
  if (!flow.cancel("trace-glaciers")) ++problems;       // true: the trace was active
  if (flow.cancel("trace-unknown")) ++problems;         // false: never seen
  for (std::string topic : {"penguins", "krill"}) {
    std::any r = co_await flow.fetch("trace-" + topic);
    auto text = std::any_cast<std::string>(std::any_cast<Message&>(r).payload);
    std::cout << "trace-" << topic << " -> " << text << "\n";
    if (text != "report on " + topic) ++problems;
  }
  // The cancelled trace left nothing behind: no result, no bookkeeping.
  std::cout << "sink items left: " << flow.sink_size() << ", active traces: " << flow.active_traces() << "\n";
  if (flow.sink_size() != 0 || flow.active_traces() != 0) ++problems;
  co_await flow.stop();
  co_return problems;
}

int main() { return examples::run_example("trace_cancel", run); }
