// join_k (C13): collect k messages of one trace, then emit them as one batch.
//
//   auto join = join_k("join", 3);
//   Flow flow({fan.to(a, b, c), a.to(join), b.to(join), c.to(join), join.to(merge), merge.to()},
//             FlowOptions{.middlewares = {join.cleanup()}});
//
// The batch is a std::vector<std::any>: the payloads, in arrival order. When the first
// message of the batch is a Message, the batch travels in a copy of that envelope
// (trace id, headers, deadline, meta) whose payload is the vector of the messages'
// payloads; otherwise the vector of the values themselves is emitted.
#pragma once

#include <penguiflow/core/flow.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace penguiflow {

struct JoinOptions {
  /// At most this many traces have a partial batch; a new trace beyond it evicts the
  /// oldest partial batch (logged as "join_k_evicted").
  std::size_t max_pending_traces = 10000;
  /// A partial batch older than this is dropped (logged). Unset: no age limit.
  std::optional<double> bucket_ttl_s;
  /// With cleanup() installed: also drop a trace's partial batch when one of the
  /// trace's nodes fails for good (node_failed), since the batch may never fill.
  bool drop_on_failure = false;
  NodePolicy node_policy{};
};

namespace detail {
struct JoinState;
}

/// The join node. Use it like any Node.
class JoinK : public Node {
 public:
  JoinK(Node node, std::shared_ptr<detail::JoinState> state) : Node(std::move(node)), state_(std::move(state)) {}

  /// A middleware that drops a trace's partial batch when the trace is cancelled (C10)
  /// (and, with drop_on_failure, when one of its nodes fails). Install it on every flow
  /// the node runs in.
  Middleware cleanup() const;
  /// Drops `trace_id`'s partial batch; true when there was one. Thread-safe.
  bool forget(std::string_view trace_id) const;
  /// Traces with a partial batch. Thread-safe.
  std::size_t pending_traces() const;

 private:
  std::shared_ptr<detail::JoinState> state_;
};

/// A node collecting `k` messages per trace id, then emitting the batch (see above).
/// A message without a trace id fails its invocation (FlowError naming the node). Expired
/// partial batches (bucket_ttl_s, or the first message's deadline_s passed) are swept as
/// messages arrive. Throws FlowUsageError when k < 1.
JoinK join_k(std::string name, int k, JoinOptions options = {});

}  // namespace penguiflow
