// Internals of Flow (not installed). Everything here runs on the flow's one thread.
#pragma once

#include "wait_queue.hpp"

#include <penguiflow/core/flow.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <iterator>
#include <new>
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

/// The FIFO behind every inbox and the sink: a ring buffer whose first kInline items live
/// inside the queue itself, so a flow that moves a message or two per node (a flow per job)
/// allocates nothing for its queues; std::deque allocated ~600 bytes per queue up front.
/// Grows by doubling on the heap; never shrinks until destroyed.
class ItemRing {
 public:
  static constexpr std::size_t kInline = 2;

  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Item;
    using difference_type = std::ptrdiff_t;
    using pointer = Item*;
    using reference = Item&;
    iterator() = default;
    iterator(ItemRing* r, std::size_t i) : r_(r), i_(i) {}
    Item& operator*() const { return r_->at(i_); }
    Item* operator->() const { return &r_->at(i_); }
    iterator& operator++() { ++i_; return *this; }
    iterator operator++(int) { auto c = *this; ++i_; return c; }
    friend bool operator==(const iterator& a, const iterator& b) { return a.i_ == b.i_; }

   private:
    friend class ItemRing;
    ItemRing* r_ = nullptr;
    std::size_t i_ = 0;
  };

  ItemRing() = default;
  ItemRing(const ItemRing&) = delete;
  ItemRing& operator=(const ItemRing&) = delete;
  ~ItemRing() {
    clear();
    if (buf_ != inline_buf()) ::operator delete(buf_);
  }

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  Item& front() { return at(0); }
  iterator begin() { return {this, 0}; }
  iterator end() { return {this, size_}; }

  void push_back(Item&& item) {
    if (size_ == cap_) grow();
    new (&buf_[(head_ + size_) & (cap_ - 1)]) Item(std::move(item));
    ++size_;
  }
  void pop_front() {
    buf_[head_].~Item();
    head_ = (head_ + 1) & (cap_ - 1);
    --size_;
  }
  void clear() {
    while (size_) pop_front();
    head_ = 0;
  }
  /// Removes the item at `it`, keeping the order of the others; shifts the shorter side
  /// (the front one for a fetch taking the oldest result: O(1) like deque::pop_front).
  void erase(iterator it) {
    std::size_t i = it.i_;
    if (i < size_ / 2) {
      for (; i > 0; --i) at(i) = std::move(at(i - 1));
      pop_front();
      return;
    }
    for (; i + 1 < size_; ++i) at(i) = std::move(at(i + 1));
    at(size_ - 1).~Item();
    --size_;
  }
  /// Removes every item matching `pred`, keeping the order of the others; returns how many.
  template <class Pred>
  std::size_t remove_if(Pred pred) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < size_; ++i) {
      if (pred(at(i))) continue;
      if (kept != i) at(kept) = std::move(at(i));
      ++kept;
    }
    std::size_t removed = size_ - kept;
    for (std::size_t i = kept; i < size_; ++i) at(i).~Item();
    size_ = kept;
    return removed;
  }

 private:
  Item& at(std::size_t i) { return buf_[(head_ + i) & (cap_ - 1)]; }
  Item* inline_buf() { return reinterpret_cast<Item*>(inline_); }
  void grow() {
    std::size_t cap = cap_ * 2;
    Item* fresh = static_cast<Item*>(::operator new(cap * sizeof(Item)));
    for (std::size_t i = 0; i < size_; ++i) {
      new (&fresh[i]) Item(std::move(at(i)));
      at(i).~Item();
    }
    if (buf_ != inline_buf()) ::operator delete(buf_);
    buf_ = fresh;
    cap_ = cap;
    head_ = 0;
  }

  alignas(Item) unsigned char inline_[kInline * sizeof(Item)];
  Item* buf_ = inline_buf();
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::size_t cap_ = kInline;  // a power of two
};

/// A bounded single-threaded queue of items with awaitable waits on both ends.
struct ItemQueue {
  ItemRing items;
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
  // timeout_s (C5): one watchdog timer per node, not a timer per attempt. An attempt only
  // records its deadline; the watchdog, when it fires, cancels the attempt in flight if
  // that one is past its deadline, else re-arms for it (deadlines only grow: one attempt
  // at a time per node, a fixed timeout).
  std::unique_ptr<boost::asio::steady_timer> watchdog;  // created on the first timed attempt
  std::chrono::steady_clock::time_point attempt_deadline;
  bool in_attempt = false;      // a timed attempt is in flight
  bool watchdog_armed = false;  // a wait is pending on `watchdog`
  bool attempt_timed_out = false;
};

/// The sink ("Rookery"): results in arrival order, fetched by trace or in order.
struct Sink {
  ItemRing items;
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
  /// R: Fetched, or std::any (the value alone). Instantiated in flow.cpp.
  template <class R>
  Task<std::optional<R>> fetch_until(std::string trace_id, std::chrono::steady_clock::time_point deadline);
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
  void arm_watchdog(NodeRuntime& n, double timeout_s);
  void on_watchdog(NodeRuntime& n, boost::system::error_code ec);

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
