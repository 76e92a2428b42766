// Router nodes (predicate_router, union_router) and routing policies (C13).
#include <penguiflow/patterns/routers.hpp>

#include <boost/json/parse.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace penguiflow {

namespace json = boost::json;

std::vector<std::string> RoutingRequest::proposed_names() const {
  std::vector<std::string> out;
  for (auto& r : proposed) out.push_back(r.name());
  return out;
}

namespace {

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

class FunctionPolicy : public RoutingPolicy {
 public:
  explicit FunctionPolicy(std::function<std::optional<Routes>(const RoutingRequest&)> fn) : fn_(std::move(fn)) {}
  std::optional<Routes> select(const RoutingRequest& r) override { return fn_(r); }

 private:
  std::function<std::optional<Routes>(const RoutingRequest&)> fn_;
};

}  // namespace

std::shared_ptr<RoutingPolicy> make_routing_policy(std::function<std::optional<Routes>(const RoutingRequest&)> select) {
  if (!select) throw FlowUsageError("make_routing_policy: empty function");
  return std::make_shared<FunctionPolicy>(std::move(select));
}

// ---------------------------------------------------------------- DictRoutingPolicy

DictRoutingPolicy::DictRoutingPolicy(Mapping mapping, Decision default_decision, KeyFn key)
    : mapping_(std::move(mapping)), default_(std::move(default_decision)), key_(key ? std::move(key) : key_by_trace_id()) {}

DictRoutingPolicy::Mapping DictRoutingPolicy::parse_mapping(const json::value& v, const std::string& where) {
  if (!v.is_object())
    throw RoutingPolicyError("routing policy from " + where + ": expected a JSON object of key -> targets, got " +
                             std::string(json_kind(v)));
  Mapping out;
  for (auto& kv : v.get_object()) {
    const json::value& t = kv.value();
    std::string key(kv.key());
    if (t.is_null()) {
      out.emplace(key, std::nullopt);
    } else if (t.is_string()) {
      out.emplace(key, std::vector<std::string>{std::string(t.get_string())});
    } else if (t.is_array()) {
      std::vector<std::string> names;
      for (auto& n : t.get_array()) {
        if (!n.is_string())
          throw RoutingPolicyError("routing policy from " + where + ": key '" + key +
                                   "': targets must be node names (strings), got " + std::string(json_kind(n)));
        names.emplace_back(n.get_string());
      }
      out.emplace(key, std::move(names));
    } else {
      throw RoutingPolicyError("routing policy from " + where + ": key '" + key +
                               "': expected a node name, a list of names or null, got " + std::string(json_kind(t)));
    }
  }
  return out;
}

std::shared_ptr<DictRoutingPolicy> DictRoutingPolicy::from_json(std::string_view text, Decision default_decision,
                                                                KeyFn key) {
  return std::make_shared<DictRoutingPolicy>(
      [&] {
        boost::system::error_code ec;
        json::value v = json::parse(text, ec);
        if (ec) throw RoutingPolicyError("routing policy from JSON: malformed JSON: " + ec.message());
        return parse_mapping(v, "JSON");
      }(),
      std::move(default_decision), std::move(key));
}

std::shared_ptr<DictRoutingPolicy> DictRoutingPolicy::from_json_file(const std::string& path, Decision default_decision,
                                                                     KeyFn key) {
  std::ifstream in(path);
  if (!in) throw RoutingPolicyError("routing policy file '" + path + "' cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  if (ec) throw RoutingPolicyError("routing policy file '" + path + "': malformed JSON: " + ec.message());
  return std::make_shared<DictRoutingPolicy>(parse_mapping(v, "file '" + path + "'"), std::move(default_decision),
                                             std::move(key));
}

std::shared_ptr<DictRoutingPolicy> DictRoutingPolicy::from_env(const std::string& var, Decision default_decision,
                                                               KeyFn key) {
  const char* raw = std::getenv(var.c_str());
  if (!raw) throw RoutingPolicyError("routing policy: environment variable '" + var + "' is not set");
  boost::system::error_code ec;
  json::value v = json::parse(raw, ec);
  if (ec) throw RoutingPolicyError("routing policy from environment variable '" + var + "': malformed JSON: " + ec.message());
  return std::make_shared<DictRoutingPolicy>(parse_mapping(v, "environment variable '" + var + "'"),
                                             std::move(default_decision), std::move(key));
}

DictRoutingPolicy::KeyFn DictRoutingPolicy::key_by_trace_id() {
  return [](const RoutingRequest& r) { return r.trace_id; };
}
DictRoutingPolicy::KeyFn DictRoutingPolicy::key_by_tenant() {
  return [](const RoutingRequest& r) { return r.envelope ? r.envelope->headers.tenant : std::string(); };
}
DictRoutingPolicy::KeyFn DictRoutingPolicy::key_by_topic() {
  return [](const RoutingRequest& r) { return r.envelope ? r.envelope->headers.topic : std::string(); };
}

std::optional<Routes> DictRoutingPolicy::select(const RoutingRequest& request) {
  std::string key = key_(request);
  Decision d;
  {
    std::lock_guard lock(mu_);
    auto it = key.empty() ? mapping_.end() : mapping_.find(key);
    d = it == mapping_.end() ? default_ : it->second;
  }
  if (!d) return std::nullopt;
  Routes out;
  for (auto& n : *d) out.emplace_back(std::move(n));
  return out;
}

void DictRoutingPolicy::update_mapping(Mapping mapping) {
  std::lock_guard lock(mu_);
  mapping_ = std::move(mapping);
}

void DictRoutingPolicy::set_default(Decision decision) {
  std::lock_guard lock(mu_);
  default_ = std::move(decision);
}

// ---------------------------------------------------------------- router nodes

void Router::remember(const Node& n) const {
  std::lock_guard lock(table_->mu);
  for (auto& known : table_->nodes)
    if (known == n) return;
  table_->nodes.push_back(n);
}

namespace detail {

void throw_router_input(const std::string& node, const std::string& expected, const std::any& got) {
  throw ValidationError(node, "<input>",
                        "router expects " + expected + ", got " + boost::core::demangle(got.type().name()));
}

namespace {

/// Resolves routes to the router's successors. Throws FlowUsageError naming an unknown
/// target (the invocation fails; the flow goes on).
Targets resolve(const Routes& routes, const RouterTable& table, const std::string& router) {
  Targets out;
  out.reserve(routes.size());
  std::lock_guard lock(table.mu);
  for (const Route& r : routes) {
    if (const Node* n = r.node()) {
      out.push_back(*n);
      continue;
    }
    auto it = std::find_if(table.nodes.begin(), table.nodes.end(), [&](const Node& n) { return n.name() == r.name(); });
    if (it == table.nodes.end()) {
      std::vector<std::string> known;
      for (auto& n : table.nodes) known.push_back(n.name());
      throw FlowUsageError("router '" + router + "': unknown target '" + r.name() + "' (its successors: " +
                           join_names(known) + ")");
    }
    out.push_back(*it);
  }
  return out;
}

}  // namespace

Node make_router_node(std::string name, ChooseFn choose, std::shared_ptr<RouterTable> table, RouterOptions options) {
  auto policy = options.policy;
  auto fn = [choose = std::move(choose), table, policy](std::any msg, Context& ctx) -> Task<void> {
    Message* env = std::any_cast<Message>(&msg);
    Routes routes = choose(msg, env, ctx.node_name());
    if (policy) {
      const std::string& trace = env && !env->trace_id.empty() ? env->trace_id : ctx.trace_id();
      RoutingRequest request{msg, env, ctx.node_name(), routes, trace};
      if (auto replaced = policy->select(request)) routes = std::move(*replaced);
    }
    if (routes.empty()) co_return;  // dropped
    Targets targets = resolve(routes, *table, ctx.node_name());
    co_await ctx.emit(std::move(msg), std::move(targets));
  };
  return Node(std::move(name), std::move(fn), NodeOptions{.policy = options.node_policy});
}

}  // namespace detail

// ---------------------------------------------------------------- union_router

UnionCase when_kind(std::string kind, Node target) {
  if (kind.empty()) throw FlowUsageError("when_kind: empty kind for target '" + target.name() + "'");
  return UnionCase{std::move(target), std::move(kind), std::nullopt, {}, {}};
}

Router union_router(std::string name, std::vector<UnionCase> cases, RouterOptions options) {
  if (cases.empty()) throw FlowUsageError("union_router '" + name + "': needs at least one case");
  for (std::size_t i = 0; i < cases.size(); ++i)
    for (std::size_t j = 0; j < i; ++j) {
      if (cases[i].kind == cases[j].kind)
        throw FlowUsageError("union_router '" + name + "': kind '" + cases[i].kind + "' is listed twice");
      if (cases[i].type && cases[i].type == cases[j].type)
        throw FlowUsageError("union_router '" + name + "': type " + cases[i].type_name + " is listed twice");
    }
  std::string known_kinds, known_types;
  for (auto& c : cases) {
    known_kinds += (known_kinds.empty() ? "" : ", ") + c.kind;
    if (c.type) known_types += (known_types.empty() ? "" : ", ") + c.type_name;
  }
  auto shared = std::make_shared<const std::vector<UnionCase>>(std::move(cases));

  // Picks the case by the payload's kind: JSON "kind"/"type", else the C++ type.
  detail::ChooseFn choose = [shared, known_kinds, known_types](std::any& msg, Message* env,
                                                               const std::string& node) -> Routes {
    std::any& payload = env ? env->payload : msg;
    const json::object* obj = nullptr;
    if (auto* j = std::any_cast<json::value>(&payload); j && j->is_object()) obj = &j->get_object();
    else if (auto* o = std::any_cast<json::object>(&payload)) obj = o;
    if (obj) {
      const json::value* kind = obj->if_contains("kind");
      if (!kind || !kind->is_string()) kind = obj->if_contains("type");
      if (!kind || !kind->is_string())
        throw ValidationError(node, "kind", "union_router: JSON payload has no string 'kind' or 'type' field (known kinds: " +
                                                known_kinds + ")");
      std::string k(kind->get_string());
      for (auto& c : *shared)
        if (c.kind == k) {
          // A typed case: the target receives the decoded payload in the same envelope.
          if (c.decode) payload = c.decode(json::value(*obj), node);
          return Routes{Route(c.target)};
        }
      throw ValidationError(node, "kind", "union_router: unknown kind '" + k + "' (known kinds: " + known_kinds + ")");
    }
    for (auto& c : *shared)
      if (c.type && *c.type == std::type_index(payload.type())) return Routes{Route(c.target)};
    throw ValidationError(node, "<payload>", "union_router: no route for payload type " +
                                                 boost::core::demangle(payload.type().name()) + " (routed types: " +
                                                 (known_types.empty() ? std::string("none") : known_types) + ")");
  };
  auto table = std::make_shared<detail::RouterTable>();
  return Router(detail::make_router_node(std::move(name), std::move(choose), table, std::move(options)), table);
}

}  // namespace penguiflow
