// Errors of the flow runtime.
//
// Programmer errors (a cycle, run twice, an unknown target) throw the exceptions below
// with a message naming the node or edge. Exceptions thrown by node code never escape a
// node: they become a FlowError value (C5), logged as an event and, with
// FlowOptions::emit_errors_to_rookery, delivered to fetch().
#pragma once

#include <boost/json/value.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace penguiflow {

/// Base of every exception the runtime throws for misuse.
class FlowUsageError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// The graph has a cycle that is not allowed (C1). `what()` names the nodes.
class CycleError : public FlowUsageError {
 public:
  using FlowUsageError::FlowUsageError;
};

/// emit_nowait on a full queue (C3).
class QueueFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// fetch_nowait on an empty sink (C3).
class QueueEmptyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A payload does not match a typed node (C6). Names the node and the field.
class ValidationError : public std::runtime_error {
 public:
  ValidationError(std::string node, std::string field, const std::string& problem);
  const std::string& node() const { return node_; }
  const std::string& field() const { return field_; }

 private:
  std::string node_;
  std::string field_;
};

/// The flow was stopped while an emit / fetch was waiting.
class FlowStoppedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class FlowErrorCode {
  node_exception,    // NODE_EXCEPTION: the node threw
  node_timeout,      // NODE_TIMEOUT: an attempt exceeded timeout_s
  validation_error,  // VALIDATION_ERROR: typed input / output did not validate
};

/// Upstream's spelling: "NODE_EXCEPTION", "NODE_TIMEOUT", "VALIDATION_ERROR".
std::string_view to_string(FlowErrorCode code);

/// A node's final failure after its retries were exhausted (C5).
struct FlowError {
  std::string trace_id;
  std::string node_name;
  std::string node_id;
  FlowErrorCode code = FlowErrorCode::node_exception;
  std::string message;       // the cause's message
  std::string exception_type;  // demangled type of the cause, when it was an exception
  int attempts = 0;          // attempts made
  double latency_ms = 0;     // of the last attempt

  boost::json::value to_json() const;
};

}  // namespace penguiflow
