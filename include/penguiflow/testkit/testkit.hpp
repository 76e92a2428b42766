// Testkit (C17): helpers for testing flows, shipped to users (as River ships rivertest).
// Framework-neutral: no dependency on GoogleTest or any other test framework.
//
//   penguiflow::testkit::Recorder rec;
//   Flow flow({a.to(b), b.to()}, FlowOptions{.middlewares = {rec.middleware()}});
//   std::any out = co_await testkit::run_one(flow, msg, 2.0, "t-1");   // runs, stops
//   auto check = testkit::assert_node_sequence(rec, "t-1", {"a", "b"});
//   EXPECT_TRUE(check.ok) << check.message;                            // with gtest
//
//   Node flaky("flaky", testkit::inject_failure(real_fn, {.fail_times = 2}), NodePolicy{.max_retries = 2});
#pragma once

#include <penguiflow/core/flow.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::testkit {

/// run_one found no result within its time bound. `what()` names the flow, the trace
/// and the bound.
class RunTimeoutError : public std::runtime_error {
 public:
  RunTimeoutError(std::string flow, std::string trace_id, double timeout_s);
  const std::string& trace_id() const { return trace_id_; }
  double timeout_s() const { return timeout_s_; }

 private:
  std::string trace_id_;
  double timeout_s_;
};

/// Runs one message through `flow` and returns the first result of its trace (whatever
/// reaches the sink: a value, a Message, a FlowError with emit_errors_to_rookery, a
/// FinalAnswer for a missed deadline).
///
/// The trace is `trace_id`, else the Message's own trace id, else a random one. A flow
/// that is not running is run on the caller's executor and stopped before returning
/// (also on error); a running one is left running (it must be on the caller's executor).
/// When no result arrives within `timeout_s` (for the emit and the fetch together) the
/// trace is cancelled and RunTimeoutError is thrown. Cancelling the caller cancels the
/// round trip. Exceptions of emit / fetch (FlowUsageError, FlowStoppedError) propagate.
Task<std::any> run_one(Flow& flow, std::any msg, double timeout_s = 1.0, std::string trace_id = {});

/// Records the events of every flow it is installed in, per trace (C11 events), for
/// assertions. Copies share one record. Thread-safe. Keeps the last `max_traces` traces
/// (the oldest trace's record is dropped beyond it).
class Recorder {
 public:
  explicit Recorder(std::size_t max_traces = 1000);

  /// The middleware to install: FlowOptions::middlewares or Flow::add_middleware.
  Middleware middleware() const;
  /// Events of a trace, in order.
  std::vector<FlowEvent> events(std::string_view trace_id) const;
  /// Nodes the trace went through: node_start events in order, consecutive repeats (a
  /// node's retries) collapsed, as upstream's testkit.
  std::vector<std::string> node_sequence(std::string_view trace_id) const;
  /// Recorded trace ids, oldest first.
  std::vector<std::string> traces() const;
  void clear();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

/// The outcome of a check: `ok`, else a message saying what differed.
struct Check {
  bool ok = true;
  std::string message;
  explicit operator bool() const { return ok; }
};

/// Compares the trace's node sequence (Recorder::node_sequence) with `expected`. The
/// message shows both sequences, or says that nothing was recorded for the trace.
Check assert_node_sequence(const Recorder& recorder, std::string_view trace_id,
                           const std::vector<std::string>& expected);

/// A failed check, thrown by the require_* helpers.
class AssertionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Like assert_node_sequence, throwing AssertionError with the message on mismatch.
void require_node_sequence(const Recorder& recorder, std::string_view trace_id,
                           const std::vector<std::string>& expected);

/// How an injected failure behaves.
struct FailureSpec {
  int fail_times = 1;                    // the first N calls fail; later ones run the real function
  std::string error = "injected failure";  // what() of the InjectedFailure thrown
  double delay_s = 0;                    // wait this long (cancellably) before failing
  bool hang = false;                     // a failing call never returns on its own: it waits
                                         // until cancelled (a node timeout, a trace cancel)
};

/// The exception an injected failure throws.
class InjectedFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
struct InjectionState {
  FailureSpec spec;
  std::atomic<int> calls{0};
  std::atomic<int> failures{0};
};
/// Waits (cancellably) and throws as `spec` says; call only for a failing call.
Task<void> fail_call(const FailureSpec& spec, Context& ctx);

template <class F, class In, class Out>
struct Injected {
  F fn;
  std::shared_ptr<InjectionState> state;

  Task<Out> operator()(In msg, Context& ctx) const {
    if (state->calls.fetch_add(1) < state->spec.fail_times) {
      state->failures.fetch_add(1);
      co_await fail_call(state->spec, ctx);
    }
    if constexpr (std::is_void_v<Out>) {
      co_await fn(std::move(msg), ctx);
    } else {
      co_return co_await fn(std::move(msg), ctx);
    }
  }
};
}  // namespace detail

/// Wraps node functions so their first `spec.fail_times` calls (attempts, across
/// retries and messages) fail; counts calls. Copies share the counters. Thread-safe.
class FailureInjector {
 public:
  explicit FailureInjector(FailureSpec spec) : state_(std::make_shared<detail::InjectionState>()) {
    state_->spec = std::move(spec);
  }

  /// A node function with `fn`'s signature (`Task<Out> fn(In, Context&)`).
  template <class F>
  auto wrap(F fn) const {
    using traits = penguiflow::detail::callable_traits<F>;
    using Out = typename penguiflow::detail::awaitable_result<typename traits::ret>::type;
    return detail::Injected<F, typename traits::arg, Out>{std::move(fn), state_};
  }
  /// Calls made so far (failed or not).
  int calls() const { return state_->calls.load(); }
  /// Calls that failed so far.
  int failures() const { return state_->failures.load(); }

 private:
  std::shared_ptr<detail::InjectionState> state_;
};

/// `fn` wrapped so its first `spec.fail_times` calls fail (see FailureInjector).
template <class F>
auto inject_failure(F fn, FailureSpec spec) {
  return FailureInjector(std::move(spec)).wrap(std::move(fn));
}

}  // namespace penguiflow::testkit
