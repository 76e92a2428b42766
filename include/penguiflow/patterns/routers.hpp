// Routers and routing policies (C13).
//
// A router is a node that forwards each message it receives, unchanged, to some of its
// successors:
//
//   auto router = predicate_router("router", [](const Message& m) -> Routes {
//     if (m.headers.topic == "billing") return {"billing"};  // by name...
//     return {fallback};                                      // ...or by node
//   });
//   Flow flow({router.to(billing, fallback), billing.to(), fallback.to()});
//
// Names resolve against the nodes given to `router.to(...)`. An empty choice drops the
// message. An unknown name, or a node that is not a successor, fails that invocation:
// it becomes a FlowError naming the target (C5), and the flow keeps serving.
//
// A RoutingPolicy sees every decision before it is applied and may keep, veto (drop) or
// replace it; DictRoutingPolicy is a table (key -> target names) loadable from JSON, a
// file or an environment variable.
#pragma once

#include <penguiflow/core/flow.hpp>

#include <boost/json/value.hpp>

#include <any>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <unordered_map>
#include <vector>

namespace penguiflow {

/// A routing target: a node, or the name of one of the router's successors.
class Route {
 public:
  Route(Node node) : node_(std::move(node)), name_(node_->name()) {}
  Route(std::string name) : name_(std::move(name)) {}
  Route(const char* name) : name_(name) {}
  Route(std::string_view name) : name_(name) {}

  /// The node's name, or the name to resolve.
  const std::string& name() const { return name_; }
  /// The node, when the route was given as one.
  const Node* node() const { return node_ ? &*node_ : nullptr; }

 private:
  std::optional<Node> node_;
  std::string name_;
};

using Routes = std::vector<Route>;

/// What a routing policy is asked about. Valid only during the call.
struct RoutingRequest {
  const std::any& message;    // what the router received (a Message or a bare payload)
  const Message* envelope;    // `message` as a Message, or nullptr
  const std::string& node_name;  // the router's name
  const Routes& proposed;     // what the router chose
  const std::string& trace_id;   // "" when the message has none

  std::vector<std::string> proposed_names() const;
};

/// Decides, for every message a router routes, where it really goes. Implementations
/// must be thread-safe when one policy serves flows on several threads.
class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  /// nullopt: accept `request.proposed`; an empty list: drop the message (veto);
  /// otherwise the targets to use instead. May throw: the router invocation fails.
  virtual std::optional<Routes> select(const RoutingRequest& request) = 0;
};

/// A policy from a function.
std::shared_ptr<RoutingPolicy> make_routing_policy(
    std::function<std::optional<Routes>(const RoutingRequest&)> select);

/// Bad routing-policy configuration (malformed JSON, unset variable, unreadable file).
class RoutingPolicyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A routing table: a key function maps each request to a key (by default its trace
/// id, as upstream; `key_by_tenant()` / `key_by_topic()` are ready), and the table maps
/// keys to target names. An entry or default of nullopt accepts the router's proposal,
/// an empty list drops the message. Unmapped keys (and an empty key) use the default.
///
/// The table can be replaced while flows run (`update_mapping`, `set_default`):
/// thread-safe.
///
/// JSON form: {"key": "target" | ["t1", "t2"] | [] | null, ...}.
class DictRoutingPolicy : public RoutingPolicy {
 public:
  using Decision = std::optional<std::vector<std::string>>;
  using Mapping = std::unordered_map<std::string, Decision>;
  using KeyFn = std::function<std::string(const RoutingRequest&)>;

  explicit DictRoutingPolicy(Mapping mapping, Decision default_decision = std::nullopt, KeyFn key = {});

  /// Throws RoutingPolicyError naming the problem (not an object; a key whose value is
  /// not a string, a list of strings or null).
  static std::shared_ptr<DictRoutingPolicy> from_json(std::string_view json, Decision default_decision = std::nullopt,
                                                      KeyFn key = {});
  /// Reads the JSON from a file; RoutingPolicyError names the file.
  static std::shared_ptr<DictRoutingPolicy> from_json_file(const std::string& path,
                                                           Decision default_decision = std::nullopt, KeyFn key = {});
  /// Reads the JSON from environment variable `var`; RoutingPolicyError names the
  /// variable when it is unset or malformed.
  static std::shared_ptr<DictRoutingPolicy> from_env(const std::string& var, Decision default_decision = std::nullopt,
                                                     KeyFn key = {});
  /// Parses the JSON form (shared by the loaders).
  static Mapping parse_mapping(const boost::json::value& v, const std::string& where);

  static KeyFn key_by_trace_id();
  static KeyFn key_by_tenant();  // the envelope's headers.tenant ("" for bare payloads)
  static KeyFn key_by_topic();   // the envelope's headers.topic

  std::optional<Routes> select(const RoutingRequest& request) override;
  void update_mapping(Mapping mapping);
  void set_default(Decision decision);

 private:
  mutable std::mutex mu_;
  Mapping mapping_;
  Decision default_;
  KeyFn key_;
};

/// Options of a router node.
struct RouterOptions {
  std::shared_ptr<RoutingPolicy> policy;  // none: the router's choice stands
  NodePolicy node_policy{};               // timeout / retries of the router node itself
};

namespace detail {
/// Name -> successor table of a router, filled by Router::to.
struct RouterTable {
  mutable std::mutex mu;
  std::vector<Node> nodes;
};
/// The router's choice for one message. May rewrite the message's payload in place
/// (union_router forwards the typed payload it decoded from JSON).
using ChooseFn = std::function<Routes(std::any& msg, Message* envelope, const std::string& node)>;
Node make_router_node(std::string name, ChooseFn choose, std::shared_ptr<RouterTable> table, RouterOptions options);
}  // namespace detail

/// A router node. Use it like any Node; its `to(...)` also records the successors that
/// route names resolve against.
class Router : public Node {
 public:
  Router(Node node, std::shared_ptr<detail::RouterTable> table) : Node(std::move(node)), table_(std::move(table)) {}

  template <class... N>
  Adjacency to(const N&... succ) const {
    (remember(succ), ...);
    return Node::to(succ...);
  }
  Adjacency to(const std::vector<Node>& succ) const {
    for (auto& s : succ) remember(s);
    return Node::to(succ);
  }

 private:
  void remember(const Node& n) const;
  std::shared_ptr<detail::RouterTable> table_;
};

namespace detail {

template <class R>
Routes to_routes(R&& r) {
  using U = std::remove_cvref_t<R>;
  if constexpr (std::is_same_v<U, Routes>) {
    return std::forward<R>(r);
  } else if constexpr (is_optional<U>::value) {
    if (!r) return {};
    return to_routes(std::move(*r));
  } else if constexpr (is_vector<U>::value) {
    Routes out;
    for (auto& x : r) out.emplace_back(x);
    return out;
  } else {
    return Routes{Route(std::forward<R>(r))};
  }
}

template <class F>
struct unary_arg : unary_arg<decltype(&F::operator())> {};
template <class C, class R, class A>
struct unary_arg<R (C::*)(A) const> { using type = std::remove_cvref_t<A>; };
template <class C, class R, class A>
struct unary_arg<R (C::*)(A)> { using type = std::remove_cvref_t<A>; };
template <class R, class A>
struct unary_arg<R (*)(A)> { using type = std::remove_cvref_t<A>; };

[[noreturn]] void throw_router_input(const std::string& node, const std::string& expected, const std::any& got);

/// Calls `fn` with what it asks for: the raw std::any, the Message, or the payload as T
/// (a Message's payload or a bare value; JSON is decoded into a described T).
template <class Fn>
Routes call_predicate(Fn& fn, const std::any& msg, const Message* env, const std::string& node) {
  using A = typename unary_arg<Fn>::type;
  if constexpr (std::is_same_v<A, std::any>) {
    return to_routes(fn(msg));
  } else if constexpr (std::is_same_v<A, Message>) {
    if (!env) throw_router_input(node, "a Message", msg);
    return to_routes(fn(*env));
  } else {
    const std::any& payload = env ? env->payload : msg;
    if (auto* p = std::any_cast<A>(&payload)) return to_routes(fn(*p));
    if constexpr (!std::is_same_v<A, boost::json::value> && boost::describe::has_describe_members<A>::value) {
      if (auto* j = std::any_cast<boost::json::value>(&payload)) return to_routes(fn(decode<A>(*j, node)));
    }
    throw_router_input(node, type_name<A>(), payload);
  }
}

}  // namespace detail

/// A router whose `fn` picks the targets of each message (C13). `fn` takes the message
/// as `const std::any&`, `const Message&` or `const T&` (the payload, of a Message or
/// bare; JSON decoded when T is described) and returns a Node, a name, a vector of
/// either, `Routes`, or an optional of those (nullopt or empty: drop). `fn` runs on the
/// flow's thread and must not block. An exception from `fn` fails the invocation.
template <class Fn>
Router predicate_router(std::string name, Fn fn, RouterOptions options = {}) {
  auto table = std::make_shared<detail::RouterTable>();
  detail::ChooseFn choose = [fn = std::move(fn)](std::any& msg, Message* env, const std::string& node) mutable {
    return detail::call_predicate(fn, msg, env, node);
  };
  return Router(detail::make_router_node(std::move(name), std::move(choose), table, std::move(options)), table);
}

/// One case of a union_router: payloads of kind `kind` / C++ type `type` go to `target`.
struct UnionCase {
  Node target;
  std::string kind;                         // JSON "kind" / "type" value
  std::optional<std::type_index> type;      // C++ payload type, when typed
  std::string type_name;
  /// Decodes a JSON payload into the typed payload (field-level errors); empty: JSON
  /// payloads are forwarded as they are.
  std::function<std::any(const boost::json::value&, const std::string& node)> decode;
};

/// Payloads of C++ type T (and JSON payloads whose "kind" is `kind`, default the
/// target's name, decoded into T) go to `target`.
template <class T>
UnionCase when(Node target, std::string kind = {}) {
  UnionCase c{target, kind.empty() ? target.name() : std::move(kind), std::type_index(typeid(T)), type_name<T>(), {}};
  if constexpr (!std::is_same_v<T, boost::json::value> &&
                (boost::describe::has_describe_members<T>::value || boost::json::has_value_to<T>::value)) {
    c.decode = [](const boost::json::value& v, const std::string& node) -> std::any { return decode<T>(v, node); };
  }
  register_json_type<T>();
  return c;
}

/// JSON payloads whose "kind" is `kind` go to `target`, undecoded.
UnionCase when_kind(std::string kind, Node target);

/// A router over a closed set of payload kinds (C13), upstream's union_router.
///
/// The kind of a message is its payload's (a Message's payload, or the bare value):
///  - a C++ value: its dynamic type, matched against the cases' `when<T>` types;
///  - a JSON object: its "kind" field, else its "type" field (a string), matched against
///    the cases' kinds; a typed case decodes the JSON into T (field-level errors), so the
///    target receives the typed payload inside the same envelope.
/// Exactly one target is proposed (then the policy, if any, applies). No matching case
/// fails the invocation with an error naming the kind or type and the known ones.
/// Throws FlowUsageError for no cases or a duplicate kind / type.
Router union_router(std::string name, std::vector<UnionCase> cases, RouterOptions options = {});

}  // namespace penguiflow
