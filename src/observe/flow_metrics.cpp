// FlowEvents -> node metrics (W10). Labels are {flow, node[, event]}, never the trace id.
#include <penguiflow/observe/metrics.hpp>

#include <mutex>
#include <unordered_map>

namespace penguiflow::observe {

namespace {

constexpr std::string_view kLatency = "penguiflow_node_latency_ms";
constexpr std::string_view kLatencyHelp = "Latency of finished node attempts (success, error or timeout), in ms.";
constexpr std::string_view kEvents = "penguiflow_node_events_total";
constexpr std::string_view kEventsHelp =
    "Node lifecycle events: success, error, timeout, retry, failed, deadline_skip, cancelled.";
constexpr std::string_view kDropped = "penguiflow_node_cancel_dropped_total";
constexpr std::string_view kDroppedHelp = "Queued messages dropped from a node's inbox by trace cancellation.";
constexpr std::string_view kCancels = "penguiflow_trace_cancellations_total";
constexpr std::string_view kCancelsHelp = "Traces cancelled.";

// Every series of one node, resolved once so an event is only atomic adds.
struct NodeSeries {
  Histogram* latency;
  Counter* success;
  Counter* error;
  Counter* timeout;
  Counter* retry;
  Counter* failed;
  Counter* deadline_skip;
  Counter* cancelled;
  Counter* dropped;
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct FlowMetrics {
  Registry* registry;
  std::string flow;
  Counter* cancellations;
  // The middleware may be shared by flows on several shards: the cache is locked. The
  // lock is held for a hash lookup only; the registry is consulted once per node.
  std::mutex mu;
  std::unordered_map<std::string, NodeSeries, StringHash, std::equal_to<>> nodes;

  const NodeSeries& node(std::string_view name) {
    std::lock_guard lock(mu);
    if (auto it = nodes.find(name); it != nodes.end()) return it->second;
    std::string n(name);
    auto event = [&](const char* ev) {
      Labels l{{"flow", flow}, {"node", n}, {"event", ev}};
      return &registry->counter(kEvents, kEventsHelp, l);
    };
    Labels fn{{"flow", flow}, {"node", n}};
    NodeSeries s{&registry->histogram(kLatency, kLatencyHelp, fn),
                 event("success"),
                 event("error"),
                 event("timeout"),
                 event("retry"),
                 event("failed"),
                 event("deadline_skip"),
                 event("cancelled"),
                 &registry->counter(kDropped, kDroppedHelp, fn)};
    return nodes.emplace(std::move(n), s).first->second;
  }
};

}  // namespace

Middleware metrics_middleware(Registry& registry, std::string flow_name) {
  auto m = std::make_shared<FlowMetrics>();
  m->registry = &registry;
  m->flow = std::move(flow_name);
  Labels fl{{"flow", m->flow}};
  m->cancellations = &registry.counter(kCancels, kCancelsHelp, fl);
  return [m](const FlowEvent& e) {
    switch (e.type) {
      case EventType::node_start:
      case EventType::trace_cancel_finish:
        return;
      case EventType::trace_cancel_start:
        m->cancellations->inc();
        return;
      default:
        break;
    }
    if (e.node_name.empty()) return;
    const NodeSeries& s = m->node(e.node_name);
    switch (e.type) {
      case EventType::node_success:
        s.success->inc();
        if (e.latency_ms) s.latency->observe(*e.latency_ms);
        break;
      case EventType::node_error:
        s.error->inc();
        if (e.latency_ms) s.latency->observe(*e.latency_ms);
        break;
      case EventType::node_timeout:
        s.timeout->inc();
        if (e.latency_ms) s.latency->observe(*e.latency_ms);
        break;
      case EventType::node_retry: s.retry->inc(); break;
      // node_failed repeats the last attempt's latency: counted, not observed again.
      case EventType::node_failed: s.failed->inc(); break;
      case EventType::deadline_skip: s.deadline_skip->inc(); break;
      case EventType::node_trace_cancelled: s.cancelled->inc(); break;
      case EventType::trace_cancel_drop:
        if (auto* d = e.extra.if_contains("dropped"); d && d->is_number()) {
          auto n = d->to_number<double>();
          if (n > 0) s.dropped->inc(n);
        }
        break;
      default: break;
    }
  };
}

}  // namespace penguiflow::observe
