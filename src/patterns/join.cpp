// join_k (C13).
#include <penguiflow/patterns/join.hpp>

#include <penguiflow/core/logging.hpp>

#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace penguiflow {

namespace detail {

struct JoinState {
  struct Bucket {
    std::vector<std::any> items;
    double created = 0;                 // wall seconds
    std::optional<double> deadline_s;   // of the first message
    std::list<std::string>::iterator age;
  };

  std::string name;
  std::size_t k = 1;
  JoinOptions options;
  mutable std::mutex mu;
  std::unordered_map<std::string, Bucket> buckets;
  std::list<std::string> by_age;  // oldest first
  std::size_t since_sweep = 0;

  void erase(std::unordered_map<std::string, Bucket>::iterator it) {
    by_age.erase(it->second.age);
    buckets.erase(it);
  }

  // Drops partial batches that can no longer fill in time. Caller holds mu.
  void sweep(double now) {
    for (auto it = buckets.begin(); it != buckets.end();) {
      const Bucket& b = it->second;
      bool expired = (options.bucket_ttl_s && now - b.created > *options.bucket_ttl_s) ||
                     (b.deadline_s && now > *b.deadline_s);
      if (expired) {
        log_record(LogLevel::warn, "join_k_expired",
                   {{"node", name}, {"trace_id", it->first}, {"collected", b.items.size()}, {"k", k}});
        auto dead = it++;
        erase(dead);
      } else {
        ++it;
      }
    }
  }
};

}  // namespace detail

Middleware JoinK::cleanup() const {
  std::weak_ptr<detail::JoinState> weak = state_;
  return [weak](const FlowEvent& ev) {
    if (ev.trace_id.empty()) return;
    auto s = weak.lock();
    if (!s) return;
    bool drop = ev.type == EventType::trace_cancel_start ||
                (s->options.drop_on_failure && ev.type == EventType::node_failed);
    if (!drop) return;
    std::lock_guard lock(s->mu);
    if (auto it = s->buckets.find(ev.trace_id); it != s->buckets.end()) s->erase(it);
  };
}

bool JoinK::forget(std::string_view trace_id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->buckets.find(std::string(trace_id));
  if (it == state_->buckets.end()) return false;
  state_->erase(it);
  return true;
}

std::size_t JoinK::pending_traces() const {
  std::lock_guard lock(state_->mu);
  return state_->buckets.size();
}

JoinK join_k(std::string name, int k, JoinOptions options) {
  if (k < 1) throw FlowUsageError("join_k '" + name + "': k must be >= 1, got " + std::to_string(k));
  if (options.max_pending_traces == 0)
    throw FlowUsageError("join_k '" + name + "': max_pending_traces must be >= 1");
  auto state = std::make_shared<detail::JoinState>();
  state->name = name;
  state->k = static_cast<std::size_t>(k);
  state->options = options;

  auto fn = [state](std::any msg, Context& ctx) -> Task<std::any> {
    auto& s = *state;
    const Message* env = std::any_cast<Message>(&msg);
    std::string trace = env && !env->trace_id.empty() ? env->trace_id : ctx.trace_id();
    if (trace.empty())
      throw FlowUsageError("join_k '" + s.name +
                           "': message has no trace id (join_k groups messages by trace; emit a Message or pass a trace id)");
    std::vector<std::any> batch;
    {
      std::lock_guard lock(s.mu);
      const double now = wall_now();
      // The oldest partial batches first (cheap, by age), then, now and then, every one
      // (deadlines are not ordered by age).
      while (s.options.bucket_ttl_s && !s.by_age.empty()) {
        auto oldest = s.buckets.find(s.by_age.front());
        if (now - oldest->second.created <= *s.options.bucket_ttl_s) break;
        log_record(LogLevel::warn, "join_k_expired",
                   {{"node", s.name}, {"trace_id", oldest->first}, {"collected", oldest->second.items.size()}, {"k", s.k}});
        s.erase(oldest);
      }
      if (++s.since_sweep >= 256 || s.buckets.size() >= s.options.max_pending_traces) {
        s.since_sweep = 0;
        s.sweep(now);
      }
      auto it = s.buckets.find(trace);
      if (it == s.buckets.end()) {
        while (s.buckets.size() >= s.options.max_pending_traces) {
          auto oldest = s.buckets.find(s.by_age.front());
          log_record(LogLevel::warn, "join_k_evicted",
                     {{"node", s.name}, {"trace_id", oldest->first}, {"collected", oldest->second.items.size()}, {"k", s.k}});
          s.erase(oldest);
        }
        s.by_age.push_back(trace);
        it = s.buckets.emplace(trace, detail::JoinState::Bucket{{}, now, env ? env->deadline_s : std::nullopt,
                                                                std::prev(s.by_age.end())}).first;
        it->second.items.reserve(s.k);
      }
      it->second.items.push_back(std::move(msg));
      if (it->second.items.size() < s.k) co_return std::any();  // nothing emitted yet
      batch = std::move(it->second.items);
      s.erase(it);
    }
    // Full: one batch, in arrival order, in the first envelope when there is one.
    if (auto* first = std::any_cast<Message>(&batch.front())) {
      std::vector<std::any> payloads;
      payloads.reserve(batch.size());
      for (auto& item : batch) {
        if (auto* m = std::any_cast<Message>(&item)) payloads.push_back(std::move(m->payload));
        else payloads.push_back(std::move(item));
      }
      Message out = std::move(*first).with_payload(std::move(payloads));
      co_return std::any(std::move(out));
    }
    co_return std::any(std::move(batch));
  };
  // Batches convert to JSON (arrays of their items' JSON) at the edges.
  static const bool registered = [] {
    detail::register_to_json(std::type_index(typeid(std::vector<std::any>)), [](const std::any& a) {
      boost::json::array arr;
      for (auto& item : *std::any_cast<std::vector<std::any>>(&a)) arr.push_back(to_json(item));
      return boost::json::value(std::move(arr));
    });
    return true;
  }();
  (void)registered;
  return JoinK(Node(std::move(name), std::move(fn), NodeOptions{.policy = options.node_policy}), state);
}

}  // namespace penguiflow
