#include "flow_impl.hpp"

#include <penguiflow/core/logging.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <unordered_set>

namespace penguiflow::detail {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

double mono_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string describe_exception(std::exception_ptr e, std::string* type = nullptr) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    if (type) *type = boost::core::demangle(typeid(ex).name());
    return ex.what();
  } catch (...) {
    if (type) *type = "unknown";
    return "unknown exception";
  }
}

bool is_validation(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const ValidationError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

void TraceRef::reset() {
  if (s_ && --s_->refs == 0) s_->flow->release_trace(s_);
  s_ = nullptr;
}

// ---------------------------------------------------------------- construction

FlowImpl::FlowImpl(std::vector<Adjacency> adjacency, FlowOptions options) : options_(std::move(options)) {
  if (adjacency.empty()) throw FlowUsageError("a flow needs at least one node");
  // Linear scans instead of hash maps: flows have tens of nodes, and the stateless worker
  // pattern builds one flow per job, so construction is on the hot path (O(nodes x edges)
  // is ~1 ms even for a thousand nodes).
  auto add = [&](const std::shared_ptr<const NodeSpec>& spec) -> NodeRuntime* {
    if (!spec) throw FlowUsageError("flow '" + options_.name + "': null node in adjacency");
    if (NodeRuntime* known = find(spec.get())) return known;
    for (auto& n : nodes_)
      if (n->spec->name == spec->name)
        throw FlowUsageError("flow '" + options_.name + "': two different nodes are named '" + spec->name + "'");
    auto rt = std::make_unique<NodeRuntime>();
    rt->spec = spec;
    rt->index = nodes_.size();
    auto* p = rt.get();
    nodes_.push_back(std::move(rt));
    return p;
  };
  nodes_.reserve(adjacency.size());
  for (auto& adj : adjacency) {
    NodeRuntime* from = add(adj.from);
    for (auto& to : adj.to) {
      NodeRuntime* t = add(to);
      if (std::find(from->successors.begin(), from->successors.end(), t) != from->successors.end())
        throw FlowUsageError("flow '" + options_.name + "': edge " + from->spec->name + " -> " + t->spec->name +
                             " is listed twice");
      from->successors.push_back(t);
      if (t != from) ++t->predecessors;
    }
  }
  // C1: reject cycles unless allowed (a node may allow its own self-loop).
  if (!options_.allow_cycles) {
    enum Mark : unsigned char { white, grey, black };
    boost::container::small_vector<Mark, 32> mark(nodes_.size(), white);
    boost::container::small_vector<NodeRuntime*, 32> path;
    auto dfs = [&](auto& self, NodeRuntime* n) -> void {
      mark[n->index] = grey;
      path.push_back(n);
      for (NodeRuntime* s : n->successors) {
        if (s == n) {
          if (!n->spec->options.allow_cycle)
            throw CycleError("flow '" + options_.name + "': cycle " + n->spec->name + " -> " + n->spec->name +
                             " (set NodeOptions::allow_cycle for a self-loop)");
          continue;
        }
        if (mark[s->index] == grey) {
          std::string names;
          auto it = std::find(path.begin(), path.end(), s);
          for (; it != path.end(); ++it) names += (*it)->spec->name + " -> ";
          throw CycleError("flow '" + options_.name + "': cycle " + names + s->spec->name +
                           " (set FlowOptions::allow_cycles to permit it)");
        }
        if (mark[s->index] == white) self(self, s);
      }
      path.pop_back();
      mark[n->index] = black;
    };
    for (auto& n : nodes_)
      if (mark[n->index] == white) dfs(dfs, n.get());
  }
  std::size_t cap = options_.queue_maxsize > 0 ? static_cast<std::size_t>(options_.queue_maxsize) : 0;
  for (auto& n : nodes_) {
    n->inbox.capacity = cap;
    if (n->predecessors == 0) ingress_.push_back(n.get());
  }
  sink_.capacity = cap;
  if (ingress_.empty()) throw FlowUsageError("flow '" + options_.name + "': no ingress node (every node has a predecessor)");
}

FlowImpl::~FlowImpl() {
  // Items hold TraceRefs into traces_; clear them while the map is alive.
  for (auto& n : nodes_) n->inbox.items.clear();
  sink_.items.clear();
}

NodeRuntime* FlowImpl::find(const NodeSpec* spec) const {
  for (auto& n : nodes_)
    if (n->spec.get() == spec) return n.get();
  return nullptr;
}

void FlowImpl::check_running(const char* what) const {
  if (!running_) throw FlowUsageError(std::string(what) + " on flow '" + options_.name + "' before run()");
}

// ---------------------------------------------------------------- lifecycle

void FlowImpl::run(asio::any_io_executor ex) {
  if (running_) throw FlowUsageError("flow '" + options_.name + "' is already running (call stop() first)");
  for (auto& n : nodes_) {
    const auto& s = *n->spec;
    if (s.options.policy.validate && *s.options.policy.validate != Validate::none) {
      Validate v = *s.options.policy.validate;
      bool in = v == Validate::in || v == Validate::both;
      bool out = v == Validate::out || v == Validate::both;
      if ((in && s.input_type.empty()) || (out && s.output_type.empty()))
        throw FlowUsageError("node '" + s.name + "' asks for validation but has no typed " +
                             std::string(in && s.input_type.empty() ? "input" : "output") +
                             " (declare the type in its signature or use Validate::none)");
    }
  }
  ex_ = ex;
  running_ = true;
  stopping_ = false;
  // Workers start lazily, on their node's first message (spawn_worker from try_push): a
  // worker started before its first message would park on its empty inbox and be woken
  // for it, two more suspensions per node, and a node that never gets a message (a flow
  // per job whose path skips it) costs nothing.
  for (auto& n : nodes_)
    if (!n->inbox.items.empty()) spawn_worker(*n);
}

void FlowImpl::spawn_worker(NodeRuntime& n) {
  n.has_worker = true;
  ++workers_alive_;
  asio::co_spawn(*ex_, worker(n),
                 asio::bind_cancellation_slot(n.signal.slot(), [self = shared_from_this(), &n](std::exception_ptr e) {
                   if (e) log_record(LogLevel::error, "node_worker_crashed", {{"error", describe_exception(e)}});
                   n.has_worker = false;
                   if (--self->workers_alive_ == 0) self->workers_done_.notify_all();
                 }));
}

Task<void> FlowImpl::stop() {
  if (!running_) co_return;
  auto self = shared_from_this();
  stopping_ = true;
  // Only a worker inside an invocation (or its delivery / backoff) needs cancelling; an
  // idle one waits on its inbox (or on the sink, skipping a message past its deadline)
  // and the wake-ups below end it: it sees stopping_ and returns. (Cancelling idle
  // workers too cost a posted cancellation handler each: ~5% of a flow per job.)
  for (auto& n : nodes_) {
    if (n->busy) n->signal.emit(asio::cancellation_type::terminal);
    if (n->watchdog) {  // its handler holds the flow: let it go now
      n->watchdog->cancel();
      n->watchdog_armed = false;
    }
  }
  // Wake idle workers and external emitters / fetchers: they see stopping_ (the latter
  // throw FlowStoppedError).
  for (auto& n : nodes_) {
    n->inbox.writers.notify_all();
    n->inbox.readers.notify_all();
  }
  sink_.writers.notify_all();
  sink_.any_readers.notify_all();
  for (auto& [_, wq] : sink_.trace_readers) wq.notify_all();
  while (workers_alive_ > 0) co_await workers_done_.wait();
  for (auto& n : nodes_) {
    n->inbox.items.clear();
    n->busy = false;
    n->current = nullptr;
  }
  sink_.items.clear();
  stream_seq_.clear();
  running_ = false;
  stopping_ = false;
}

// ---------------------------------------------------------------- traces

TraceRef FlowImpl::trace_for(std::string_view id) {
  if (id.empty()) return {};
  if (auto it = traces_.find(id); it != traces_.end()) return TraceRef(it->second);
  auto* t = new TraceState{std::string(id), this};
  traces_.emplace(t->id, t);
  return TraceRef(t);
}

void FlowImpl::release_trace(TraceState* t) {
  traces_.erase(t->id);
  delete t;
}

TraceRef FlowImpl::stamp(std::any& msg, std::string trace_id) {
  if (auto* m = std::any_cast<Message>(&msg)) {
    if (!trace_id.empty()) m->trace_id = std::move(trace_id);
    else if (m->trace_id.empty()) m->trace_id = random_id();
    if (m->ts == 0) m->ts = wall_now();
    return trace_for(m->trace_id);
  }
  return trace_for(trace_id);
}

bool FlowImpl::cancel(std::string_view trace_id) {
  auto it = traces_.find(trace_id);
  if (it == traces_.end()) return false;
  TraceRef t(it->second);  // keep it alive while we drop its items
  if (t->cancelled) return true;
  t->cancelled = true;
  if (listening()) publish(make_event(EventType::trace_cancel_start, nullptr, t.get()));
  auto drop = [&](ItemRing& q) { return q.remove_if([&](const Item& i) { return i.trace.get() == t.get(); }); };
  for (auto& n : nodes_) {
    auto dropped = drop(n->inbox.items);
    if (dropped) {
      t->pending -= dropped;
      n->inbox.writers.notify_all();
      if (listening()) {
        auto ev = make_event(EventType::trace_cancel_drop, n.get(), t.get());
        ev.extra["dropped"] = dropped;
        publish(std::move(ev));
      }
    }
  }
  if (auto dropped = drop(sink_.items)) {
    t->pending -= dropped;
    sink_.writers.notify_all();
  }
  for (auto& n : nodes_)
    if (n->busy && n->current == t.get()) n->signal.emit(asio::cancellation_type::terminal);
  finish_if_cancelled(t.get());
  return true;
}

void FlowImpl::finish_if_cancelled(TraceState* t) {
  if (t && t->cancelled && t->inflight == 0 && listening())
    publish(make_event(EventType::trace_cancel_finish, nullptr, t));
}

// ---------------------------------------------------------------- queues

Item FlowImpl::pop(ItemQueue& q) {
  Item item = std::move(q.items.front());
  q.items.pop_front();
  if (item.trace) --item.trace->pending;
  q.writers.notify_one();
  return item;
}

bool FlowImpl::try_push(NodeRuntime& n, Item& item) {
  if (n.inbox.full()) return false;
  if (item.trace) ++item.trace->pending;
  n.inbox.items.push_back(std::move(item));
  if (!n.has_worker) {
    if (running_ && !stopping_) spawn_worker(n);  // else stop() clears the inbox
  } else {
    n.inbox.readers.notify_one();
  }
  return true;
}

Task<void> FlowImpl::push(NodeRuntime& n, Item item) {
  while (!try_push(n, item)) {
    if (stopping_ || !running_) throw FlowStoppedError("flow '" + options_.name + "' stopped");
    if (item.trace && item.trace->cancelled) co_return;
    co_await n.inbox.writers.wait();
  }
}

bool FlowImpl::try_push_sink(Item& item) {
  bool awaited = item.trace && sink_.trace_readers.contains(item.trace->id);
  if (sink_.full() && !awaited) return false;
  if (item.trace) ++item.trace->pending;
  WaitQueue* reader = &sink_.any_readers;
  if (awaited) reader = &sink_.trace_readers.find(item.trace->id)->second;
  sink_.items.push_back(std::move(item));
  reader->notify_one();
  return true;
}

Task<void> FlowImpl::push_sink(Item item) {
  while (!try_push_sink(item)) {
    if (stopping_ || !running_) throw FlowStoppedError("flow '" + options_.name + "' stopped");
    if (item.trace && item.trace->cancelled) co_return;
    co_await sink_.writers.wait();
  }
}

// The hot path of every hop: hands `item` to each target in order (a copy for all but the
// last; nullptr = the sink) without suspending and without allocating. Stops at the first
// full queue and returns its index: `item` then still holds the value for that target and
// the ones after it, for deliver(). Returns targets.size() when done, or when the trace was
// cancelled (nothing more is sent for it).
std::size_t FlowImpl::try_deliver(NodeRuntime* from, std::span<NodeRuntime* const> targets, Item& item) {
  item.source = from;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (item.trace && item.trace->cancelled) return targets.size();
    NodeRuntime* t = targets[i];
    bool sent;
    if (i + 1 == targets.size()) {
      sent = t ? try_push(*t, item) : try_push_sink(item);  // moves only when sent
    } else {
      Item copy = item;
      sent = t ? try_push(*t, copy) : try_push_sink(copy);
    }
    if (!sent) return i;
  }
  return targets.size();
}

// Sends one item to each target (copies for all but the last), waiting while a queue is
// full; nullptr target = sink. `targets` must outlive the call (the caller co_awaits it).
Task<void> FlowImpl::deliver(NodeRuntime* from, std::span<NodeRuntime* const> targets, Item item) {
  item.source = from;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Item it = i + 1 == targets.size() ? std::move(item) : item;
    if (it.trace && it.trace->cancelled) co_return;
    if (targets[i] == nullptr) {
      if (!try_push_sink(it)) co_await push_sink(std::move(it));
    } else if (!try_push(*targets[i], it)) {
      co_await push(*targets[i], std::move(it));
    }
  }
}

std::vector<NodeRuntime*> FlowImpl::resolve_targets(const Targets& to, const char* who) const {
  std::vector<NodeRuntime*> out;
  if (to.empty()) return ingress_;
  for (const Node& node : to) {
    NodeRuntime* n = find(&node.spec());
    if (!n) throw FlowUsageError(std::string(who) + ": unknown target node '" + node.name() + "' in flow '" + options_.name + "'");
    out.push_back(n);
  }
  return out;
}

std::vector<NodeRuntime*> FlowImpl::successors_for(NodeRuntime& n, const Targets& to) const {
  if (n.successors.empty()) {
    if (!to.empty())
      throw FlowUsageError("node '" + n.spec->name + "' cannot emit to '" + to.front().name() +
                           "': it has no successors (its output goes to the sink)");
    return {nullptr};
  }
  if (to.empty()) return n.successors;
  std::vector<NodeRuntime*> out;
  for (const Node& node : to) {
    auto it = std::find_if(n.successors.begin(), n.successors.end(),
                           [&](NodeRuntime* s) { return s->spec.get() == &node.spec(); });
    if (it == n.successors.end())
      throw FlowUsageError("node '" + n.spec->name + "' cannot emit to '" + node.name() + "': not one of its successors");
    out.push_back(*it);
  }
  return out;
}

// ---------------------------------------------------------------- emit / fetch

Task<void> FlowImpl::emit(std::any msg, std::string trace_id, Targets to) {
  check_running("emit");
  auto self = shared_from_this();
  std::vector<NodeRuntime*> named;  // only when targets are named: ingress_ needs no copy
  if (!to.empty()) named = resolve_targets(to, "emit");
  std::span<NodeRuntime* const> targets = to.empty() ? std::span<NodeRuntime* const>(ingress_) : named;
  Item item{std::move(msg), {}, nullptr};
  item.trace = stamp(item.value, std::move(trace_id));
  if (auto sent = try_deliver(nullptr, targets, item); sent < targets.size())
    co_await deliver(nullptr, targets.subspan(sent), std::move(item));
}

void FlowImpl::emit_nowait(std::any msg, std::string trace_id, Targets to) {
  check_running("emit_nowait");
  auto targets = resolve_targets(to, "emit_nowait");
  for (auto* t : targets)
    if (t->inbox.full()) throw QueueFullError("queue of node '" + t->spec->name + "' is full");
  Item item{std::move(msg), {}, nullptr};
  item.trace = stamp(item.value, std::move(trace_id));
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Item it = i + 1 == targets.size() ? std::move(item) : item;
    try_push(*targets[i], it);
  }
}

Task<void> FlowImpl::node_emit(NodeRuntime& n, TraceState* current, std::any msg, const Targets& to) {
  auto targets = successors_for(n, to);
  Item item{std::move(msg), {}, nullptr};
  if (auto* m = std::any_cast<Message>(&item.value); m && !m->trace_id.empty()) item.trace = trace_for(m->trace_id);
  else item.trace = TraceRef(current);
  std::span<NodeRuntime* const> all(targets);
  if (auto sent = try_deliver(&n, all, item); sent < all.size())
    co_await deliver(&n, all.subspan(sent), std::move(item));
}

void FlowImpl::node_emit_nowait(NodeRuntime& n, TraceState* current, std::any msg, const Targets& to) {
  auto targets = successors_for(n, to);
  for (auto* t : targets)
    if (t ? t->inbox.full() : sink_.full()) throw QueueFullError("queue of '" + (t ? t->spec->name : std::string("sink")) + "' is full");
  Item item{std::move(msg), {}, &n};
  if (auto* m = std::any_cast<Message>(&item.value); m && !m->trace_id.empty()) item.trace = trace_for(m->trace_id);
  else item.trace = TraceRef(current);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Item it = i + 1 == targets.size() ? std::move(item) : item;
    if (targets[i]) try_push(*targets[i], it);
    else try_push_sink(it);
  }
}

int FlowImpl::next_seq(const std::string& stream_id, bool done) {
  int& seq = stream_seq_[stream_id];
  int mine = seq++;
  if (done) stream_seq_.erase(stream_id);
  return mine;
}

void FlowImpl::begin_fetch(const std::string& trace_id, NodeRuntime* from) {
  check_running("fetch");
  if (!trace_id.empty()) trace_fetch_used_ = true;
  if (from && trace_fetch_used_)
    throw FlowUsageError("fetch from node '" + from->spec->name + "': source filtering is refused once trace-scoped fetching is in use");
}

// Moves the first matching sink item into `out`; false when there is none.
bool FlowImpl::take_result(const std::string& trace_id, NodeRuntime* from, Fetched& out) {
  auto it = std::find_if(sink_.items.begin(), sink_.items.end(), [&](const Item& i) {
    if (from) return i.source == from;
    if (trace_id.empty()) return true;
    return i.trace && i.trace->id == trace_id;
  });
  if (it == sink_.items.end()) return false;
  Item item = std::move(*it);
  sink_.items.erase(it);
  if (item.trace) --item.trace->pending;
  sink_.writers.notify_one();
  out = Fetched{std::move(item.value), item.trace ? item.trace->id : std::string(),
                item.source ? item.source->spec->name : std::string()};
  return true;
}

Task<Fetched> FlowImpl::fetch(std::string trace_id, NodeRuntime* from) {
  begin_fetch(trace_id, from);
  auto self = shared_from_this();
  Fetched out;
  for (;;) {
    if (stopping_ || !running_) throw FlowStoppedError("flow '" + options_.name + "' stopped");
    if (take_result(trace_id, from, out)) co_return out;
    if (trace_id.empty()) {
      co_await sink_.any_readers.wait();
    } else {
      auto& wq = sink_.trace_readers[trace_id];
      std::exception_ptr err;
      try {
        co_await wq.wait();
      } catch (...) {
        err = std::current_exception();
      }
      if (auto w = sink_.trace_readers.find(trace_id); w != sink_.trace_readers.end() && w->second.empty())
        sink_.trace_readers.erase(w);
      if (err) std::rethrow_exception(err);
    }
  }
}

namespace {
// Shared by a bounded fetch and its timer: the timer's handler may run after the fetch
// returned (it had already expired when the result arrived), so it must not point into
// the fetch's frame. Emitting `signal` once nothing is connected to it is a no-op.
struct BoundedWait {
  asio::cancellation_signal signal;  // cancels the wait in progress (timer or caller)
  bool expired = false;
};
}  // namespace

// One timer per call and no parallel group: the timer (or the caller's cancellation,
// forwarded) emits a signal the sink wait is bound to. Same checks, errors and ordering as
// fetch(); a result already in the sink is returned even past the deadline.
template <class R>
Task<std::optional<R>> FlowImpl::fetch_until(std::string trace_id, std::chrono::steady_clock::time_point deadline) {
  // R = std::any: Flow::fetch_until returns this coroutine itself (no converting frame).
  auto result = [](Fetched& f) {
    if constexpr (std::is_same_v<R, Fetched>) return std::optional<R>(std::move(f));
    else return std::optional<R>(std::move(f.value));
  };
  begin_fetch(trace_id, nullptr);
  auto self = shared_from_this();
  std::shared_ptr<BoundedWait> bw;
  std::optional<asio::steady_timer> timer;  // destroyed (cancelled) when the fetch ends
  Fetched out;
  for (;;) {
    if (stopping_ || !running_) throw FlowStoppedError("flow '" + options_.name + "' stopped");
    if (take_result(trace_id, nullptr, out)) co_return result(out);
    if (!bw) {
      if (std::chrono::steady_clock::now() >= deadline) co_return std::nullopt;
      bw = std::make_shared<BoundedWait>();
      timer.emplace(*ex_, deadline);
      timer->async_wait([bw](error_code ec) {
        if (ec) return;
        bw->expired = true;
        bw->signal.emit(asio::cancellation_type::terminal);
      });
    }
    if (bw->expired) co_return std::nullopt;
    WaitQueue& wq = trace_id.empty() ? sink_.any_readers : sink_.trace_readers[trace_id];
    asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    asio::cancellation_slot caller = state.slot();
    if (caller.is_connected()) caller.assign([bw](asio::cancellation_type t) { bw->signal.emit(t); });
    error_code ec;
    co_await wq.wait(ec, bw->signal.slot());
    if (caller.is_connected()) caller.clear();
    if (!trace_id.empty())
      if (auto w = sink_.trace_readers.find(trace_id); w != sink_.trace_readers.end() && w->second.empty())
        sink_.trace_readers.erase(w);
    if (ec) {
      if (state.cancelled() != asio::cancellation_type::none || !bw->expired) throw boost::system::system_error(ec);
      // Timed out: a result that arrived meanwhile still counts.
      if (!stopping_ && running_ && take_result(trace_id, nullptr, out)) co_return result(out);
      co_return std::nullopt;
    }
  }
}

template Task<std::optional<Fetched>> FlowImpl::fetch_until<Fetched>(std::string, std::chrono::steady_clock::time_point);
template Task<std::optional<std::any>> FlowImpl::fetch_until<std::any>(std::string, std::chrono::steady_clock::time_point);

Fetched FlowImpl::fetch_nowait(std::string trace_id) {
  check_running("fetch_nowait");
  if (!trace_id.empty()) trace_fetch_used_ = true;
  auto it = std::find_if(sink_.items.begin(), sink_.items.end(),
                         [&](const Item& i) { return trace_id.empty() || (i.trace && i.trace->id == trace_id); });
  if (it == sink_.items.end())
    throw QueueEmptyError("sink of flow '" + options_.name + "' is empty" + (trace_id.empty() ? "" : " for trace '" + trace_id + "'"));
  Item item = std::move(*it);
  sink_.items.erase(it);
  if (item.trace) --item.trace->pending;
  sink_.writers.notify_one();
  return Fetched{std::move(item.value), item.trace ? item.trace->id : std::string(),
                 item.source ? item.source->spec->name : std::string()};
}

Task<std::any> FlowImpl::call(std::any msg, std::string trace_id) {
  if (trace_id.empty()) throw FlowUsageError("call on flow '" + options_.name + "' needs a trace id");
  auto self = shared_from_this();
  auto& lock = call_locks_[trace_id];
  while (lock.locked) co_await lock.waiters.wait();
  lock.locked = true;
  std::exception_ptr err;
  std::any result;
  try {
    Targets ingress;  // named: g++ 12 miscompiles braced temporaries inside co_await
    co_await emit(std::move(msg), trace_id, std::move(ingress));
    result = (co_await fetch(trace_id, nullptr)).value;
  } catch (...) {
    err = std::current_exception();
  }
  lock.locked = false;
  if (lock.waiters.empty()) call_locks_.erase(trace_id);
  else lock.waiters.notify_one();
  if (err) std::rethrow_exception(err);
  co_return result;
}

// ---------------------------------------------------------------- node workers

// One per node (C4, C5, C9, C10): waits on the inbox, then runs each message through the
// node with its policy and hands the result on. The per-message steps run in this frame,
// not in a callee coroutine: each coroutine call costs a frame allocation per message.
// Everything off the success path (deadline skips, failures, retries, events, logging)
// lives in separate functions: g++ keeps every local of a coroutine in its frame, and a
// frame over ~1 KB misses malloc's thread cache (three per flow: ~7% of a flow per job).
Task<void> FlowImpl::worker(NodeRuntime& n) {
  for (;;) {
    if (stopping_) co_return;
    if (n.inbox.items.empty()) {
      // Every stop() cancels this wait: take it as an error code, not an exception
      // (unwinding one through the awaitable frames cost ~40% of a flow-per-job run).
      error_code ec;
      co_await n.inbox.readers.wait(ec);
      if (ec) {
        if (stopping_) co_return;
        co_await asio::this_coro::reset_cancellation_state();
      }
      continue;
    }
    Item item = pop(n.inbox);
    TraceState* t = item.trace.get();
    if (t && t->cancelled) continue;
    if (auto* m = std::any_cast<Message>(&item.value); m && m->deadline_s && wall_now() > *m->deadline_s) {
      co_await skip_past_deadline(n, std::move(item));
      continue;
    }

    const NodeSpec& spec = *n.spec;
    const NodePolicy& policy = spec.options.policy;
    const int max_attempts = std::max(1, policy.max_retries + 1);
    if (t) ++t->inflight;
    n.busy = true;
    n.current = t;
    Context ctx(this, &n, t);

    try {
      for (int attempt = 0;; ++attempt) {
        const bool last = attempt + 1 >= max_attempts;
        std::any input = last ? std::move(item.value) : item.value;
        if (listening()) publish(make_event(EventType::node_start, &n, t, attempt));
        const double t0 = mono_ms();
        std::exception_ptr error;
        bool timed_out = false;
        NodeOutput out;
        try {
          if (policy.timeout_s) arm_watchdog(n, *policy.timeout_s);
          out = co_await spec.invoke(input, ctx);
        } catch (...) {
          error = std::current_exception();
        }
        n.in_attempt = false;
        if (stopping_ || (t && t->cancelled)) break;
        if (n.attempt_timed_out) {  // the watchdog cancelled this attempt: whatever it returned, it timed out
          n.attempt_timed_out = false;
          timed_out = true;
          error = nullptr;
          out.reset();
          co_await asio::this_coro::reset_cancellation_state();
        }

        if (!error && !timed_out) {
          if (listening()) publish_success(n, t, attempt, t0);
          if (out) {
            // Named locals: g++ 12 miscompiles braced temporaries inside co_await.
            Item next{std::move(*out), item.trace, &n};
            static NodeRuntime* const kSink[1] = {nullptr};
            std::span<NodeRuntime* const> targets = n.successors.empty() ? std::span<NodeRuntime* const>(kSink)
                                                                         : std::span<NodeRuntime* const>(n.successors);
            if (auto sent = try_deliver(&n, targets, next); sent < targets.size())
              co_await deliver(&n, targets.subspan(sent), std::move(next));
          }
          break;
        }
        if (!co_await after_failure(n, item, attempt, last, error, timed_out, t0)) break;
      }
    } catch (...) {
      // Only cancellation (trace cancel, stop) or a stop while waiting reaches here.
      if (!(stopping_ || (t && t->cancelled))) log_unexpected(n, std::current_exception());
    }
    if (t && t->cancelled && !stopping_) {
      if (listening()) publish(make_event(EventType::node_trace_cancelled, &n, t));
    }
    // A trace cancel leaves this worker's cancellation state set; clear it (only then:
    // resetting on every message costs a slot re-registration).
    if (!stopping_ && (co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)
      co_await asio::this_coro::reset_cancellation_state();
    n.busy = false;
    n.current = nullptr;
    if (t) {
      --t->inflight;
      finish_if_cancelled(t);
    }
  }
}

// C9: skip, record, and tell the trace's reader why nothing else is coming.
Task<void> FlowImpl::skip_past_deadline(NodeRuntime& n, Item item) {
  TraceState* t = item.trace.get();
  if (listening()) publish(make_event(EventType::deadline_skip, &n, t));
  Item answer{std::any_cast<Message&>(item.value).with_payload(FinalAnswer{"Deadline exceeded"}), item.trace, &n};
  bool aborted = false;
  try {
    if (!try_push_sink(answer)) co_await push_sink(std::move(answer));
  } catch (...) {
    aborted = true;  // stopped, or the trace was cancelled while the sink was full
  }
  if (aborted && !stopping_) co_await asio::this_coro::reset_cancellation_state();
}

void FlowImpl::publish_success(NodeRuntime& n, TraceState* t, int attempt, double t0) {
  auto ev = make_event(EventType::node_success, &n, t, attempt);
  ev.latency_ms = mono_ms() - t0;
  publish(std::move(ev));
}

void FlowImpl::log_unexpected(NodeRuntime& n, std::exception_ptr e) {
  log_record(LogLevel::error, "node_unexpected_error",
             {{"flow", options_.name}, {"node", n.spec->name}, {"error", describe_exception(e)}});
}

// A failed or timed-out attempt: events, then either the backoff before the next attempt
// (true: retry) or the final FlowError (false). Only failures pay for this frame.
Task<bool> FlowImpl::after_failure(NodeRuntime& n, const Item& item, int attempt, bool last, std::exception_ptr error,
                                   bool timed_out, double t0) {
  const NodeSpec& spec = *n.spec;
  const NodePolicy& policy = spec.options.policy;
  TraceState* t = item.trace.get();
  const double latency = mono_ms() - t0;
  std::string type;
  std::string what = timed_out ? "attempt exceeded timeout of " + std::to_string(*policy.timeout_s) + " s"
                               : describe_exception(error, &type);
  if (listening()) {
    auto ev = make_event(timed_out ? EventType::node_timeout : EventType::node_error, &n, t, attempt);
    ev.latency_ms = latency;
    ev.extra["error"] = what;
    publish(std::move(ev));
  }
  if (!last) {
    double backoff = policy.backoff_for(attempt);
    if (listening()) {
      auto ev = make_event(EventType::node_retry, &n, t, attempt);
      ev.extra["backoff_s"] = backoff;
      publish(std::move(ev));
    }
    if (backoff > 0) {
      asio::steady_timer timer(*ex_, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                         std::chrono::duration<double>(backoff)));
      co_await timer.async_wait(asio::use_awaitable);
    }
    co_return true;
  }
  FlowError fe{t ? t->id : std::string(), spec.name, spec.id,
               timed_out ? FlowErrorCode::node_timeout
                         : (is_validation(error) ? FlowErrorCode::validation_error : FlowErrorCode::node_exception),
               what, type, attempt + 1, latency};
  if (listening()) {
    auto ev = make_event(EventType::node_failed, &n, t, attempt);
    ev.latency_ms = latency;
    ev.extra["error"] = what;
    ev.extra["code"] = to_string(fe.code);
    publish(std::move(ev));
  }
  if (log_enabled(LogLevel::warn)) {
    auto j = fe.to_json().as_object();
    j["flow"] = options_.name;
    log_record(LogLevel::warn, "node_failed", j);
  }
  if (options_.emit_errors_to_rookery && t) {
    Item err_item{std::move(fe), item.trace, &n};
    if (!try_push_sink(err_item)) co_await push_sink(std::move(err_item));
  }
  co_return false;
}

void FlowImpl::arm_watchdog(NodeRuntime& n, double timeout_s) {
  n.attempt_deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s));
  n.in_attempt = true;
  n.attempt_timed_out = false;
  if (n.watchdog_armed) return;  // due at an earlier attempt's deadline: it re-arms for this one
  if (!n.watchdog) n.watchdog = std::make_unique<asio::steady_timer>(*ex_);
  n.watchdog->expires_at(n.attempt_deadline);
  n.watchdog_armed = true;
  n.watchdog->async_wait([self = shared_from_this(), &n](error_code ec) { self->on_watchdog(n, ec); });
}

void FlowImpl::on_watchdog(NodeRuntime& n, error_code ec) {
  if (ec) return;  // cancelled by stop(), which already marked it unarmed (a new run may have re-armed it)
  n.watchdog_armed = false;
  if (stopping_ || !n.in_attempt) return;  // nothing to time
  if (std::chrono::steady_clock::now() < n.attempt_deadline) {
    n.watchdog->expires_at(n.attempt_deadline);
    n.watchdog_armed = true;
    n.watchdog->async_wait([self = shared_from_this(), &n](error_code ec) { self->on_watchdog(n, ec); });
    return;
  }
  n.attempt_timed_out = true;
  n.signal.emit(asio::cancellation_type::terminal);
}

FlowEvent FlowImpl::make_event(EventType type, const NodeRuntime* n, const TraceState* t, int attempt) const {
  FlowEvent ev{type};
  ev.ts = wall_now();
  ev.attempt = attempt;
  ev.queue_maxsize = options_.queue_maxsize;
  if (n) {
    ev.node_name = n->spec->name;
    ev.node_id = n->spec->id;
    ev.queue_depth_in = n->inbox.items.size();
    for (auto* s : n->successors) ev.queue_depth_out += s->inbox.items.size();
    if (n->successors.empty()) ev.queue_depth_out = sink_.items.size();
    ev.outgoing_edges = n->successors.size();
  }
  if (t) {
    ev.trace_id = t->id;
    ev.trace_pending = t->pending;
    ev.trace_inflight = t->inflight;
    ev.trace_cancelled = t->cancelled;
  }
  return ev;
}

void FlowImpl::publish(FlowEvent&& ev) {
  for (auto& mw : options_.middlewares) {
    try {
      mw(ev);
    } catch (const std::exception& e) {
      log_record(LogLevel::warn, "middleware_error", {{"flow", options_.name}, {"event", to_string(ev.type)}, {"error", e.what()}});
    } catch (...) {
      log_record(LogLevel::warn, "middleware_error", {{"flow", options_.name}, {"event", to_string(ev.type)}});
    }
  }
}

std::string FlowImpl::to_mermaid() const {
  std::string out = "graph TD\n";
  auto id = [](const NodeRuntime* n) { return "n_" + n->spec->id.substr(0, 8); };
  out += "    OpenSea[[OpenSea]]\n    Rookery[[Rookery]]\n";
  for (auto& n : nodes_) out += "    " + id(n.get()) + "[\"" + n->spec->name + "\"]\n";
  for (auto* n : ingress_) out += "    OpenSea --> " + id(n) + "\n";
  for (auto& n : nodes_) {
    for (auto* s : n->successors) out += "    " + id(n.get()) + " --> " + id(s) + "\n";
    if (n->successors.empty()) out += "    " + id(n.get()) + " --> Rookery\n";
  }
  return out;
}

std::string FlowImpl::to_dot() const {
  std::string out = "digraph \"" + options_.name + "\" {\n    rankdir=LR;\n    OpenSea [shape=doubleoctagon];\n    Rookery [shape=doubleoctagon];\n";
  for (auto& n : nodes_) out += "    \"" + n->spec->name + "\" [shape=box];\n";
  for (auto* n : ingress_) out += "    OpenSea -> \"" + n->spec->name + "\";\n";
  for (auto& n : nodes_) {
    for (auto* s : n->successors) out += "    \"" + n->spec->name + "\" -> \"" + s->spec->name + "\";\n";
    if (n->successors.empty()) out += "    \"" + n->spec->name + "\" -> Rookery;\n";
  }
  return out + "}\n";
}

}  // namespace penguiflow::detail
