// The Flow / Context facades and the small free functions of core.
#include "flow_impl.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cmath>

namespace penguiflow {

namespace asio = boost::asio;

Flow::Flow(std::vector<Adjacency> adjacency, FlowOptions options)
    : impl_(std::make_shared<detail::FlowImpl>(std::move(adjacency), std::move(options))) {}
Flow::~Flow() {
  // A running flow's workers keep the implementation alive; cancel them so they end at
  // the executor's next turn (stop() is the orderly way).
  if (impl_ && impl_->running_) {
    impl_->stopping_ = true;
    for (auto& n : impl_->nodes_) n->signal.emit(asio::cancellation_type::terminal);
  }
}
Flow::Flow(Flow&&) noexcept = default;
Flow& Flow::operator=(Flow&&) noexcept = default;

void Flow::run(asio::any_io_executor ex) { impl_->run(std::move(ex)); }
bool Flow::running() const { return impl_->running_; }
Task<void> Flow::emit(std::any msg, std::string trace_id, Targets to) {
  return impl_->emit(std::move(msg), std::move(trace_id), std::move(to));
}
Task<void> Flow::emit(std::any msg, std::string trace_id) { return impl_->emit(std::move(msg), std::move(trace_id), Targets()); }
Task<void> Flow::emit(std::any msg) { return impl_->emit(std::move(msg), std::string(), Targets()); }
void Flow::emit_nowait(std::any msg, std::string trace_id, Targets to) {
  impl_->emit_nowait(std::move(msg), std::move(trace_id), std::move(to));
}
Task<std::any> Flow::fetch(std::string trace_id) {
  auto f = co_await impl_->fetch(std::move(trace_id), nullptr);
  co_return std::move(f.value);
}
Task<std::any> Flow::fetch() { return fetch(std::string()); }
Task<Fetched> Flow::fetch_item(std::string trace_id) { return impl_->fetch(std::move(trace_id), nullptr); }
Task<Fetched> Flow::fetch_item() { return impl_->fetch(std::string(), nullptr); }
Task<std::optional<std::any>> Flow::fetch_until(std::string trace_id, std::chrono::steady_clock::time_point deadline) {
  return impl_->fetch_until<std::any>(std::move(trace_id), deadline);
}
Task<std::optional<std::any>> Flow::fetch_for(std::string trace_id, std::chrono::steady_clock::duration timeout) {
  return impl_->fetch_until<std::any>(std::move(trace_id), std::chrono::steady_clock::now() + timeout);
}
Task<std::optional<Fetched>> Flow::fetch_item_until(std::string trace_id, std::chrono::steady_clock::time_point deadline) {
  return impl_->fetch_until<Fetched>(std::move(trace_id), deadline);
}
Task<std::optional<Fetched>> Flow::fetch_item_for(std::string trace_id, std::chrono::steady_clock::duration timeout) {
  return impl_->fetch_until<Fetched>(std::move(trace_id), std::chrono::steady_clock::now() + timeout);
}
Task<std::any> Flow::fetch_from(const Node& from) {
  auto n = std::find_if(impl_->nodes_.begin(), impl_->nodes_.end(),
                         [&](auto& rt) { return rt->spec.get() == &from.spec(); });
  if (n == impl_->nodes_.end())
    throw FlowUsageError("fetch_from: unknown node '" + from.name() + "' in flow '" + impl_->options_.name + "'");
  std::string any_trace;
  auto f = co_await impl_->fetch(std::move(any_trace), n->get());
  co_return std::move(f.value);
}
std::any Flow::fetch_nowait(std::string trace_id) { return impl_->fetch_nowait(std::move(trace_id)).value; }
Task<std::any> Flow::call(std::any msg, std::string trace_id) { return impl_->call(std::move(msg), std::move(trace_id)); }
bool Flow::cancel(std::string_view trace_id) { return impl_->cancel(trace_id); }
Task<void> Flow::stop() { return impl_->stop(); }
void Flow::add_middleware(Middleware m) { impl_->options_.middlewares.push_back(std::move(m)); }
void Flow::set_emit_errors_to_rookery(bool on) { impl_->options_.emit_errors_to_rookery = on; }
std::size_t Flow::active_traces() const { return impl_->traces_.size(); }
std::size_t Flow::sink_size() const { return impl_->sink_.items.size(); }
const FlowOptions& Flow::options() const { return impl_->options_; }
std::vector<std::string> Flow::node_names() const {
  std::vector<std::string> out;
  for (auto& n : impl_->nodes_) out.push_back(n->spec->name);
  return out;
}
std::string Flow::to_mermaid() const { return impl_->to_mermaid(); }
std::string Flow::to_dot() const { return impl_->to_dot(); }

// ---------------------------------------------------------------- Context

const std::string& Context::node_name() const { return node_->spec->name; }
const std::string& detail::context_node_name(const Context& ctx) { return ctx.node_name(); }
const std::string& Context::node_id() const { return node_->spec->id; }
const std::string& Context::trace_id() const {
  static const std::string none;
  return trace_ ? trace_->id : none;
}
asio::any_io_executor Context::executor() const { return *flow_->ex_; }

Task<void> Context::emit(std::any msg, Targets to) {
  // A coroutine (not a forwarding call): `to` must live until node_emit is done with it.
  co_await flow_->node_emit(*node_, trace_, std::move(msg), to);
}
Task<void> Context::emit(std::any msg) {
  Targets all;
  co_await flow_->node_emit(*node_, trace_, std::move(msg), all);
}
void Context::emit_nowait(std::any msg, Targets to) { flow_->node_emit_nowait(*node_, trace_, std::move(msg), to); }

Task<void> Context::emit_chunk(const Message& parent, std::string text, bool done, boost::json::object meta, Targets to,
                               std::string stream_id) {
  if (stream_id.empty()) stream_id = parent.trace_id.empty() ? trace_id() : parent.trace_id;
  StreamChunk chunk{stream_id, flow_->next_seq(stream_id, done), std::move(text), done, std::move(meta)};
  Message m = parent.with_payload(std::move(chunk));
  co_await flow_->node_emit(*node_, trace_, std::move(m), to);
}

Task<void> Context::emit_chunk(const Message& parent, std::string text, bool done) {
  return emit_chunk(parent, std::move(text), done, boost::json::object(), Targets(), std::string());
}

Task<void> Context::sleep(double seconds) {
  asio::steady_timer timer(*flow_->ex_, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                            std::chrono::duration<double>(seconds)));
  co_await timer.async_wait(asio::use_awaitable);
}

namespace {
asio::thread_pool& offload_pool() {
  // Shared by every flow of the process; threads start on first use.
  static asio::thread_pool pool(2);
  return pool;
}
}  // namespace

Task<void> Context::offload(std::function<void()> fn) {
  std::exception_ptr err;
  co_await asio::co_spawn(
      offload_pool(),
      [&]() -> Task<void> {
        try {
          fn();
        } catch (...) {
          err = std::current_exception();
        }
        co_return;
      },
      asio::use_awaitable);
  if (err) std::rethrow_exception(err);
}

Task<std::any> call_subflow(Context& ctx, Flow& child, std::any msg) {
  std::string trace = ctx.trace_id().empty() ? random_id() : ctx.trace_id();
  std::exception_ptr err;
  try {
    co_await child.emit(std::move(msg), trace);
    co_return co_await child.fetch(trace);
  } catch (...) {
    err = std::current_exception();
  }
  child.cancel(trace);  // C14: the parent's trace was cancelled (or the call failed)
  std::rethrow_exception(err);
}

// ---------------------------------------------------------------- small pieces

double NodePolicy::backoff_for(int attempt) const {
  double d = backoff_base * std::pow(backoff_mult, attempt);
  if (max_backoff) d = std::min(d, *max_backoff);
  return std::max(0.0, d);
}

void Node::check_name(const std::string& name) {
  if (name.empty()) throw FlowUsageError("a node needs a non-empty name");
}

Adjacency Node::to(const std::vector<Node>& succ) const {
  Adjacency a{spec_, {}};
  for (auto& s : succ) a.to.push_back(s.shared_spec());
  return a;
}

}  // namespace penguiflow
