// Message envelopes (C7), streaming chunks (C12) and the final-answer payload.
//
// Payloads are any copyable C++ value held in std::any: they are moved, never serialized,
// between nodes of one process, and converted to / from JSON only at the edges
// (penguiflow/core/json.hpp).
#pragma once

#include <boost/json/object.hpp>

#include <any>
#include <optional>
#include <string>

namespace penguiflow {

/// Routing headers carried by every envelope.
struct Headers {
  std::string tenant;
  std::string topic;
  int priority = 0;
};

/// The envelope (C7). Nodes that take and return Messages keep trace_id, headers,
/// deadline and meta on what they emit (use `with_payload`).
struct Message {
  std::any payload;
  Headers headers;
  std::string trace_id;                // random when empty at emit time
  double ts = 0;                       // creation time, unix seconds (0: stamped at emit)
  std::optional<double> deadline_s;    // absolute wall-clock deadline, unix seconds
  boost::json::object meta;

  /// A copy of this envelope carrying another payload: what a node returns to pass the
  /// trace, headers, deadline and meta on.
  Message with_payload(std::any p) const& {
    Message m{std::move(p), headers, trace_id, ts, deadline_s, meta};
    return m;
  }
  Message with_payload(std::any p) && {
    payload = std::move(p);
    return std::move(*this);
  }
};

/// What a flow produces for a trace when it has a final answer (also what a node emits
/// when a message's deadline has passed: text "Deadline exceeded", C9).
struct FinalAnswer {
  std::string text;
};

/// A streamed piece of text (C12). `seq` increases by one per stream_id and restarts
/// after a chunk with done = true.
struct StreamChunk {
  std::string stream_id;
  int seq = 0;
  std::string text;
  bool done = false;
  boost::json::object meta;
};

/// Payload of `m` as T, or nullptr.
template <class T>
const T* payload_if(const Message& m) {
  return std::any_cast<T>(&m.payload);
}

/// Random 32-hex-digit id (trace ids, node ids).
std::string random_id();

/// Wall-clock seconds since the Unix epoch.
double wall_now();

}  // namespace penguiflow
