// Reliability: retries with backoff, per-attempt timeouts, errors delivered as results (C5).
//
// "flaky" fails its first two attempts (failures injected with the testkit) and succeeds
// on the third: NodePolicy{.max_retries = 3} allows four attempts, with exponential
// backoff between them. "slow" takes longer than its timeout_s on every attempt; each
// attempt is cancelled, and once its retries are exhausted a FlowError (code
// NODE_TIMEOUT) is produced. With emit_errors_to_rookery the FlowError is what fetch()
// returns for that trace, so a caller (or the job worker) can settle the request.
#include "example_main.hpp"

#include <penguiflow/penguiflow.hpp>
#include <penguiflow/testkit/testkit.hpp>

#include <boost/asio/this_coro.hpp>

#include <iostream>

namespace asio = boost::asio;
using namespace penguiflow;

Task<int> run() {
  testkit::FailureInjector two_failures(testkit::FailureSpec{.fail_times = 2, .error = "upstream API returned 503"});
  auto flaky = Node("flaky", two_failures.wrap([](int x, Context&) -> Task<int> { co_return x * 2; }),
                    NodePolicy{.max_retries = 3, .backoff_base = 0.01, .backoff_mult = 2.0, .max_backoff = 0.1});
  auto slow = Node("slow", [](int x, Context& ctx) -> Task<int> {
    co_await ctx.sleep(10);  // far beyond the timeout: every attempt is cancelled
    co_return x;
  }, NodePolicy{.timeout_s = 0.05, .max_retries = 1, .backoff_base = 0.01});

  Middleware show = [](const FlowEvent& ev) {
    if (ev.type == EventType::node_error || ev.type == EventType::node_timeout || ev.type == EventType::node_retry)
      std::cout << "  event " << to_string(ev.type) << " node=" << ev.node_name << " attempt=" << ev.attempt << "\n";
  };
  Flow flow({flaky.to(), slow.to()}, FlowOptions{.emit_errors_to_rookery = true, .middlewares = {show}});
  flow.run(co_await asio::this_coro::executor);

  Targets to_flaky{flaky}, to_slow{slow};  // named: no braced temporaries inside co_await
  co_await flow.emit(21, "retry-me", to_flaky);
  co_await flow.emit(1, "too-slow", to_slow);

  int problems = 0;
  std::any ok = co_await flow.fetch("retry-me");
  std::cout << "retry-me -> " << std::any_cast<int>(ok) << " after " << two_failures.calls() << " attempts\n";
  if (std::any_cast<int>(ok) != 42 || two_failures.calls() != 3) ++problems;

  std::any late = co_await flow.fetch("too-slow");
  const auto* err = std::any_cast<FlowError>(&late);
  if (err) std::cout << "too-slow -> FlowError " << to_string(err->code) << " after " << err->attempts
                     << " attempts: " << err->message << "\n";
  if (!err || err->code != FlowErrorCode::node_timeout || err->attempts != 2 || err->node_name != "slow") ++problems;
  co_await flow.stop();
  co_return problems;
}

int main() { return examples::run_example("retry_timeout", run); }
