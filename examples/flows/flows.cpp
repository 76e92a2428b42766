// The example flows (see flows.hpp for the contract every one of them follows).
#include <penguiflow/examples/flows.hpp>

#include <penguiflow/core/errors.hpp>
#include <penguiflow/core/json.hpp>

#include <boost/json/value.hpp>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace penguiflow::examples {

namespace json = boost::json;

namespace {

/// The typed request carried by `m`: the struct itself, or JSON decoded into it with
/// field-level errors; then its validate() hook. Throws ValidationError naming `node`.
template <class T>
T request_of(const Message& m, const std::string& node) {
  T req = [&] {
    if (auto* t = payload_if<T>(m)) return *t;
    if (auto* j = payload_if<json::value>(m)) return decode<T>(*j, node);
    if (auto* o = payload_if<json::object>(m)) return decode<T>(json::value(*o), node);
    throw ValidationError(node, "<payload>",
                          "expected a JSON object or " + type_name<T>() + ", got " +
                              boost::core::demangle(m.payload.type().name()));
  }();
  if constexpr (detail::has_validate_hook<T>) {
    if (auto err = req.validate()) throw ValidationError(node, "<payload>", *err);
  }
  return req;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

bool mentions(const std::string& text, std::initializer_list<const char*> words) {
  auto l = lower(text);
  return std::any_of(words.begin(), words.end(), [&](const char* w) { return l.find(w) != std::string::npos; });
}

FlowOptions named(FlowOptions options, const char* name) {
  if (options.name.empty() || options.name == FlowOptions{}.name) options.name = name;
  return options;
}

}  // namespace

// ------------------------------------------------------------------ quickstart

Flow make_quickstart_flow(FlowOptions options) {
  register_json_type<PackedAnswer>();
  register_json_type<Triage>();
  register_json_type<Retrieval>();
  const NodePolicy policy{.timeout_s = 5.0};

  Node triage("triage", [](Message m, Context& ctx) -> Task<Message> {
    auto req = request_of<QuickstartRequest>(m, ctx.node_name());
    std::string topic = mentions(req.query, {"metric", "latency", "dashboard"}) ? "metrics"
                        : mentions(req.query, {"invoice", "billing", "refund"}) ? "billing"
                                                                                 : "general";
    co_return std::move(m).with_payload(Triage{req.query, topic});
  }, policy);

  Node retrieve("retrieve", [](Message m, Context& ctx) -> Task<Message> {
    auto t = request_of<Triage>(m, ctx.node_name());
    std::vector<std::string> docs;
    for (int i = 1; i <= 2; ++i) docs.push_back(t.topic + "-doc-" + std::to_string(i));
    co_return std::move(m).with_payload(Retrieval{t.query, t.topic, std::move(docs)});
  }, policy);

  Node pack("pack", [](Message m, Context& ctx) -> Task<Message> {
    auto r = request_of<Retrieval>(m, ctx.node_name());
    std::string prompt = "[" + r.topic + "] answer \"" + r.query + "\" using " + std::to_string(r.docs.size()) + " docs:";
    for (auto& d : r.docs) prompt += " " + d;
    co_return std::move(m).with_payload(PackedAnswer{r.query, r.topic, r.docs, std::move(prompt)});
  }, policy);

  return Flow({triage.to(retrieve), retrieve.to(pack), pack.to()}, named(std::move(options), "quickstart"));
}

// ------------------------------------------------------------------ roadmap

namespace {

/// Sends a status update for `parent`'s trace to `publish` (and so to the sink).
Task<void> send_status(Context& ctx, const Message& parent, const Node& publish, StatusUpdate update) {
  Targets to{publish};
  Message m = parent.with_payload(std::move(update));
  co_await ctx.emit(std::move(m), std::move(to));
}

StatusUpdate step_status(const RoadmapStep& step, bool done) {
  StatusUpdate u;
  u.status = done ? "ok" : "thinking";
  u.message = done ? "Done!" : step.description;
  u.roadmap_step_id = step.id;
  u.roadmap_step_status = done ? "ok" : "running";
  return u;
}

/// A branch: publishes its roadmap, runs its steps with running/ok updates, hands a
/// FlowResponse to synthesize.
Node branch_node(std::string name, std::vector<RoadmapStep> steps, Node publish, Node synthesize) {
  return Node(std::move(name), [steps, publish, synthesize](Message m, Context& ctx) -> Task<void> {
    auto req = request_of<RoadmapRequest>(m, ctx.node_name());
    StatusUpdate plan{"thinking", "Planning the " + ctx.node_name() + " roadmap", std::nullopt, steps, std::nullopt};
    co_await send_status(ctx, m, publish, std::move(plan));
    FlowResponse resp{req.query, ctx.node_name(), {}, {}};
    for (const auto& step : steps) {
      auto running = step_status(step, false);
      co_await send_status(ctx, m, publish, std::move(running));
      resp.artifacts.push_back(step.name + ": " + req.query);  // the step's "work"
      auto ok = step_status(step, true);
      co_await send_status(ctx, m, publish, std::move(ok));
    }
    resp.raw_output = "Ran " + std::to_string(steps.size()) + " " + ctx.node_name() + " steps";
    Targets to{synthesize};
    Message next = m.with_payload(std::move(resp));
    co_await ctx.emit(std::move(next), std::move(to));
  }, NodePolicy{.timeout_s = 10.0});
}

}  // namespace

Flow make_roadmap_flow(FlowOptions options) {
  register_json_type<StatusUpdate>();
  register_json_type<FlowResponse>();
  register_json_type<RoadmapRequest>();

  // Every progress item and the final answer pass through this one node, so the sink
  // receives them in the order they were produced.
  Node publish("publish", [](Message m, Context&) -> Task<Message> { co_return m; });

  Node synthesize("synthesize", [](Message m, Context& ctx) -> Task<Message> {
    auto resp = request_of<FlowResponse>(m, ctx.node_name());
    const RoadmapStep final_step{kFinalStepId, "synthesize", "Synthesizing the final answer"};
    auto running = step_status(final_step, false);
    Targets none;  // every successor: publish
    Message status = m.with_payload(std::move(running));
    co_await ctx.emit(std::move(status), none);
    std::vector<std::string> pieces{"Answer to \"" + resp.query + "\" ", "from the " + resp.branch + " branch: ",
                                    resp.raw_output + "."};
    std::string text;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      text += pieces[i];
      bool done = i + 1 == pieces.size();
      co_await ctx.emit_chunk(m, pieces[i], done);
    }
    auto ok = step_status(final_step, true);
    Message done_status = m.with_payload(std::move(ok));
    co_await ctx.emit(std::move(done_status), none);
    co_return std::move(m).with_payload(FinalAnswer{std::move(text)});
  }, NodePolicy{.timeout_s = 10.0});

  Node documents = branch_node("documents",
                               {{1, "parse_documents", "Parsing the repository documents"},
                                {2, "extract_metadata", "Extracting metadata"},
                                {3, "generate_report", "Assembling the report"}},
                               publish, synthesize);
  Node bugs = branch_node("bugs",
                          {{1, "collect_logs", "Collecting logs"},
                           {2, "run_diagnostics", "Running diagnostics"},
                           {3, "recommend_fix", "Recommending a fix"}},
                          publish, synthesize);

  Node triage("triage", [publish, documents, bugs](Message m, Context& ctx) -> Task<void> {
    auto req = request_of<RoadmapRequest>(m, ctx.node_name());
    StatusUpdate routing{"thinking", "Determining message path", std::nullopt, std::nullopt, std::nullopt};
    co_await send_status(ctx, m, publish, std::move(routing));
    Targets branch{mentions(req.query, {"bug", "error", "crash", "incident"}) ? bugs : documents};
    Message next = std::move(m).with_payload(std::move(req));
    co_await ctx.emit(std::move(next), std::move(branch));
  }, NodePolicy{.timeout_s = 5.0});

  return Flow({triage.to(documents, bugs, publish), documents.to(synthesize, publish), bugs.to(synthesize, publish),
               synthesize.to(publish), publish.to()},
              named(std::move(options), "roadmap"));
}

// ------------------------------------------------------------------ flaky

Flow make_flaky_flow(FlowOptions options) {
  register_json_type<FlakyResult>();
  Node flaky("flaky", [](Message m, Context& ctx) -> Task<Message> {
    auto req = request_of<FlakyRequest>(m, ctx.node_name());
    int slept = std::max(0, req.sleep_ms.value_or(0));
    if (slept > 0) co_await ctx.sleep(slept / 1000.0);
    if (req.fail.value_or(false)) throw std::runtime_error("flaky: failing as the payload asked (\"fail\": true)");
    co_return std::move(m).with_payload(FlakyResult{"ok", slept});
  });
  return Flow({flaky.to()}, named(std::move(options), "flaky"));
}

}  // namespace penguiflow::examples
