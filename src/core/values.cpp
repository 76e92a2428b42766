// Messages, errors, events and JSON conversion: the plain-data parts of core.
#include <penguiflow/core/errors.hpp>
#include <penguiflow/core/events.hpp>
#include <penguiflow/core/json.hpp>
#include <penguiflow/core/logging.hpp>
#include <penguiflow/core/message.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <unordered_map>

namespace penguiflow {

namespace json = boost::json;

std::string random_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int half = 0; half < 2; ++half) {
    auto v = rng();
    for (int i = 0; i < 16; ++i) out[half * 16 + i] = hex[(v >> (i * 4)) & 0xf];
  }
  return out;
}

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

ValidationError::ValidationError(std::string node, std::string field, const std::string& problem)
    : std::runtime_error("validation failed in node '" + node + "', field '" + field + "': " + problem),
      node_(std::move(node)),
      field_(std::move(field)) {}

std::string_view to_string(FlowErrorCode code) {
  switch (code) {
    case FlowErrorCode::node_exception: return "NODE_EXCEPTION";
    case FlowErrorCode::node_timeout: return "NODE_TIMEOUT";
    case FlowErrorCode::validation_error: return "VALIDATION_ERROR";
  }
  return "UNKNOWN";
}

json::value FlowError::to_json() const {
  return json::object{{"trace_id", trace_id},       {"node_name", node_name}, {"node_id", node_id},
                      {"code", to_string(code)},    {"message", message},     {"exception_type", exception_type},
                      {"attempts", attempts},       {"latency_ms", latency_ms}};
}

std::string_view to_string(EventType t) {
  switch (t) {
    case EventType::node_start: return "node_start";
    case EventType::node_success: return "node_success";
    case EventType::node_error: return "node_error";
    case EventType::node_timeout: return "node_timeout";
    case EventType::node_retry: return "node_retry";
    case EventType::node_failed: return "node_failed";
    case EventType::deadline_skip: return "deadline_skip";
    case EventType::trace_cancel_start: return "trace_cancel_start";
    case EventType::trace_cancel_drop: return "trace_cancel_drop";
    case EventType::node_trace_cancelled: return "node_trace_cancelled";
    case EventType::trace_cancel_finish: return "trace_cancel_finish";
  }
  return "unknown";
}

json::object FlowEvent::to_json() const {
  json::object o{{"event", penguiflow::to_string(type)},
                 {"ts", ts},
                 {"node_name", node_name},
                 {"node_id", node_id},
                 {"trace_id", trace_id},
                 {"attempt", attempt},
                 {"queue_depth_in", queue_depth_in},
                 {"queue_depth_out", queue_depth_out},
                 {"outgoing_edges", outgoing_edges},
                 {"queue_maxsize", queue_maxsize},
                 {"trace_pending", trace_pending},
                 {"trace_inflight", trace_inflight},
                 {"trace_cancelled", trace_cancelled}};
  if (latency_ms) o["latency_ms"] = *latency_ms;
  for (auto& kv : extra) o[kv.key()] = kv.value();
  return o;
}

std::vector<std::pair<std::string_view, double>> FlowEvent::metric_samples() const {
  std::vector<std::pair<std::string_view, double>> out{
      {"queue_depth_in", double(queue_depth_in)},  {"queue_depth_out", double(queue_depth_out)},
      {"trace_pending", double(trace_pending)},    {"trace_inflight", double(trace_inflight)},
      {"attempt", double(attempt)}};
  if (latency_ms) out.emplace_back("latency_ms", *latency_ms);
  return out;
}

Middleware log_flow_events(std::string level) {
  LogLevel lvl = parse_log_level(level);
  return [lvl](const FlowEvent& ev) {
    if (log_enabled(lvl)) log_record(lvl, to_string(ev.type), ev.to_json());
  };
}

// ---------------------------------------------------------------- JSON

std::string_view json_kind(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "boolean";
    case json::kind::int64:
    case json::kind::uint64: return "integer";
    case json::kind::double_: return "number";
    case json::kind::string: return "string";
    case json::kind::array: return "array";
    case json::kind::object: return "object";
  }
  return "unknown";
}

namespace detail {

void throw_field_error(const std::string& node, const std::string& path, std::string problem) {
  throw ValidationError(node.empty() ? std::string("<decode>") : node, path, problem);
}

namespace {
struct Registry {
  std::shared_mutex mu;
  std::unordered_map<std::type_index, ToJsonFn> fns;
};
Registry& registry() {
  static Registry r;
  return r;
}
}  // namespace

void register_to_json(std::type_index type, ToJsonFn fn) {
  auto& r = registry();
  std::unique_lock lock(r.mu);
  r.fns.emplace(type, fn);
}

}  // namespace detail

json::value to_json(const std::any& p) {
  if (!p.has_value()) return nullptr;
  if (auto* v = std::any_cast<json::value>(&p)) return *v;
  if (auto* v = std::any_cast<json::object>(&p)) return *v;
  if (auto* v = std::any_cast<std::string>(&p)) return json::string(*v);
  if (auto* v = std::any_cast<const char*>(&p)) return json::string(*v);
  if (auto* v = std::any_cast<int>(&p)) return *v;
  if (auto* v = std::any_cast<long>(&p)) return *v;
  if (auto* v = std::any_cast<long long>(&p)) return *v;
  if (auto* v = std::any_cast<double>(&p)) return *v;
  if (auto* v = std::any_cast<bool>(&p)) return *v;
  if (auto* v = std::any_cast<FinalAnswer>(&p)) return json::object{{"text", v->text}};
  if (auto* v = std::any_cast<StreamChunk>(&p))
    return json::object{{"stream_id", v->stream_id}, {"seq", v->seq}, {"text", v->text}, {"done", v->done}, {"meta", v->meta}};
  if (auto* v = std::any_cast<FlowError>(&p)) return json::object{{"error", v->to_json()}};
  if (auto* m = std::any_cast<Message>(&p)) {
    json::object o{{"payload", to_json(m->payload)},
                   {"headers", json::object{{"tenant", m->headers.tenant}, {"topic", m->headers.topic}, {"priority", m->headers.priority}}},
                   {"trace_id", m->trace_id},
                   {"ts", m->ts},
                   {"meta", m->meta}};
    if (m->deadline_s) o["deadline_s"] = *m->deadline_s;
    else o["deadline_s"] = nullptr;
    return o;
  }
  auto& r = detail::registry();
  std::shared_lock lock(r.mu);
  if (auto it = r.fns.find(std::type_index(p.type())); it != r.fns.end()) return it->second(p);
  throw std::invalid_argument("no JSON conversion for payload type " + boost::core::demangle(p.type().name()) +
                              " (describe it with BOOST_DESCRIBE_STRUCT or call register_json_type<T>())");
}

}  // namespace penguiflow
