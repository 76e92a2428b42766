#include <penguiflow/worker/job_context.hpp>

#include <unordered_map>

namespace penguiflow::worker {

namespace {
// Shard-local: a flow and the jobs it serves live on one thread.
thread_local std::unordered_map<std::string, JobContext*> t_jobs;
}  // namespace

namespace detail {
void bind_job(const std::string& trace_id, JobContext* jc) { t_jobs[trace_id] = jc; }
void unbind_job(const std::string& trace_id) { t_jobs.erase(trace_id); }
}  // namespace detail

const JobContext* job_context(const Context& ctx) {
  auto it = t_jobs.find(ctx.trace_id());
  return it == t_jobs.end() ? nullptr : it->second;
}

Task<boost::json::value> effect_once(Context& ctx, std::string step, std::function<Task<boost::json::value>()> fn) {
  const JobContext* jc = job_context(ctx);
  if (!jc || !jc->queue) co_return co_await fn();
  std::string key = ctx.trace_id() + ":" + step;
  if (auto done = co_await jc->queue->lookup_effect(key)) co_return std::move(*done);
  boost::json::value v = co_await fn();
  co_return co_await jc->queue->record_effect(std::move(key), std::move(v));
}

}  // namespace penguiflow::worker
