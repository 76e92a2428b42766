#include <penguiflow/queue/job_codec.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cmath>
#include <limits>

namespace penguiflow::queue {
namespace json = boost::json;

namespace {

DecodeError err(DecodeError::Code c, std::string reason) { return DecodeError{c, std::move(reason)}; }

// Reads an optional number field; accepts integers and doubles. Returns false on a wrong type.
bool read_number(const json::object& o, std::string_view key, double& out) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return true;
  const auto& v = it->value();
  if (v.is_int64()) out = static_cast<double>(v.get_int64());
  else if (v.is_uint64()) out = static_cast<double>(v.get_uint64());
  else if (v.is_double()) out = v.get_double();
  else return false;
  return std::isfinite(out);
}

bool read_int(const json::object& o, std::string_view key, int& out) {
  double d = out;
  if (!read_number(o, key, d)) return false;
  if (d < std::numeric_limits<int>::min() || d > std::numeric_limits<int>::max()) return false;
  out = static_cast<int>(d);
  return true;
}

}  // namespace

std::string_view to_string(DecodeError::Code c) {
  using C = DecodeError::Code;
  switch (c) {
    case C::bad_json: return "bad_json";
    case C::not_object: return "not_object";
    case C::bad_field: return "bad_field";
    case C::missing_tenant: return "missing_tenant";
    case C::missing_flow: return "missing_flow";
    case C::payload_too_large: return "payload_too_large";
    case C::unknown_flow: return "unknown_flow";
  }
  return "unknown";
}

json::value DecodeError::details() const {
  json::object o;
  o["error"] = to_string(code);
  o["message"] = reason;
  return o;
}

Job make_job(const NewJob& nj, std::string id, double now) {
  Job j;
  j.id = std::move(id);
  j.flow = nj.flow;
  j.tenant = nj.tenant;
  j.payload = nj.payload;
  j.max_attempts = nj.max_attempts;
  j.priority = nj.priority;
  j.run_at = now + nj.delay_s;
  j.deadline_s = nj.deadline_s;
  j.idempotency_key = nj.idempotency_key;
  j.created_at = now;
  j.updated_at = now;
  return j;
}

json::object job_document(const Job& j) {
  json::object o;
  o.reserve(10);
  o["id"] = j.id;
  o["flow"] = j.flow;
  o["tenant"] = j.tenant;
  o["payload"] = j.payload;
  o["attempts"] = j.attempts;
  o["max_attempts"] = j.max_attempts;
  o["priority"] = j.priority;
  o["run_at"] = j.run_at;
  if (j.deadline_s) o["deadline_s"] = *j.deadline_s;
  if (!j.idempotency_key.empty()) o["idempotency_key"] = j.idempotency_key;
  return o;
}

std::string encode_job_document(const Job& j) { return json::serialize(job_document(j)); }

std::optional<DecodeError> validate_job(const Job& j, const QueueConfig& config, std::size_t payload_bytes) {
  using C = DecodeError::Code;
  if (j.tenant.empty()) return err(C::missing_tenant, "malformed job: missing tenant");
  if (j.flow.empty()) return err(C::missing_flow, "malformed job: missing flow");
  if (payload_bytes == 0) payload_bytes = json::serialize(j.payload).size();
  if (payload_bytes > config.max_payload_bytes)
    return err(C::payload_too_large, "payload too large: " + std::to_string(payload_bytes) + " bytes > limit " +
                                         std::to_string(config.max_payload_bytes));
  if (config.flow_known && !config.flow_known(j.flow)) return err(C::unknown_flow, "unknown flow: " + j.flow);
  return std::nullopt;
}

DecodedJob decode_job_document(std::string_view text, const QueueConfig& config, std::string_view id) {
  using C = DecodeError::Code;
  DecodedJob out;
  std::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) {
    out.error = err(C::bad_json, "malformed job: invalid JSON (" + ec.message() + ")");
    return out;
  }
  if (!v.is_object()) {
    out.error = err(C::not_object, "malformed job: document is not a JSON object");
    return out;
  }
  auto& o = v.get_object();
  Job j;
  auto str = [&](std::string_view key, std::string& dst, C missing, std::string_view what) -> bool {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) {
      if (missing == C::bad_field) return true;  // optional
      out.error = err(missing, "malformed job: missing " + std::string(what));
      return false;
    }
    if (!it->value().is_string()) {
      out.error = err(missing == C::bad_field ? C::bad_field : missing,
                      "malformed job: " + std::string(what) + " is not a string");
      return false;
    }
    dst = std::string(it->value().get_string());
    if (dst.empty() && missing != C::bad_field) {
      out.error = err(missing, "malformed job: missing " + std::string(what) + " (empty)");
      return false;
    }
    return true;
  };
  if (!str("tenant", j.tenant, C::missing_tenant, "tenant")) return out;
  if (!str("flow", j.flow, C::missing_flow, "flow")) return out;
  if (!str("id", j.id, C::bad_field, "id")) return out;
  if (j.id.empty()) j.id = std::string(id);
  if (!str("idempotency_key", j.idempotency_key, C::bad_field, "idempotency_key")) return out;
  auto bad = [&](std::string_view field) {
    out.error = err(C::bad_field, "malformed job: " + std::string(field) + " is not a valid number");
    return out;
  };
  if (!read_int(o, "attempts", j.attempts)) return bad("attempts");
  if (!read_int(o, "max_attempts", j.max_attempts)) return bad("max_attempts");
  if (!read_int(o, "priority", j.priority)) return bad("priority");
  if (!read_number(o, "run_at", j.run_at)) return bad("run_at");
  if (auto it = o.find("deadline_s"); it != o.end() && !it->value().is_null()) {
    double d = 0;
    if (!read_number(o, "deadline_s", d)) return bad("deadline_s");
    j.deadline_s = d;
  }
  // The document can only be as large as its text: skip re-serializing small payloads.
  std::size_t payload_bytes = 0;
  if (auto it = o.find("payload"); it != o.end()) {
    if (text.size() > config.max_payload_bytes) payload_bytes = json::serialize(it->value()).size();
    j.payload = std::move(it->value());
  }
  if (auto e = validate_job(j, config, payload_bytes == 0 ? 1 : payload_bytes)) {
    out.error = std::move(e);
    return out;
  }
  out.job = std::move(j);
  return out;
}

json::object job_to_json(const Job& j) {
  json::object o = job_document(j);
  o["state"] = to_string(j.state);
  if (!j.reason.empty()) o["reason"] = j.reason;
  if (!j.details.is_null()) o["details"] = j.details;
  if (!j.result.is_null()) o["result"] = j.result;
  o["created_at"] = j.created_at;
  o["updated_at"] = j.updated_at;
  if (j.latency_s) o["latency_s"] = *j.latency_s;
  if (j.state == JobState::running) {
    o["lease_owner"] = j.lease_owner;
    o["lease_expires_at"] = j.lease_expires_at;
  }
  return o;
}

}  // namespace penguiflow::queue
