// `test_worker`: a user's own worker binary, built on the library exactly as a user
// would (register flows, hand over to penguiflow::cli::run), with flows made for the
// process tests (worker_process_test):
//
//   effect  {"sleep_ms": N}  effect_once(ctx, "side-effect", fn): fn sleeps N ms
//                            (cancellable) then appends "<job id>\n" to the file named by
//                            PENGUIFLOW_TEST_EFFECT_FILE; returns {"done": true}
//   hang    {}               sleeps until cancelled; on cancellation appends
//                            "cancelled <job id> <attempt>\n" to the same file
//   poison  {}               always throws
//   quickstart, roadmap, flaky: the example flows
#include <penguiflow/cli/cli.hpp>
#include <penguiflow/examples/flows.hpp>
#include <penguiflow/worker/job_context.hpp>

#include <boost/json/value.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

using namespace penguiflow;
namespace json = boost::json;

/// Appends one line with a single write(2) on an O_APPEND descriptor: lines written by
/// concurrent workers never interleave.
void append_line(const std::string& line) {
  const char* path = std::getenv("PENGUIFLOW_TEST_EFFECT_FILE");
  if (!path || !*path) return;
  int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(std::string("cannot open effect file ") + path);
  std::string text = line + "\n";
  ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) throw std::runtime_error("short write to the effect file");
}

std::string job_id_of(Context& ctx) {
  const auto* jc = worker::job_context(ctx);
  return jc ? jc->job->id : ctx.trace_id();
}

int sleep_ms_of(const Message& m) {
  if (const auto* j = std::any_cast<json::value>(&m.payload); j && j->is_object())
    if (const auto* v = j->as_object().if_contains("sleep_ms"); v && v->is_number()) return static_cast<int>(v->to_number<double>());
  return 0;
}

Flow make_effect_flow() {
  Node effect("effect", [](Message m, Context& ctx) -> Task<Message> {
    const int sleep_ms = sleep_ms_of(m);
    const std::string id = job_id_of(ctx);
    std::function<Task<json::value>()> fn = [&ctx, sleep_ms, id]() -> Task<json::value> {
      if (sleep_ms > 0) co_await ctx.sleep(sleep_ms / 1000.0);
      append_line(id);
      json::object rec{{"job", id}, {"pid", static_cast<std::int64_t>(::getpid())}};
      co_return json::value(std::move(rec));
    };
    std::string step = "side-effect";
    json::value recorded = co_await worker::effect_once(ctx, std::move(step), std::move(fn));
    (void)recorded;
    json::object done{{"done", true}};
    co_return std::move(m).with_payload(json::value(std::move(done)));
  });
  return Flow({effect.to()}, FlowOptions{.name = "effect"});
}

Flow make_hang_flow() {
  Node hang("hang", [](Message m, Context& ctx) -> Task<Message> {
    const std::string id = job_id_of(ctx);
    const auto* jc = worker::job_context(ctx);
    const int attempt = jc ? jc->job->attempts : 0;
    bool cancelled = false;
    try {
      for (;;) co_await ctx.sleep(3600);
    } catch (...) {
      cancelled = true;
    }
    if (cancelled) append_line("cancelled " + id + " " + std::to_string(attempt));
    throw std::runtime_error("hang: cancelled");
    co_return m;
  });
  return Flow({hang.to()}, FlowOptions{.name = "hang"});
}

Flow make_poison_flow() {
  Node poison("poison", [](Message m, Context&) -> Task<Message> {
    throw std::runtime_error("poison pill: this job always fails");
    co_return m;
  });
  return Flow({poison.to()}, FlowOptions{.name = "poison"});
}

}  // namespace

int main(int argc, char** argv) {
  worker::FlowRegistry flows;
  flows.add("effect", make_effect_flow, "effect_once side effect; payload {\"sleep_ms\": N}");
  flows.add("hang", make_hang_flow, "sleeps until cancelled");
  flows.add("poison", make_poison_flow, "always throws");
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); }, "the quickstart example");
  flows.add("roadmap", [] { return examples::make_roadmap_flow(); }, "the roadmap example", worker::final_answer);
  flows.add("flaky", [] { return examples::make_flaky_flow(); }, "the flaky example");
  return cli::run(argc, argv, std::move(flows));
}
