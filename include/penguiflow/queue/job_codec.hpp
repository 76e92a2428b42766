// The stored job document (docs/wire-format.md) and its Q9 validation, shared by every
// backend. Pure functions: no I/O, no event loop, thread-safe.
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace penguiflow::queue {

/// Why a stored job was refused at fetch (Q9). Every backend moves such a job to `dead`
/// with `reason` as its reason and `details()` as its details.
struct DecodeError {
  enum class Code { bad_json, not_object, bad_field, missing_tenant, missing_flow, payload_too_large, unknown_flow };
  Code code;
  std::string reason;  // e.g. "malformed job: invalid JSON (syntax error at offset 17)"

  /// {"error": "<code>", "message": reason}; never contains the payload (W12).
  boost::json::value details() const;
};

/// Stable text of a DecodeError::Code ("bad_json", "missing_tenant", ...).
std::string_view to_string(DecodeError::Code c);

/// The outcome of decoding a stored job document: exactly one of job / error is set.
struct DecodedJob {
  std::optional<Job> job;
  std::optional<DecodeError> error;
  explicit operator bool() const { return job.has_value(); }
};

/// Builds the Job a fresh enqueue stores: state queued, attempts 0, run_at = now + delay.
Job make_job(const NewJob& nj, std::string id, double now);

/// The stored job document of `job`: id, flow, tenant, payload, attempts, max_attempts,
/// priority, run_at, and deadline_s / idempotency_key when set. State and lease fields are
/// not part of it (backends keep them beside the document).
boost::json::object job_document(const Job& job);
std::string encode_job_document(const Job& job);

/// Decodes a stored job document and applies Q9 checks with `config` (payload size, flow
/// known, tenant and flow present and non-empty strings). Numbers may be integers or
/// doubles; absent optional fields take the NewJob defaults. `id` is used when the
/// document carries none (backends that key the document by id). Never throws.
DecodedJob decode_job_document(std::string_view text, const QueueConfig& config, std::string_view id = {});

/// Q9 checks for a job already decoded (backends that store fields in columns).
/// `payload_bytes` is the serialized payload size (0: compute it).
std::optional<DecodeError> validate_job(const Job& job, const QueueConfig& config, std::size_t payload_bytes = 0);

/// A Job with every field (state, lease, result...) as JSON, for inspection output.
boost::json::object job_to_json(const Job& job);

}  // namespace penguiflow::queue
