// The example flows shipped with PenguiFlow (W13): "quickstart", "roadmap" and "flaky".
//
// The examples under examples/ run them in-process; the job worker registers the same
// factories as job flows. Every factory returns a fresh, not yet running Flow, and every
// flow follows the same job convention:
//
//  - input: a Message whose payload is JSON (the job's payload) or the typed request
//    struct below; JSON is decoded with penguiflow::decode<T>, so a bad payload fails the
//    first node with a ValidationError naming the field ("field 'query': field required");
//  - output, for the message's trace: zero or more progress items, then exactly one final
//    item. Every item is a Message whose payload converts with penguiflow::to_json.
//
//    quickstart  one item: Message{PackedAnswer}.
//    roadmap     Message{StatusUpdate}... and Message{StreamChunk}... in causal order,
//                then Message{FinalAnswer} LAST. A reader fetches the trace's items until
//                one carries a FinalAnswer (C9's "Deadline exceeded" answer is one too).
//    flaky       one item: Message{FlakyResult}. {"fail": true} makes its node throw;
//                {"sleep_ms": N} makes it sleep N ms first (cancellable), for deadline and
//                timeout demos.
//
// A failed node produces a FlowError (C5); pass FlowOptions{.emit_errors_to_rookery =
// true} to have it reach fetch() as the trace's final item instead. So a reader of a
// trace reads until an item carrying a FinalAnswer, the flow's typed result (quickstart,
// flaky) or a FlowError, under its own time bound (without emit_errors_to_rookery a
// failure produces nothing). A FlowError goes to the sink directly, so progress items
// still in flight may follow it: cancel the trace once its final item is read, which
// drops any leftovers (C10).
//
// Thread-safety: a factory may be called from any thread; the flow it returns is then
// owned by, and must be run on, one executor (see Flow).
#pragma once

#include <penguiflow/core/flow.hpp>

#include <boost/describe/class.hpp>

#include <optional>
#include <string>
#include <vector>

namespace penguiflow::examples {

// ------------------------------------------------------------------ quickstart
// triage (classify the query's topic) -> retrieve (look up documents) -> pack (build the
// prompt an LLM would get).

/// Job payload of "quickstart": {"query": "..."}.
struct QuickstartRequest {
  std::string query;
  std::optional<std::string> validate() const {
    if (query.empty()) return "query must not be empty";
    return std::nullopt;
  }
};
BOOST_DESCRIBE_STRUCT(QuickstartRequest, (), (query))

struct Triage {
  std::string query;
  std::string topic;  // "metrics", "billing" or "general"
};
BOOST_DESCRIBE_STRUCT(Triage, (), (query, topic))

struct Retrieval {
  std::string query;
  std::string topic;
  std::vector<std::string> docs;
};
BOOST_DESCRIBE_STRUCT(Retrieval, (), (query, topic, docs))

/// The quickstart's result.
struct PackedAnswer {
  std::string query;
  std::string topic;
  std::vector<std::string> docs;
  std::string prompt;
};
BOOST_DESCRIBE_STRUCT(PackedAnswer, (), (query, topic, docs, prompt))

/// triage -> retrieve -> pack. `options.name` defaults to "quickstart".
Flow make_quickstart_flow(FlowOptions options = {});

// ------------------------------------------------------------------ roadmap
// triage routes the query to the "documents" or the "bugs" branch; the branch publishes
// its roadmap (a list of steps) and per-step status updates, then synthesize streams the
// answer in chunks and ends the trace with a FinalAnswer. Every progress item reaches the
// sink through one "publish" node, so the sink sees them in causal order.

/// Job payload of "roadmap": {"query": "..."}. A query mentioning "bug", "error",
/// "crash" or "incident" takes the bugs branch, any other the documents branch.
struct RoadmapRequest {
  std::string query;
  std::optional<std::string> validate() const {
    if (query.empty()) return "query must not be empty";
    return std::nullopt;
  }
};
BOOST_DESCRIBE_STRUCT(RoadmapRequest, (), (query))

struct RoadmapStep {
  int id = 0;
  std::string name;
  std::string description;
};
BOOST_DESCRIBE_STRUCT(RoadmapStep, (), (id, name, description))

/// A UI status update, as upstream's roadmap example publishes them.
struct StatusUpdate {
  std::string status;   // "thinking" | "ok" | "error"
  std::string message;  // "Determining message path", "Done!", ...
  std::optional<int> roadmap_step_id;
  std::optional<std::vector<RoadmapStep>> roadmap_step_list;
  std::optional<std::string> roadmap_step_status;  // "running" | "ok"
};
BOOST_DESCRIBE_STRUCT(StatusUpdate, (), (status, message, roadmap_step_id, roadmap_step_list, roadmap_step_status))

/// What a branch hands to synthesize.
struct FlowResponse {
  std::string query;
  std::string branch;  // "documents" | "bugs"
  std::string raw_output;
  std::vector<std::string> artifacts;
};
BOOST_DESCRIBE_STRUCT(FlowResponse, (), (query, branch, raw_output, artifacts))

/// The id of synthesize's roadmap step (upstream uses 99 too).
inline constexpr int kFinalStepId = 99;

/// triage -> documents | bugs -> synthesize; every node -> publish -> sink.
/// `options.name` defaults to "roadmap".
Flow make_roadmap_flow(FlowOptions options = {});

// ------------------------------------------------------------------ flaky

/// Job payload of "flaky": {} | {"fail": true} | {"sleep_ms": N}.
struct FlakyRequest {
  std::optional<bool> fail;
  std::optional<int> sleep_ms;
};
BOOST_DESCRIBE_STRUCT(FlakyRequest, (), (fail, sleep_ms))

struct FlakyResult {
  std::string status;  // "ok"
  int slept_ms = 0;
};
BOOST_DESCRIBE_STRUCT(FlakyResult, (), (status, slept_ms))

/// One node, "flaky". `options.name` defaults to "flaky".
Flow make_flaky_flow(FlowOptions options = {});

}  // namespace penguiflow::examples
