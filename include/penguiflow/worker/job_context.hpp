// What a node running inside the worker can learn about its job, and the idempotency
// helper (W7).
//
//   auto receipt = co_await penguiflow::worker::effect_once(ctx, "charge-card", [&]() -> Task<json::value> {
//     co_return co_await payments.charge(order);   // runs at most once per committed record
//   });
//
// The record lives in the same backend as the job (JobQueue::record_effect), keyed by the
// job's trace id and the step name: a retried or redelivered job finds the committed
// result and does not repeat the effect. (An effect that ran but whose record was not
// committed before a crash can run again: keep effects themselves idempotent where the
// outside system allows it, e.g. by passing the key along.)
#pragma once

#include <penguiflow/core/flow.hpp>
#include <penguiflow/queue/queue.hpp>

#include <boost/json/value.hpp>

#include <functional>
#include <string>

namespace penguiflow::worker {

/// The job behind the trace a node is serving. Valid during the invocation, on the
/// shard's thread.
struct JobContext {
  const queue::Job* job = nullptr;
  queue::JobQueue* queue = nullptr;
  std::string worker_id;
};

/// The job of the trace `ctx` serves, or nullptr outside the worker (e.g. in unit tests).
const JobContext* job_context(const Context& ctx);

/// Runs `fn` once per (trace, step): returns the recorded result when there is one,
/// otherwise runs fn and records its result (first writer wins). Outside a worker job it
/// just runs fn. Cancellable like any await; fn's exception propagates and records
/// nothing.
Task<boost::json::value> effect_once(Context& ctx, std::string step, std::function<Task<boost::json::value>()> fn);

namespace detail {
/// Registers / removes the job of a trace for job_context() (shard-local).
void bind_job(const std::string& trace_id, JobContext* jc);
void unbind_job(const std::string& trace_id);
}  // namespace detail

}  // namespace penguiflow::worker
