// Testkit (C17).
#include <penguiflow/testkit/testkit.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <deque>
#include <mutex>
#include <sstream>
#include <unordered_map>

namespace penguiflow::testkit {

namespace asio = boost::asio;

namespace {

std::string format_seconds(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

struct Outcome {
  std::any value;
  std::exception_ptr error;
};

// emit + fetch of one trace; the exception is captured so `||` with the timer never
// drops it (DESIGN.md pitfall).
Task<Outcome> round_trip(Flow& flow, std::any msg, std::string trace) {
  Outcome out;
  try {
    Targets ingress;  // named: no braced temporaries inside co_await (g++ 12)
    co_await flow.emit(std::move(msg), trace, std::move(ingress));
    out.value = co_await flow.fetch(trace);
  } catch (...) {
    out.error = std::current_exception();
  }
  co_return out;
}

std::string show(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", '" : "'") + v[i] + "'";
  return out + "]";
}

}  // namespace

RunTimeoutError::RunTimeoutError(std::string flow, std::string trace_id, double timeout_s)
    : std::runtime_error("run_one: flow '" + flow + "' produced no result for trace '" + trace_id + "' within " +
                         format_seconds(timeout_s) + " s"),
      trace_id_(std::move(trace_id)),
      timeout_s_(timeout_s) {}

Task<std::any> run_one(Flow& flow, std::any msg, double timeout_s, std::string trace_id) {
  using namespace asio::experimental::awaitable_operators;
  if (trace_id.empty()) {
    if (auto* m = std::any_cast<Message>(&msg); m && !m->trace_id.empty()) trace_id = m->trace_id;
    else trace_id = random_id();
  }
  auto ex = co_await asio::this_coro::executor;
  const bool started = !flow.running();
  if (started) flow.run(ex);

  asio::steady_timer timer(ex, std::chrono::duration_cast<asio::steady_timer::duration>(
                                   std::chrono::duration<double>(std::max(0.0, timeout_s))));
  std::exception_ptr error;
  std::any value;
  bool timed_out = false;
  try {
    auto r = co_await (round_trip(flow, std::move(msg), trace_id) || timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (r.index() == 1) {
      timed_out = true;
      flow.cancel(trace_id);
    } else {
      auto& out = std::get<0>(r);
      error = out.error;
      value = std::move(out.value);
    }
  } catch (...) {
    error = std::current_exception();  // the caller was cancelled
  }
  if (started) {
    if (error) co_await asio::this_coro::reset_cancellation_state();
    co_await flow.stop();
  }
  if (timed_out) throw RunTimeoutError(flow.options().name, trace_id, timeout_s);
  if (error) std::rethrow_exception(error);
  co_return value;
}

// ---------------------------------------------------------------- Recorder

struct Recorder::State {
  std::size_t max_traces;
  mutable std::mutex mu;
  std::unordered_map<std::string, std::vector<FlowEvent>> by_trace;
  std::deque<std::string> order;  // oldest first
};

Recorder::Recorder(std::size_t max_traces) : state_(std::make_shared<State>()) {
  state_->max_traces = std::max<std::size_t>(1, max_traces);
}

Middleware Recorder::middleware() const {
  auto s = state_;
  return [s](const FlowEvent& ev) {
    if (ev.trace_id.empty()) return;
    std::lock_guard lock(s->mu);
    auto [it, fresh] = s->by_trace.try_emplace(ev.trace_id);
    if (fresh) {
      s->order.push_back(ev.trace_id);
      while (s->order.size() > s->max_traces) {
        s->by_trace.erase(s->order.front());
        s->order.pop_front();
      }
      it = s->by_trace.find(ev.trace_id);
    }
    it->second.push_back(ev);
  };
}

std::vector<FlowEvent> Recorder::events(std::string_view trace_id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->by_trace.find(std::string(trace_id));
  return it == state_->by_trace.end() ? std::vector<FlowEvent>{} : it->second;
}

std::vector<std::string> Recorder::node_sequence(std::string_view trace_id) const {
  std::vector<std::string> out;
  for (auto& ev : events(trace_id)) {
    if (ev.type != EventType::node_start) continue;
    const std::string& name = ev.node_name.empty() ? ev.node_id : ev.node_name;
    if (out.empty() || out.back() != name) out.push_back(name);
  }
  return out;
}

std::vector<std::string> Recorder::traces() const {
  std::lock_guard lock(state_->mu);
  return {state_->order.begin(), state_->order.end()};
}

void Recorder::clear() {
  std::lock_guard lock(state_->mu);
  state_->by_trace.clear();
  state_->order.clear();
}

Check assert_node_sequence(const Recorder& recorder, std::string_view trace_id, const std::vector<std::string>& expected) {
  if (recorder.events(trace_id).empty())
    return Check{false, "no recorded events for trace '" + std::string(trace_id) +
                            "' (is the Recorder's middleware installed on the flow?)"};
  auto actual = recorder.node_sequence(trace_id);
  if (actual == expected) return Check{};
  return Check{false, "node sequence mismatch for trace '" + std::string(trace_id) + "':\n  expected: " + show(expected) +
                          "\n  actual:   " + show(actual)};
}

void require_node_sequence(const Recorder& recorder, std::string_view trace_id, const std::vector<std::string>& expected) {
  if (auto c = assert_node_sequence(recorder, trace_id, expected); !c) throw AssertionError(c.message);
}

// ---------------------------------------------------------------- failures

Task<void> detail::fail_call(const FailureSpec& spec, Context& ctx) {
  if (spec.hang) co_await ctx.sleep(365.0 * 24 * 3600);  // until cancelled
  if (spec.delay_s > 0) co_await ctx.sleep(spec.delay_s);
  throw InjectedFailure(spec.error);
}

}  // namespace penguiflow::testkit
