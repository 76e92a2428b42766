// Fan-out and join: one question goes to three searchers in parallel, join_k(3) collects
// their answers per trace, and a merge node combines them (C13).
//
// Several traces are in flight at once; join_k groups by trace id, so every merged answer
// holds exactly its own trace's three parts, in the envelope (headers, trace id) of the
// first part. The docs searcher itself uses map_concurrent to look up several sources
// with bounded concurrency, results in input order.
#include "example_main.hpp"

#include <penguiflow/patterns/join.hpp>
#include <penguiflow/patterns/map_concurrent.hpp>
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <iostream>

namespace asio = boost::asio;
using namespace penguiflow;

Node searcher(std::string name) {
  return Node(name, [name](Message m, Context& ctx) -> Task<Message> {
    co_await ctx.sleep(0.001 * (1 + name.size() % 3));  // the three finish in varying order
    co_return std::move(m).with_payload(name + "(" + std::any_cast<std::string>(m.payload) + ")");
  });
}

Task<int> run() {
  auto fan = Node("fan", [](Message m, Context&) -> Task<Message> { co_return m; });
  auto web = searcher("web"), tickets = searcher("tickets");
  auto docs = Node("docs", [](Message m, Context& ctx) -> Task<Message> {
    std::vector<std::string> sources{"handbook", "wiki", "faq", "runbook"};
    auto hits = co_await map_concurrent(sources, [&](const std::string& s) -> Task<std::string> {
      co_await ctx.sleep(0.001);
      co_return s.substr(0, 1);
    }, 2);
    std::string joined;
    for (auto& h : hits) joined += h;
    co_return std::move(m).with_payload("docs[" + joined + "](" + std::any_cast<std::string>(m.payload) + ")");
  });
  auto join = join_k("join", 3);
  auto merge = Node("merge", [](Message m, Context&) -> Task<Message> {
    std::vector<std::string> parts;
    for (auto& p : std::any_cast<std::vector<std::any>&>(m.payload)) parts.push_back(std::any_cast<std::string>(p));
    std::sort(parts.begin(), parts.end());  // arrival order varies; present them sorted
    std::string all;
    for (auto& p : parts) all += (all.empty() ? "" : " + ") + p;
    co_return std::move(m).with_payload(all);
  });
  Flow flow({fan.to(web, docs, tickets), web.to(join), docs.to(join), tickets.to(join), join.to(merge), merge.to()},
            FlowOptions{.middlewares = {join.cleanup()}});  // drops partial batches of cancelled traces
  flow.run(co_await asio::this_coro::executor);

  const std::string questions[] = {"q1", "q2", "q3"};
  for (auto& q : questions) {
    Message m{q, Headers{.tenant = "acme"}};
    co_await flow.emit(std::move(m), "trace-" + q);
  }
  int problems = 0;
  for (auto& q : questions) {
    std::any r = co_await flow.fetch("trace-" + q);
    const auto& m = std::any_cast<const Message&>(r);
    auto text = std::any_cast<std::string>(m.payload);
    std::cout << m.trace_id << " (tenant " << m.headers.tenant << ") -> " << text << "\n";
    if (text != "docs[hwfr](" + q + ") + tickets(" + q + ") + web(" + q + ")" || m.trace_id != "trace-" + q) ++problems;
  }
  if (join.pending_traces() != 0) ++problems;
  co_await flow.stop();
  co_return problems;
}

int main() { return examples::run_example("fanout_join", run); }
