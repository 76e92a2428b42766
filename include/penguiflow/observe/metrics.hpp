// Metrics (W10): counters, gauges and histograms in a registry that renders the
// Prometheus text exposition format 0.0.4, and a middleware that turns FlowEvents into
// node metrics.
//
// Every metric object is thread-safe (atomics only) and lives as long as its Registry,
// so the hot path resolves a metric once and then touches nothing but atomics:
//
//   penguiflow::observe::Registry registry;
//   auto& done = registry.counter("penguiflow_jobs_total", "Jobs settled.", {{"outcome", "done"}});
//   done.inc();
//   flow.add_middleware(penguiflow::observe::metrics_middleware(registry, "quickstart"));
//   std::string text = registry.render_prometheus();
//
// No Asio here: the HTTP endpoint that serves the registry is observe/http.hpp.
#pragma once

#include <penguiflow/core/events.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace penguiflow::observe {

/// Label names and values of one series, e.g. {{"flow", "quickstart"}, {"node", "triage"}}.
/// Order does not matter: series identity and rendering use the names sorted.
using Labels = std::vector<std::pair<std::string, std::string>>;

/// A monotonically increasing value. Thread-safe (one atomic add per inc).
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  /// Adds `v` (>= 0). Throws std::invalid_argument for a negative or NaN `v`.
  void inc(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// A value that goes up and down. Thread-safe.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  /// Adds `v` (may be negative) atomically.
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// Counts observations into fixed buckets (upper bounds, inclusive: `le`) plus an
/// implicit +Inf bucket, and sums them. Thread-safe: observe() is a binary search and
/// two atomic adds. The count is the sum of the bucket counts, so a rendered +Inf
/// bucket always equals _count even while other threads observe.
class Histogram {
 public:
  /// `buckets`: finite, strictly increasing upper bounds (may be empty: only +Inf).
  /// Throws std::invalid_argument otherwise.
  explicit Histogram(std::vector<double> buckets);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  /// Records `v`. NaN is ignored.
  void observe(double v);

  const std::vector<double>& buckets() const { return bounds_; }
  /// Non-cumulative counts, one per bound plus the +Inf bucket last.
  std::vector<std::uint64_t> bucket_counts() const;
  std::uint64_t count() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

/// Upper bounds for latencies in milliseconds: 0.1 ms … 60 s.
std::vector<double> default_latency_buckets_ms();
/// Upper bounds for latencies in seconds: 1 ms … 10 min.
std::vector<double> default_latency_buckets_s();

/// Owns metrics, keyed by family name and label set. Thread-safe: registering takes a
/// lock (resolve metrics once, keep the reference); updating a metric is lock-free;
/// rendering takes the lock and reads atomics. Metrics live as long as the registry;
/// the same name and labels always return the same object.
///
/// Throws std::invalid_argument when a name or label name is not a valid Prometheus
/// name, a label name repeats or is reserved (`le`, names starting with `__`), when a
/// label is named `trace_id` (W10: a trace id is unbounded cardinality), when a name is
/// reused with another type, or a histogram is reused with other buckets.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels = {},
                       std::vector<double> buckets = default_latency_buckets_ms());

  /// Prometheus text exposition format 0.0.4: families sorted by name, HELP/TYPE once
  /// per family, series sorted by labels, escaped label values, histograms as
  /// cumulative _bucket{le=...} (ending with le="+Inf") plus _sum and _count. Runs the
  /// on_scrape callbacks first (one that throws is logged and skipped).
  std::string render_prometheus() const;

  /// Registers `fn` to run right before every render (e.g. to refresh queue-depth
  /// gauges). It runs on the rendering thread, so what it reads must be thread-safe; it
  /// may register and update metrics.
  void on_scrape(std::function<void()> fn);

 private:
  enum class Kind { counter, gauge, histogram };
  struct Series;
  struct Family;
  Family& family_locked(std::string_view name, std::string_view help, Kind kind, const std::vector<double>* buckets);
  Series& series_locked(Family& family, const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
  mutable std::mutex scrape_mu_;
  std::vector<std::function<void()>> scrape_hooks_;
};

/// FlowEvents -> metrics (W10), all labelled {flow, node} and never by trace id:
///  - penguiflow_node_latency_ms (histogram): latency of every finished attempt
///    (node_success, node_error, node_timeout);
///  - penguiflow_node_events_total{event} (counter): event = success, error, timeout,
///    retry, failed, deadline_skip, cancelled (node_trace_cancelled);
///  - penguiflow_node_cancel_dropped_total (counter): queued messages dropped by trace
///    cancellation;
///  - penguiflow_trace_cancellations_total{flow} (counter): traces cancelled.
/// A node's series are resolved on its first event and cached in the middleware, so each
/// event costs one short (normally uncontended) locked lookup and an atomic add or two. Safe to call
/// from several threads at once (one copy shared by flows on different shards, or one
/// middleware per flow); flows with the same `flow_name` share (sum into) the series.
Middleware metrics_middleware(Registry& registry, std::string flow_name);

}  // namespace penguiflow::observe
