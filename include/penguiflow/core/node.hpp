// Nodes (C4, C5, C6): named async functions of (message, context) with a reliability
// policy. A Node is a cheap handle (shared) to an immutable spec; `a.to(b, c)` builds
// the adjacency a flow is created from.
#pragma once

#include <penguiflow/core/json.hpp>
#include <penguiflow/core/message.hpp>
#include <penguiflow/task.hpp>

#include <boost/asio/awaitable.hpp>

#include <any>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace penguiflow {


class Context;

/// Which typed boundaries are checked (C6). JSON input is always decoded into a typed
/// node's input type; `in` / `out` additionally run the type's `validate()` hook (a
/// member returning std::optional<std::string>: an error, or nullopt) on the input /
/// output.
enum class Validate { none, in, out, both };

/// Per-node reliability (C5). Aggregate: `NodePolicy{.timeout_s = 2, .max_retries = 2}`.
struct NodePolicy {
  /// Unset: `both` for typed nodes, `none` for untyped ones. Set explicitly on a node
  /// whose input or output is untyped (std::any), Flow::run() refuses it (C6).
  std::optional<Validate> validate;
  /// Per attempt; the timed-out attempt is cancelled. Enforced by one watchdog timer per
  /// node (~0.1 µs per attempt). Until Flow::stop(), that timer stays armed up to the last
  /// attempt's deadline, so an io_context running only this flow returns from run() at
  /// most timeout_s after the last attempt if the flow is never stopped.
  std::optional<double> timeout_s;
  int max_retries = 0;                 // total attempts = max_retries + 1
  double backoff_base = 0.5;           // seconds
  double backoff_mult = 2.0;
  std::optional<double> max_backoff;   // seconds

  /// Delay before retry number `attempt` (0-based): min(base * mult^attempt, max).
  double backoff_for(int attempt) const;
};

struct NodeOptions {
  NodePolicy policy{};
  bool allow_cycle = false;  // permits a self-loop on this node (C1)
};

/// What a node invocation produced: a value for every successor, or nothing.
using NodeOutput = std::optional<std::any>;

namespace detail {

/// The name of the node a Context serves (Context is incomplete here).
const std::string& context_node_name(const Context& ctx);

template <class F>
struct callable_traits : callable_traits<decltype(&std::remove_cvref_t<F>::operator())> {};
template <class C, class R, class A, class X>
struct callable_traits<R (C::*)(A, X) const> { using arg = std::remove_cvref_t<A>; using ret = R; };
template <class C, class R, class A, class X>
struct callable_traits<R (C::*)(A, X)> { using arg = std::remove_cvref_t<A>; using ret = R; };
template <class R, class A, class X>
struct callable_traits<R (*)(A, X)> { using arg = std::remove_cvref_t<A>; using ret = R; };

template <class T>
struct awaitable_result;
template <class T>
struct awaitable_result<boost::asio::awaitable<T>> { using type = T; };

template <class T>
concept has_validate_hook = requires(const T& t) {
  { t.validate() } -> std::convertible_to<std::optional<std::string>>;
};

/// Moves the input out of `in` as T, decoding JSON when needed; throws ValidationError.
template <class T>
T take_input(std::any& in, const std::string& node, bool run_hook) {
  if constexpr (std::is_same_v<T, std::any>) {
    return std::move(in);
  }
  T value = [&]() -> T {
    if constexpr (std::is_same_v<T, std::any>) return {};
    if (T* p = std::any_cast<T>(&in)) return std::move(*p);
    if constexpr (!std::is_same_v<T, boost::json::value> &&
                  (boost::json::has_value_to<T>::value || boost::describe::has_describe_members<T>::value)) {
      if (auto* j = std::any_cast<boost::json::value>(&in)) return decode<T>(*j, node);
    }
    throw ValidationError(node, "<input>",
                          "expected " + type_name<T>() + ", got " + boost::core::demangle(in.type().name()));
  }();
  if constexpr (has_validate_hook<T>) {
    if (run_hook)
      if (auto err = value.validate()) throw ValidationError(node, "<input>", *err);
  }
  return value;
}

template <class T>
NodeOutput wrap_output(T&& out, const std::string& node, bool run_hook) {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, std::any>) {
    if (!out.has_value()) return std::nullopt;
    return NodeOutput(std::move(out));
  } else if constexpr (is_optional<U>::value) {
    if (!out) return std::nullopt;
    return wrap_output(std::move(*out), node, run_hook);
  } else {
    if constexpr (has_validate_hook<U>) {
      if (run_hook)
        if (auto err = out.validate()) throw ValidationError(node, "<output>", *err);
    }
    return NodeOutput(std::any(std::forward<T>(out)));
  }
}

}  // namespace detail

/// What a flow needs to run a node; shared by every handle of the node.
struct NodeSpec {
  std::string name;
  std::string id;
  NodeOptions options;
  std::string input_type;   // empty: untyped (takes std::any)
  std::string output_type;  // empty: untyped
  std::function<Task<NodeOutput>(std::any&, Context&)> invoke;
};

class Node;

/// One adjacency entry: `from` feeds `to` (empty `to`: `from` flows into the sink).
struct Adjacency {
  std::shared_ptr<const NodeSpec> from;
  std::vector<std::shared_ptr<const NodeSpec>> to;
};

/// A node handle. `fn` is a coroutine callable as `Task<Out> fn(In msg, Context& ctx)`;
/// In / Out may be std::any (untyped), Message, or any copyable type. Out may be void or
/// std::optional<T> (nothing emitted when empty). Throws FlowUsageError for an empty name.
class Node {
 public:
  template <class F>
  Node(std::string name, F fn, NodeOptions options = {}) : spec_(make_spec(std::move(name), std::move(fn), options)) {}
  template <class F>
  Node(std::string name, F fn, NodePolicy policy) : Node(std::move(name), std::move(fn), NodeOptions{.policy = policy}) {}

  const std::string& name() const { return spec_->name; }
  const std::string& id() const { return spec_->id; }
  const NodeSpec& spec() const { return *spec_; }
  std::shared_ptr<const NodeSpec> shared_spec() const { return spec_; }

  /// Adjacency: this node feeds each of `succ` (none: this node feeds the sink).
  template <class... N>
  Adjacency to(const N&... succ) const {
    return Adjacency{spec_, {succ.shared_spec()...}};
  }
  Adjacency to(const std::vector<Node>& succ) const;

  friend bool operator==(const Node& a, const Node& b) { return a.spec_ == b.spec_; }

 private:
  template <class F>
  static std::shared_ptr<const NodeSpec> make_spec(std::string name, F fn, NodeOptions options);
  static void check_name(const std::string& name);

  std::shared_ptr<const NodeSpec> spec_;
};

template <class F>
std::shared_ptr<const NodeSpec> Node::make_spec(std::string name, F fn, NodeOptions options) {
  using traits = detail::callable_traits<F>;
  using In = typename traits::arg;
  using Ret = typename traits::ret;
  static_assert(requires { typename detail::awaitable_result<Ret>::type; },
                "a node function must be a coroutine: Task<Out> fn(In msg, penguiflow::Context& ctx)");
  using Out = typename detail::awaitable_result<Ret>::type;
  check_name(name);
  auto spec = std::make_shared<NodeSpec>();
  spec->name = std::move(name);
  spec->id = random_id();
  spec->options = options;
  if constexpr (!std::is_same_v<In, std::any>) {
    spec->input_type = type_name<In>();
    register_json_type<In>();
  }
  if constexpr (!std::is_same_v<Out, std::any> && !std::is_void_v<Out>) {
    spec->output_type = type_name<Out>();
    register_json_type<Out>();
  }
  const Validate v = options.policy.validate.value_or(Validate::both);
  const bool hook_in = v == Validate::in || v == Validate::both;
  const bool hook_out = v == Validate::out || v == Validate::both;
  // Captures no string: a captureless `fn` keeps the wrapper inside std::function's local
  // buffer (no allocation per node; a flow per job builds its nodes every time).
  spec->invoke = [fn = std::move(fn), hook_in, hook_out](std::any& in, Context& ctx) -> Task<NodeOutput> {
    In arg = detail::take_input<In>(in, detail::context_node_name(ctx), hook_in);
    if constexpr (std::is_void_v<Out>) {
      co_await fn(std::move(arg), ctx);
      co_return std::nullopt;
    } else {
      Out out = co_await fn(std::move(arg), ctx);
      co_return detail::wrap_output(std::move(out), detail::context_node_name(ctx), hook_out);
    }
  };
  return spec;
}

}  // namespace penguiflow
