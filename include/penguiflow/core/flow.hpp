// The flow runtime (C1–C5, C7–C12, C14, C15).
//
// A Flow is a graph of nodes joined by bounded queues, running on one executor (one
// event-loop thread): every method must be called from that executor's thread and
// needs no locks. Suspending methods return awaitables that honour per-operation
// cancellation.
//
//   penguiflow::Flow flow({triage.to(retrieve), retrieve.to(pack), pack.to()});
//   flow.run(co_await boost::asio::this_coro::executor);
//   co_await flow.emit(msg, "trace-1");
//   std::any answer = co_await flow.fetch("trace-1");
//   co_await flow.stop();
#pragma once

#include <penguiflow/core/errors.hpp>
#include <penguiflow/core/events.hpp>
#include <penguiflow/core/message.hpp>
#include <penguiflow/core/node.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <any>
#include <chrono>
#include <optional>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow {

namespace detail {
class FlowImpl;
struct NodeRuntime;
struct TraceState;
}  // namespace detail

/// Flow-wide options. Aggregate with defaults.
struct FlowOptions {
  std::string name = "flow";
  int queue_maxsize = 64;              // per node inbox and for the sink; <= 0: unbounded (C3)
  bool allow_cycles = false;           // C1
  bool emit_errors_to_rookery = false; // C5: a FlowError reaches fetch()
  std::vector<Middleware> middlewares; // C11
};

/// Where a message goes: every successor (empty), or the named ones.
using Targets = std::vector<Node>;

/// What a node invocation sees besides its message: who it is, which trace it serves,
/// and how to emit to chosen successors or stream chunks. Valid only during the
/// invocation, on the flow's thread.
class Context {
 public:
  const std::string& node_name() const;
  const std::string& node_id() const;
  /// Trace of the message being processed ("" when it had none).
  const std::string& trace_id() const;

  /// Sends `msg` to the given successors (all when empty), waiting while a queue is full.
  /// Throws FlowUsageError when a target is not a successor of this node.
  Task<void> emit(std::any msg, Targets to);
  Task<void> emit(std::any msg);
  /// Like emit but fails with QueueFullError instead of waiting.
  void emit_nowait(std::any msg, Targets to = {});
  /// Emits a StreamChunk envelope derived from `parent` (C12): stream_id defaults to the
  /// parent's trace id, seq increases per stream and restarts after done.
  Task<void> emit_chunk(const Message& parent, std::string text, bool done, boost::json::object meta, Targets to,
                        std::string stream_id);
  Task<void> emit_chunk(const Message& parent, std::string text, bool done = false);
  /// Cancellable sleep (seconds) on the flow's executor.
  Task<void> sleep(double seconds);
  /// Runs blocking / CPU-heavy `fn` on the shared offload pool and resumes here; the
  /// flow's thread is never blocked. fn's exception is rethrown.
  Task<void> offload(std::function<void()> fn);
  boost::asio::any_io_executor executor() const;

 private:
  friend class detail::FlowImpl;
  Context(detail::FlowImpl* flow, detail::NodeRuntime* node, detail::TraceState* trace)
      : flow_(flow), node_(node), trace_(trace) {}
  detail::FlowImpl* flow_;
  detail::NodeRuntime* node_;
  detail::TraceState* trace_;
};

/// A fetched result together with its trace and the node it came from.
struct Fetched {
  std::any value;
  std::string trace_id;
  std::string source;  // node name
};

class Flow {
 public:
  /// Builds the graph. Throws CycleError naming the nodes of a forbidden cycle, and
  /// FlowUsageError for duplicate node names or an empty graph.
  explicit Flow(std::vector<Adjacency> adjacency, FlowOptions options = {});
  ~Flow();
  Flow(Flow&&) noexcept;
  Flow& operator=(Flow&&) noexcept;

  /// Starts one worker per node on `ex` (C2). Throws FlowUsageError when already
  /// running, or when a node asks for validation without a typed input / output (C6).
  void run(boost::asio::any_io_executor ex);
  bool running() const;

  /// Sends `msg` into the flow (to the ingress nodes, or `to`), waiting while a queue is
  /// full. `trace_id` stamps the message (and a Message's trace_id); a Message without
  /// one gets a random trace id. Throws FlowUsageError before run() or for an unknown
  /// target, FlowStoppedError when the flow stops meanwhile.
  ///
  /// (Overloads rather than default arguments throughout: g++ 12 frees a class-type
  /// default argument twice when the call sits inside co_await.)
  Task<void> emit(std::any msg, std::string trace_id, Targets to);
  Task<void> emit(std::any msg, std::string trace_id);
  Task<void> emit(std::any msg);
  /// Like emit, failing with QueueFullError instead of waiting.
  void emit_nowait(std::any msg, std::string trace_id = {}, Targets to = {});

  /// Next result from the sink; with `trace_id`, the next result of that trace only
  /// (C8). Concurrent fetches of one trace are served in order. Cancellable.
  Task<std::any> fetch(std::string trace_id);
  Task<std::any> fetch();
  /// Like fetch, with trace and source node.
  Task<Fetched> fetch_item(std::string trace_id);
  Task<Fetched> fetch_item();
  /// fetch bounded in time, without a `fetch || timer` parallel group (one timer that
  /// wakes just this waiter): the next result of `trace_id` (any trace when empty), or
  /// nullopt when `timeout` passes first. A result already waiting is returned even with
  /// a zero timeout. Cancellable like fetch (cancellation throws
  /// system_error(operation_aborted), not nullopt); FlowStoppedError when the flow stops.
  Task<std::optional<std::any>> fetch_for(std::string trace_id, std::chrono::steady_clock::duration timeout);
  /// fetch_for with an absolute deadline: for a reader that fetches several results of
  /// one trace (progress, then the answer) under one overall bound.
  Task<std::optional<std::any>> fetch_until(std::string trace_id, std::chrono::steady_clock::time_point deadline);
  /// fetch_for / fetch_until with trace and source node.
  Task<std::optional<Fetched>> fetch_item_for(std::string trace_id, std::chrono::steady_clock::duration timeout);
  Task<std::optional<Fetched>> fetch_item_until(std::string trace_id, std::chrono::steady_clock::time_point deadline);
  /// Next result produced by node `from` (source filtering). Refused with
  /// FlowUsageError once trace-scoped fetching is in use (C8).
  Task<std::any> fetch_from(const Node& from);
  /// Fails with QueueEmptyError when nothing is ready.
  std::any fetch_nowait(std::string trace_id = {});

  /// emit + fetch of one trace, serialized against other round trips of the same trace.
  Task<std::any> call(std::any msg, std::string trace_id);

  /// Cancels a trace (C10): drops its queued messages and results, cancels its in-flight
  /// invocations (and subflows), leaves other traces alone. True when it was active.
  bool cancel(std::string_view trace_id);

  /// Stops every node worker and waits for them (C2). Waiting emits / fetches fail with
  /// FlowStoppedError. Idempotent; the flow can be run again afterwards.
  Task<void> stop();

  void add_middleware(Middleware m);
  /// Turns FlowOptions::emit_errors_to_rookery on or off (e.g. a job worker needs every
  /// failure to reach fetch()). Call before run().
  void set_emit_errors_to_rookery(bool on);

  /// Trace bookkeeping, for tests and metrics.
  std::size_t active_traces() const;
  std::size_t sink_size() const;

  const FlowOptions& options() const;
  /// Node names in construction order.
  std::vector<std::string> node_names() const;

  /// Pictures (C15).
  std::string to_mermaid() const;
  std::string to_dot() const;

 private:
  friend class Context;
  std::shared_ptr<detail::FlowImpl> impl_;
};

/// Runs `child` for the same trace inside a node and returns its result (C14): emits
/// `msg` with the caller's trace id, fetches that trace's result. Cancelling the trace
/// (or the invocation) cancels the child's trace too. The child must be running on the
/// same executor.
Task<std::any> call_subflow(Context& ctx, Flow& child, std::any msg);

}  // namespace penguiflow
