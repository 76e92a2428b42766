// FlowEvent (C11): one record per node lifecycle step, delivered in order to every
// middleware.
#pragma once

#include <boost/json/object.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace penguiflow {

enum class EventType {
  node_start,
  node_success,
  node_error,
  node_timeout,
  node_retry,
  node_failed,
  deadline_skip,
  trace_cancel_start,
  trace_cancel_drop,
  node_trace_cancelled,
  trace_cancel_finish,
};

std::string_view to_string(EventType t);

struct FlowEvent {
  EventType type;
  double ts = 0;                 // unix seconds
  std::string node_name;         // empty for trace-level events
  std::string node_id;
  std::string trace_id;          // empty when the message had none
  int attempt = 0;
  std::optional<double> latency_ms;
  std::size_t queue_depth_in = 0;
  std::size_t queue_depth_out = 0;
  std::size_t outgoing_edges = 0;
  int queue_maxsize = 0;
  std::size_t trace_pending = 0;
  std::size_t trace_inflight = 0;
  bool trace_cancelled = false;
  boost::json::object extra;     // e.g. {"error": ..., "dropped": n, "backoff_s": ...}

  /// {"event": "node_success", "ts": ..., "node_name": ..., ...}
  boost::json::object to_json() const;
  /// Numeric samples for metrics: latency_ms, queue_depth_in, queue_depth_out,
  /// trace_pending, trace_inflight, attempt (never labelled by trace id).
  std::vector<std::pair<std::string_view, double>> metric_samples() const;
};

/// Receives every event, in order, on the flow's thread. A middleware that throws is
/// logged and does not disturb the flow.
using Middleware = std::function<void(const FlowEvent&)>;

/// A ready middleware: logs every event as a structured record (C11) at `level`
/// ("debug", "info", ...).
Middleware log_flow_events(std::string level = "info");

}  // namespace penguiflow
