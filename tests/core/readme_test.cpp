// The README's 20-line flow, compiled and run (doc samples are snippets of tests).
#include "support/async_test.hpp"

#include <penguiflow/penguiflow.hpp>

#include <boost/asio.hpp>
#include <boost/describe/class.hpp>

using namespace penguiflow;

namespace readme {
struct Query { std::string text; };
BOOST_DESCRIBE_STRUCT(Query, (), (text))          // JSON in, field-level errors

std::string printed;

Task<void> demo() {
  Node triage("triage", [](Query q, Context&) -> Task<std::string> { co_return "topic:" + q.text; },
              NodePolicy{.timeout_s = 2, .max_retries = 2});
  Node answer("answer", [](std::string s, Context&) -> Task<std::string> { co_return s + " -> done"; });
  Flow flow({triage.to(answer), answer.to()}, FlowOptions{.queue_maxsize = 64});
  flow.run(co_await boost::asio::this_coro::executor);
  Query q{"metrics"};
  co_await flow.emit(q, "trace-1");                      // trace-scoped round trip
  std::any out = co_await flow.fetch("trace-1");
  printed = std::any_cast<std::string>(out);
  co_await flow.stop();
}
}  // namespace readme

TEST(Readme, TwentyLineFlowRuns) {
  penguiflow::testing::run_async(readme::demo());
  EXPECT_EQ(readme::printed, "topic:metrics -> done");
}
