// Metric types, the registry and the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/). Hand-written rather
// than Debian's prometheus-cpp 1.0: its Histogram::Observe takes a mutex (shards would
// contend on every node event), its pull server is CivetWeb (we serve with Beast on our
// own loop), and the text format is ~100 lines.
#include <penguiflow/observe/metrics.hpp>

#include <penguiflow/core/logging.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace penguiflow::observe {

// ---------------------------------------------------------------- metric types

void Counter::inc(double v) {
  if (!(v >= 0)) throw std::invalid_argument("Counter::inc: a counter only goes up (got " + std::to_string(v) + ")");
  value_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> buckets) : bounds_(std::move(buckets)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]))
      throw std::invalid_argument("Histogram: bucket bounds must be finite (+Inf is implicit)");
    if (i > 0 && !(bounds_[i] > bounds_[i - 1]))
      throw std::invalid_argument("Histogram: bucket bounds must be strictly increasing");
  }
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  // `le` is inclusive: the first bound >= v.
  auto idx = std::size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[idx].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::bucket_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

std::uint64_t Histogram::count() const {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) n += counts_[i].load(std::memory_order_relaxed);
  return n;
}

std::vector<double> default_latency_buckets_ms() {
  return {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000};
}

std::vector<double> default_latency_buckets_s() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

// ---------------------------------------------------------------- text format helpers

namespace {

bool valid_metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool valid_label_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Label values escape backslash, double quote and line feed; HELP text escapes
// backslash and line feed only.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '"':
        if (quote) out += "\\\"";
        else out += c;
        break;
      default: out += c;
    }
  }
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
    out.append(buf, r.ptr);
  }
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

std::string_view kind_name(int kind) {
  switch (kind) {
    case 0: return "counter";
    case 1: return "gauge";
    default: return "histogram";
  }
}

}  // namespace

// ---------------------------------------------------------------- registry

struct Registry::Series {
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
};

struct Registry::Family {
  std::string name;
  std::string help;
  Kind kind;
  std::vector<double> buckets;  // histograms only
  // Key: the rendered label set (`a="x",b="y"`, names sorted, values escaped). Escaping
  // is injective, so the key identifies the series and is also what gets printed.
  std::map<std::string, Series, std::less<>> series;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family_locked(std::string_view name, std::string_view help, Kind kind,
                                          const std::vector<double>* buckets) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    if (!valid_metric_name(name))
      throw std::invalid_argument("metrics: invalid metric name '" + std::string(name) + "'");
    auto fam = std::make_unique<Family>();
    fam->name = std::string(name);
    fam->help = std::string(help);
    fam->kind = kind;
    if (buckets) {
      Histogram probe(*buckets);  // validates the bounds once, here
      fam->buckets = *buckets;
    }
    it = families_.emplace(fam->name, std::move(fam)).first;
    return *it->second;
  }
  Family& fam = *it->second;
  if (fam.kind != kind)
    throw std::invalid_argument("metrics: '" + std::string(name) + "' is already registered as a " +
                                std::string(kind_name(int(fam.kind))) + ", not a " +
                                std::string(kind_name(int(kind))));
  if (buckets && *buckets != fam.buckets)
    throw std::invalid_argument("metrics: histogram '" + std::string(name) +
                                "' is already registered with other buckets");
  return fam;
}

Registry::Series& Registry::series_locked(Family& family, const Labels& labels) {
  std::vector<const std::pair<std::string, std::string>*> sorted;
  sorted.reserve(labels.size());
  for (auto& l : labels) {
    const std::string& n = l.first;
    if (!valid_label_name(n) || n.starts_with("__") || n == "le")
      throw std::invalid_argument("metrics: invalid or reserved label name '" + n + "' on '" + family.name + "'");
    if (n == "trace_id")
      throw std::invalid_argument("metrics: '" + family.name +
                                  "' may not be labelled by trace_id (unbounded cardinality, W10)");
    sorted.push_back(&l);
  }
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  std::string key;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (i > 0 && sorted[i]->first == sorted[i - 1]->first)
      throw std::invalid_argument("metrics: label '" + sorted[i]->first + "' repeats on '" + family.name + "'");
    if (i > 0) key += ',';
    key += sorted[i]->first;
    key += "=\"";
    append_escaped(key, sorted[i]->second, true);
    key += '"';
  }
  auto it = family.series.find(key);
  if (it != family.series.end()) return it->second;
  Series s;
  switch (family.kind) {
    case Kind::counter: s.counter = std::make_unique<Counter>(); break;
    case Kind::gauge: s.gauge = std::make_unique<Gauge>(); break;
    case Kind::histogram: s.histogram = std::make_unique<Histogram>(family.buckets); break;
  }
  return family.series.emplace(std::move(key), std::move(s)).first->second;
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  return *series_locked(family_locked(name, help, Kind::counter, nullptr), labels).counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  return *series_locked(family_locked(name, help, Kind::gauge, nullptr), labels).gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, const Labels& labels,
                               std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  return *series_locked(family_locked(name, help, Kind::histogram, &buckets), labels).histogram;
}

void Registry::on_scrape(std::function<void()> fn) {
  std::lock_guard lock(scrape_mu_);
  scrape_hooks_.push_back(std::move(fn));
}

std::string Registry::render_prometheus() const {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(scrape_mu_);
    hooks = scrape_hooks_;
  }
  // Outside every lock: a hook may register or update metrics.
  for (auto& fn : hooks) {
    try {
      fn();
    } catch (const std::exception& e) {
      log_record(LogLevel::warn, "metrics_scrape_hook_failed", {{"error", e.what()}});
    } catch (...) {
      log_record(LogLevel::warn, "metrics_scrape_hook_failed", {{"error", "unknown exception"}});
    }
  }

  std::string out;
  std::lock_guard lock(mu_);
  out.reserve(256 * families_.size());
  auto series_line = [&](std::string_view name, std::string_view suffix, const std::string& labels,
                         std::string_view extra_label, auto value) {
    out += name;
    out += suffix;
    if (!labels.empty() || !extra_label.empty()) {
      out += '{';
      out += labels;
      if (!labels.empty() && !extra_label.empty()) out += ',';
      out += extra_label;
      out += '}';
    }
    out += ' ';
    append_number(out, value);
    out += '\n';
  };
  for (auto& [name, fam] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, fam->help, false);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += kind_name(int(fam->kind));
    out += '\n';
    for (auto& [labels, s] : fam->series) {
      if (s.counter) {
        series_line(name, "", labels, "", s.counter->value());
      } else if (s.gauge) {
        series_line(name, "", labels, "", s.gauge->value());
      } else {
        // One snapshot of the buckets, so the cumulative +Inf bucket equals _count.
        auto counts = s.histogram->bucket_counts();
        const auto& bounds = s.histogram->buckets();
        std::uint64_t cumulative = 0;
        std::string le;
        for (std::size_t i = 0; i < counts.size(); ++i) {
          cumulative += counts[i];
          le = "le=\"";
          append_number(le, i < bounds.size() ? bounds[i] : HUGE_VAL);
          le += '"';
          series_line(name, "_bucket", labels, le, cumulative);
        }
        series_line(name, "_sum", labels, "", s.histogram->sum());
        series_line(name, "_count", labels, "", cumulative);
      }
    }
  }
  return out;
}

}  // namespace penguiflow::observe
