// Internals of Flow (not installed). Everything here runs on the flow's one thread.
#pragma once

#include "wait_queue.hpp"

#include <penguiflow/core/flow.hpp>

#include <boost/asio/cancellation_signal.hpp>

#include <chrono>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace penguiflow::detail {

/// Bookkeeping of one trace: how many of its messages are queued and in flight, and
/// whether it was cancelled. Shared by the items of the trace through TraceRef
/// (intrusive, single-threaded), so a hop never looks the trace up by name.
struct TraceState {
  std::string id;
  FlowImpl* flow = nullptr;
  int refs = 0;
  std::size_t pending = 0;   // queued in inboxes and the sink
  std::size_t inflight = 0;  // invocations running
  bool cancelled = false;
};

class TraceRef {
 public:
  TraceRef() = default;
  explicit TraceRef(TraceState* s) : s_(s) { if (s_) ++s_->refs; }
  TraceRef(const TraceRef& o) : TraceRef(o.s_) {}
  TraceRef(TraceRef&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  TraceRef& operator=(TraceRef o) noexcept { std::swap(s_, o.s_); return *this; }
  ~TraceRef() { reset(); }
  void reset();
  TraceState* get() const { return s_; }
  TraceState* operator->() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  TraceState* s_ = nullptr;
};

struct Item {
  std::any value;
  TraceRef trace;
  NodeRuntime* source = nullptr;
};

/// A bounded single-threaded queue of items with awaitable waits on both ends.
struct ItemQueue {
  std::deque<Item> items;
  std::size_t capacity = 0;  // 0: unbounded
  WaitQueue readers;
  WaitQueue writers;
  bool full() const { return capacity != 0 && items.size() >= capacity; }
};

struct NodeRuntime {
  std::shared_ptr<const NodeSpec> spec;
  std::size_t index = 0;  // position in FlowImpl::nodes_
  std::vector<NodeRuntime*> successors;
  std::size_t predecessors = 0;
  ItemQueue inbox;
  boost::asio::cancellation_signal signal;  // stop, and cancel of the current trace
  TraceState* current = nullptr;            // trace of the invocation in flight
  bool busy = false;
  bool has_worker = false;  // started on the first message after run(), ended by stop()
};

/// The sink ("Rookery"): results in arrival order, fetched by trace or in order.
struct Sink {
  std::deque<Item> items;
  std::size_t capacity = 0;
  WaitQueue any_readers;
  std::unordered_map<std::string, WaitQueue> trace_readers;
  WaitQueue writers;
  bool full() const { return capacity != 0 && items.size() >= capacity; }
};

struct AsyncLock {
  bool locked = false;
  WaitQueue waiters;
};

class FlowImpl : public std::enable_shared_from_this<FlowImpl> {
 public:
  FlowImpl(std::vector<Adjacency> adjacency, FlowOptions options);
  ~FlowImpl();

  void run(boost::asio::any_io_executor ex);
  Task<void> stop();

  Task<void> emit(std::any msg, std::string trace_id, Targets to);
  void emit_nowait(std::any msg, std::string trace_id, Targets to);
  Task<Fetched> fetch(std::string trace_id, NodeRuntime* from);
  /// fetch bounded by `deadline` (steady clock): nullopt once it passes with nothing fetched.
  Task<std::optional<Fetched>> fetch_until(std::string trace_id, std::chrono::steady_clock::time_point deadline);
  Fetched fetch_nowait(std::string trace_id);
  Task<std::any> call(std::any msg, std::string trace_id);
  bool cancel(std::string_view trace_id);

  // Used by Context.
  Task<void> node_emit(NodeRuntime& n, TraceState* current, std::any msg, const Targets& to);
  void node_emit_nowait(NodeRuntime& n, TraceState* current, std::any msg, const Targets& to);
  int next_seq(const std::string& stream_id, bool done);

  void release_trace(TraceState* t);
  std::string to_mermaid() const;
  std::string to_dot() const;

  FlowOptions options_;
  // Declared before anything holding TraceRefs: destroyed last.
  std::unordered_map<std::string_view, TraceState*> traces_;
  std::vector<std::unique_ptr<NodeRuntime>> nodes_;
  std::vector<NodeRuntime*> ingress_;
  Sink sink_;
  std::optional<boost::asio::any_io_executor> ex_;
  bool running_ = false;
  bool stopping_ = false;
  bool trace_fetch_used_ = false;
  std::size_t workers_alive_ = 0;
  WaitQueue workers_done_;
  std::unordered_map<std::string, int> stream_seq_;
  std::unordered_map<std::string, AsyncLock> call_locks_;

 private:
  Task<void> worker(NodeRuntime& n);
  void spawn_worker(NodeRuntime& n);
  Task<void> skip_past_deadline(NodeRuntime& n, Item item);
  Task<bool> after_failure(NodeRuntime& n, const Item& item, int attempt, bool last, std::exception_ptr error,
                           bool timed_out, double t0);
  void publish_success(NodeRuntime& n, TraceState* t, int attempt, double t0);
  void log_unexpected(NodeRuntime& n, std::exception_ptr e);
  Task<std::optional<NodeOutput>> attempt_with_timeout(NodeRuntime& n, std::any& input, Context& ctx, double timeout_s);

  TraceRef trace_for(std::string_view id);
  TraceRef stamp(std::any& msg, std::string trace_id);
  std::vector<NodeRuntime*> resolve_targets(const Targets& to, const char* who) const;
  std::vector<NodeRuntime*> successors_for(NodeRuntime& n, const Targets& to) const;
  NodeRuntime* find(const NodeSpec* spec) const;

  bool try_push(NodeRuntime& n, Item& item);
  Task<void> push(NodeRuntime& n, Item item);
  bool try_push_sink(Item& item);
  Task<void> push_sink(Item item);
  std::size_t try_deliver(NodeRuntime* from, std::span<NodeRuntime* const> targets, Item& item);
  Task<void> deliver(NodeRuntime* from, std::span<NodeRuntime* const> targets, Item item);
  Item pop(ItemQueue& q);
  bool take_result(const std::string& trace_id, NodeRuntime* from, Fetched& out);
  void begin_fetch(const std::string& trace_id, NodeRuntime* from);

  bool listening() const { return !options_.middlewares.empty(); }
  FlowEvent make_event(EventType type, const NodeRuntime* n, const TraceState* t, int attempt = 0) const;
  void publish(FlowEvent&& ev);
  void finish_if_cancelled(TraceState* t);
  void check_running(const char* what) const;
};

}  // namespace penguiflow::detail
