// The job worker: shards, the fetch loop, one coroutine per job, heartbeats, shutdown.
#include <penguiflow/worker/worker.hpp>

#include <penguiflow/core/json.hpp>
#include <penguiflow/core/logging.hpp>
#include <penguiflow/observe/metrics.hpp>
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/worker/job_context.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace penguiflow::worker {

namespace asio = boost::asio;
namespace json = boost::json;
using queue::JobQueue;
using queue::LeasedJob;
using queue::Settle;

// ---------------------------------------------------------------- registry & helpers

void FlowRegistry::add(std::string name, FlowFactory factory, std::string description, FinalPredicate is_final) {
  if (name.empty()) throw std::invalid_argument("flow name must not be empty");
  if (!factory) throw std::invalid_argument("flow '" + name + "' needs a factory");
  if (!is_final) is_final = first_non_chunk;
  if (!flows_.emplace(name, FlowEntry{std::move(factory), std::move(description), std::move(is_final)}).second)
    throw std::invalid_argument("flow '" + name + "' is registered twice");
}

const FlowEntry* FlowRegistry::find(std::string_view name) const {
  auto it = flows_.find(name);
  return it == flows_.end() ? nullptr : &it->second;
}

std::vector<std::pair<std::string, std::string>> FlowRegistry::list() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, e] : flows_) out.emplace_back(name, e.description);
  return out;
}

bool first_non_chunk(const std::any& item) {
  if (std::any_cast<StreamChunk>(&item)) return false;
  if (auto* m = std::any_cast<Message>(&item)) return !std::any_cast<StreamChunk>(&m->payload);
  return true;
}

bool final_answer(const std::any& item) {
  if (std::any_cast<FinalAnswer>(&item)) return true;
  if (auto* m = std::any_cast<Message>(&item)) return std::any_cast<FinalAnswer>(&m->payload) != nullptr;
  return false;
}

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::succeeded: return "succeeded";
    case Outcome::retried: return "retried";
    case Outcome::dead: return "dead";
    case Outcome::timeout_retried: return "timeout_retried";
    case Outcome::lease_lost: return "lease_lost";
    case Outcome::handed_back: return "handed_back";
  }
  return "unknown";
}

double retry_delay(const WorkerOptions& o, int attempt) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  return queue::backoff_delay(std::max(1, attempt), o.retry_base_s, o.retry_max_s, 2.0, o.retry_jitter, u);
}

namespace {

std::string default_worker_id() {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "host");
  return std::string(host) + "-" + std::to_string(::getpid());
}

auto seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

double mono_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// A wake-up flag on one executor: wait() until notify(); the check-then-wait is race
/// free because everything runs on the shard's one thread.
class Wakeup {
 public:
  explicit Wakeup(asio::any_io_executor ex) : timer_(ex) {}
  Task<void> wait_for(double s) {
    timer_.expires_after(seconds(s));
    co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

/// What a job's flow produced.
struct RunResult {
  enum Kind { success, failure, timeout, interrupted } kind = failure;
  json::value result;
  std::string reason;
  json::object details;
  bool permanent = false;   // retrying cannot help (bad payload)
  bool unexpected = false;  // the flow misbehaved: rebuild it (W5)
};

}  // namespace

// ---------------------------------------------------------------- state

struct Worker::State {
  FlowRegistry flows;
  WorkerOptions opts;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::uint64_t> fetched{0}, succeeded{0}, retried{0}, dead{0}, lease_lost{0}, handed_back{0}, in_flight{0};
  std::mutex err_mu;
  std::string last_error;
  std::vector<std::function<void()>> stoppers;  // one per shard, posted to its loop
  std::mutex stop_mu;

  void set_error(std::string e) {
    std::lock_guard l(err_mu);
    last_error = std::move(e);
  }
  void request_stop() {
    if (stop_requested.exchange(true)) return;
    std::lock_guard l(stop_mu);
    for (auto& s : stoppers) s();
  }
};

namespace {

/// A fetch lane: one queue handle, its share of the shard's slots and a fetch loop. A
/// backend that answers one connection's requests in order (Redis) leaves the server idle
/// while the worker works through a reply when a shard has one lane; with several, one
/// lane's fetch or settle is at the server while the others' jobs run
/// (JobQueue::fetch_lanes, docs/architecture.md "Fetch lanes").
struct Lane {
  explicit Lane(asio::any_io_executor ex) : wake(ex) {}
  std::unique_ptr<JobQueue> queue;
  int slots = 0;     // flows running at most (its share of the concurrency)
  int inflight = 0;
  int settling = 0;  // jobs whose settle call is in flight (their flows are done)
  bool carries = false;  // its fetches apply the settles before them (fetch_carries_settles)
  Wakeup wake;       // a slot freed (a flow ended or a settle returned), or stop

  /// Slots a fetch may fill now. A slot is free once its job's flow is done: the settle
  /// that follows does not hold it, so the next jobs run while the server commits the
  /// last ones' results. At most `slots` settles are in flight on top of the running
  /// jobs, so a slow server pushes back instead of piling up settles (and leases).
  int free() const { return std::min(slots - (inflight - settling), 2 * slots - inflight); }
};

struct InFlight;
using Deadlines = std::multimap<double, InFlight*>;  // monotonic time -> job (W3 bounds)

struct InFlight {
  LeasedJob lj;
  Lane* lane = nullptr;  // whose queue handle fetched it (and settles it)
  std::string trace;
  JobContext jc;
  asio::cancellation_signal cancel;
  double started = 0;         // monotonic
  double last_beat = 0;       // monotonic
  bool lease_lost = false;
  bool handed_back = false;
  bool timed_out = false;     // its time bound passed: cancelled by the deadline watch
  std::optional<Deadlines::iterator> deadline;  // armed while the flow works on the job
};

struct LiveFlow {
  std::unique_ptr<Flow> flow;
  int jobs = 0;
  int failures = 0;
  int inflight = 0;
  bool retired = false;
};

class Shard : public std::enable_shared_from_this<Shard> {
 public:
  Shard(Worker::State& st, int index)
      : st_(st), opts_(st.opts), index_(index), wake_(io_.get_executor()), housekeeping_(io_.get_executor()),
        gauges_(io_.get_executor()), deadline_wake_(io_.get_executor()) {}

  asio::io_context& io() { return io_; }

  void start() {
    asio::co_spawn(io_, main(), [self = shared_from_this()](std::exception_ptr e) { self->crashed("shard_crashed", e); });
  }

  /// A shard coroutine ended: when by an exception, record it and stop the worker.
  void crashed(const char* event, std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      st_.set_error(ex.what());
      log_record(LogLevel::error, event, {{"shard", index_}, {"error", ex.what()}});
    }
    st_.request_stop();
  }

  /// Thread-safe.
  void stop() {
    asio::post(io_, [self = shared_from_this()] {
      self->stopping_ = true;
      self->wake_.notify();
      for (auto& l : self->lanes_) l->wake.notify();
    });
  }

 private:
  Task<void> main();
  Task<void> fetch_loop(Lane& lane);
  /// Opens a queue handle; nullptr with `error` set when it cannot.
  Task<std::unique_ptr<JobQueue>> open_one(queue::QueueConfig cfg, std::string& error);
  Task<void> run_job(std::shared_ptr<InFlight> f);
  Task<RunResult> execute(InFlight& f, const FlowEntry& entry);
  Task<RunResult> await_result(Flow& flow, const std::string& trace, const FinalPredicate& is_final);
  Task<void> settle(InFlight& f, RunResult r);
  /// One complete / retry / fail as settle() decided it, kept so it can be sent again.
  struct SettleCall {
    enum Kind { complete, retry, fail } kind = complete;
    json::value result;
    double latency = 0;
    double delay = 0;
    std::string reason;
    json::object details;
  };
  /// Sends `call`, again on failure while the lease lasts; nullopt when it never went
  /// through (logged).
  Task<std::optional<Settle>> send_settle(InFlight& f, const SettleCall& call);
  Task<void> heartbeats();
  Task<void> deadline_watch();
  void arm_deadline(InFlight& f, double bound_s);
  void disarm_deadline(InFlight& f);
  Task<void> refresh_gauges();
  void report(const InFlight& f, Outcome o, std::string reason);
  void prepare(Flow& flow, const std::string& name);
  void retire(const std::string& name, std::shared_ptr<LiveFlow> lf);

  Worker::State& st_;
  const WorkerOptions& opts_;
  int index_;
  asio::io_context io_{1};
  Wakeup wake_;
  Wakeup housekeeping_;  // heartbeat ticks; notified at the end so the loop can exit at once
  Wakeup gauges_;
  Wakeup deadline_wake_;  // notified when an earlier bound is armed, and at the end
  Deadlines deadlines_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  int loops_running_ = 0;  // fetch loops not yet returned
  Lane* watcher_ = nullptr;  // the lane waiting for work for an idle shard (fetch_loop)
  static constexpr double kParkedRecheckS = 5;  // a parked lane looks for itself this often
  bool stopping_ = false;
  bool done_ = false;
  int inflight_ = 0;  // every lane's
  static constexpr double kMaxCoalesceS = 0.05;
  static constexpr double kMaxCoalesceCarryingS = 0.001;
  // Refill once this many slots are free (or half of them, when fewer): waiting for half
  // of 200 slots left the connection idle between rounds (Redis, c=200: ~20% fewer jobs/s).
  static constexpr int kCoalesceSlots = 32;
  std::unordered_map<std::string, std::shared_ptr<InFlight>> jobs_;
  std::unordered_map<std::string, std::shared_ptr<LiveFlow>> live_;
  std::unordered_map<std::string, Middleware> metrics_mw_;  // per flow name
};

void Shard::prepare(Flow& flow, const std::string& name) {
  flow.set_emit_errors_to_rookery(true);  // every failure must reach the job (W3)
  if (opts_.metrics) {
    auto it = metrics_mw_.find(name);
    if (it == metrics_mw_.end()) it = metrics_mw_.emplace(name, observe::metrics_middleware(*opts_.metrics, name)).first;
    flow.add_middleware(it->second);
  }
  if (log_enabled(LogLevel::debug)) flow.add_middleware(log_flow_events("debug"));
}

void Shard::report(const InFlight& f, Outcome o, std::string reason) {
  const auto& job = f.lj.job;
  double latency = mono_s() - f.started;
  switch (o) {
    case Outcome::succeeded: ++st_.succeeded; break;
    case Outcome::retried:
    case Outcome::timeout_retried: ++st_.retried; break;
    case Outcome::dead: ++st_.dead; break;
    case Outcome::lease_lost: ++st_.lease_lost; break;
    case Outcome::handed_back: ++st_.handed_back; break;
  }
  if (opts_.metrics) {
    opts_.metrics->counter("penguiflow_jobs_total", "Jobs settled by this worker, by flow and outcome",
                           {{"flow", job.flow}, {"outcome", std::string(to_string(o))}}).inc();
    opts_.metrics->histogram("penguiflow_job_latency_ms", "Fetch-to-settle latency of jobs", {{"flow", job.flow}})
        .observe(latency * 1000);
  }
  LogLevel lvl = o == Outcome::succeeded ? LogLevel::debug : (o == Outcome::dead ? LogLevel::warn : LogLevel::info);
  if (log_enabled(lvl)) {
    json::object fields{{"job_id", job.id}, {"trace_id", f.trace}, {"tenant", job.tenant}, {"worker_id", f.jc.worker_id},
                        {"flow", job.flow}, {"attempt", job.attempts}, {"latency_ms", latency * 1000}};
    if (!reason.empty()) fields["reason"] = reason;
    if (opts_.log_payloads) fields["payload"] = job.payload;
    log_record(lvl, std::string("job_") + std::string(to_string(o)), fields);
  }
  if (opts_.on_report) {
    JobReport r{job.id, job.flow, job.tenant, job.attempts, o, std::move(reason), latency,
                std::max(0.0, queue::unix_now() - latency - job.run_at)};
    opts_.on_report(r);
  }
}

Task<std::unique_ptr<JobQueue>> Shard::open_one(queue::QueueConfig cfg, std::string& error) {
  auto ex = co_await asio::this_coro::executor;
  std::unique_ptr<JobQueue> q;
  error = "unknown error";
  try {
    if (opts_.open_queue) q = co_await opts_.open_queue(ex, std::move(cfg));
    else q = co_await queue::open_queue(ex, opts_.queue_url, std::move(cfg));
  } catch (const std::exception& e) {
    error = e.what();
  }
  co_return q;
}

Task<void> Shard::main() {
  auto ex = co_await asio::this_coro::executor;
  queue::QueueConfig cfg = opts_.queue_config;
  if (!cfg.flow_known) {
    const FlowRegistry* flows = &st_.flows;
    cfg.flow_known = [flows](std::string_view name) { return flows->contains(name); };
  }
  std::string open_error;
  std::unique_ptr<JobQueue> first = co_await open_one(cfg, open_error);
  if (!first) {
    st_.set_error(open_error);
    log_record(LogLevel::error, "queue_open_failed", {{"shard", index_}, {"error", open_error}});
    st_.request_stop();
    co_return;
  }
  int want = opts_.fetch_lanes > 0 ? opts_.fetch_lanes : first->fetch_lanes();
  // Every memory:// handle is a queue of its own: lanes would not share the jobs.
  if (!opts_.open_queue && opts_.queue_url.rfind("memory:", 0) == 0) want = 1;
  want = queue::fetch_lanes_for(want, opts_.concurrency);
  lanes_.push_back(std::make_unique<Lane>(ex));
  lanes_[0]->queue = std::move(first);
  while (static_cast<int>(lanes_.size()) < want) {
    // A further lane that cannot open (e.g. the server's client limit) leaves the shard
    // with the lanes it has, not stopped.
    std::string why;
    std::unique_ptr<JobQueue> q = co_await open_one(cfg, why);
    if (!q) {
      log_record(LogLevel::warn, "fetch_lane_open_failed",
                 {{"shard", index_}, {"lanes", static_cast<int>(lanes_.size())}, {"wanted", want}, {"error", why}});
      break;
    }
    lanes_.push_back(std::make_unique<Lane>(ex));
    lanes_.back()->queue = std::move(q);
  }
  for (auto& l : lanes_) l->carries = l->queue->fetch_carries_settles();
  const int n = static_cast<int>(lanes_.size());
  for (int i = 0; i < n; ++i) lanes_[i]->slots = opts_.concurrency / n + (i < opts_.concurrency % n ? 1 : 0);
  log_record(LogLevel::debug, "shard_ready", {{"shard", index_}, {"fetch_lanes", n}, {"slots_per_lane", lanes_[0]->slots}});
  asio::co_spawn(ex, heartbeats(), asio::detached);
  asio::co_spawn(ex, deadline_watch(), asio::detached);
  if (opts_.metrics && index_ == 0) asio::co_spawn(ex, refresh_gauges(), asio::detached);

  loops_running_ = n;
  for (auto& l : lanes_)
    asio::co_spawn(ex, fetch_loop(*l), [self = shared_from_this()](std::exception_ptr e) {
      --self->loops_running_;
      self->wake_.notify();
      self->crashed("fetch_loop_crashed", e);
    });
  while (loops_running_ > 0) co_await wake_.wait_for(1.0);

  // W9: stop fetching (done), drain within the timeout, then hand back what is left.
  double deadline = mono_s() + opts_.drain_timeout_s;
  while (inflight_ > 0 && mono_s() < deadline) co_await wake_.wait_for(std::min(0.05, std::max(0.0, deadline - mono_s())));
  if (inflight_ > 0) {
    log_record(LogLevel::warn, "drain_timeout", {{"shard", index_}, {"in_flight", inflight_}});
    for (auto& [_, f] : jobs_) {
      f->handed_back = true;
      f->cancel.emit(asio::cancellation_type::terminal);
    }
    double hard = mono_s() + 10;
    while (inflight_ > 0 && mono_s() < hard) co_await wake_.wait_for(0.01);
  }
  done_ = true;
  housekeeping_.notify();
  gauges_.notify();
  deadline_wake_.notify();
  for (auto& [_, lf] : live_) co_await lf->flow->stop();
  live_.clear();
  for (auto& l : lanes_) co_await l->queue->close();
}

Task<void> Shard::fetch_loop(Lane& lane) {
  auto ex = co_await asio::this_coro::executor;
  double fetch_backoff = 0.05;
  double coalesce_until = 0;  // > 0: free slots are waiting for the jobs being settled
  while (!stopping_) {
    const int free = lane.free();
    if (free <= 0) {
      co_await lane.wake.wait_for(1.0);
      continue;
    }
    // Refill in batches: while fewer than kCoalesceSlots slots (or half of them) are free
    // and more jobs are about to finish, wait a little (bounded, so slow jobs or settles
    // cannot starve free slots), so that jobs finishing one by one refill a few at a
    // time, not one fetch round trip per finished job. A lane waits while settles are in
    // flight (about one settle round trip: the jobs finishing meanwhile join the batch),
    // or, when its fetches carry the settles, while jobs still run, up to 1 ms (a fetch
    // now would carry a few settles and bring a few jobs; Redis, long-lived flows, which
    // finish their jobs one by one: c=50 +50%).
    const bool more_soon = lane.carries ? lane.inflight - lane.settling > 0 : lane.settling > 0;
    if (more_soon && free < std::max(1, std::min(lane.slots / 2, kCoalesceSlots))) {
      const double now = mono_s();
      if (coalesce_until == 0) coalesce_until = now + (lane.carries ? kMaxCoalesceCarryingS : kMaxCoalesceS);
      if (now < coalesce_until) {
        co_await lane.wake.wait_for(coalesce_until - now);
        continue;
      }
    }
    coalesce_until = 0;
    std::vector<LeasedJob> jobs;
    bool failed = false;
    try {
      // One lane: at most half its slots a fetch, so two cohorts take turns, one running
      // its flows while the other is settled and refilled, instead of every slot waiting
      // for one round trip after the other (Redis c=50: fetch, run, settle in lockstep;
      // +10% e2e). Several lanes already take turns: each fetches all its free slots
      // (Redis, 4 lanes then, worker_bench long-lived c=50 +10-25%).
      const int cap = lanes_.size() > 1 ? lane.slots : (lane.slots + 1) / 2;
      const int max_jobs = std::min(free, std::max(1, cap));
      queue::FetchRequest req{max_jobs, opts_.fetch_wait, std::chrono::milliseconds(std::int64_t(opts_.lease_s * 1000)),
                              st_.opts.worker_id};
      jobs = co_await lane.queue->fetch(std::move(req));
      fetch_backoff = 0.05;
    } catch (const std::exception& e) {
      // The backend reconnects on the next call; back off so a dead server is not hammered.
      log_record(LogLevel::warn, "fetch_failed", {{"shard", index_}, {"error", e.what()}, {"retry_in_s", fetch_backoff}});
      failed = true;
    }
    if (failed) {
      if (watcher_ == &lane) watcher_ = nullptr;  // let a lane that can fetch watch
      if (stopping_) break;
      co_await lane.wake.wait_for(fetch_backoff);
      fetch_backoff = std::min(fetch_backoff * 2, 5.0);
      continue;
    }
    if (jobs.empty()) {
      if (opts_.exit_when_empty && inflight_ == 0) {
        bool empty = false;
        try {
          auto c = co_await lane.queue->depth();  // never the succeeded history
          empty = c.by_state["queued"] + c.by_state["running"] == 0;
        } catch (const std::exception&) {
        }
        if (empty) st_.request_stop();
      }
      // An idle shard waits for work through one lane (the watcher): the others park
      // until it finds some, so idle load does not grow with the lanes. The watcher has
      // free slots while it watches: it only fills up by fetching, which wakes them.
      if (stopping_) break;
      if (watcher_ && watcher_ != &lane) {
        co_await lane.wake.wait_for(kParkedRecheckS);
      } else {
        watcher_ = &lane;
      }
      continue;
    }
    if (watcher_) {  // work again (found by the watcher or a lane looking for itself): every lane fetches
      watcher_ = nullptr;
      for (auto& l : lanes_)
        if (l.get() != &lane) l->wake.notify();
    }
    for (auto& lj : jobs) {
      auto f = std::make_shared<InFlight>();
      f->lj = std::move(lj);
      f->lane = &lane;
      f->trace = "job-" + f->lj.job.id;
      f->jc = JobContext{&f->lj.job, lane.queue.get(), opts_.worker_id};
      f->started = f->last_beat = mono_s();
      ++inflight_;
      ++lane.inflight;
      ++st_.fetched;
      ++st_.in_flight;
      jobs_[f->lj.job.id] = f;
      asio::co_spawn(ex, run_job(f), asio::bind_cancellation_slot(f->cancel.slot(), [self = shared_from_this(), f](std::exception_ptr e) {
                       if (e) {
                         try {
                           std::rethrow_exception(e);
                         } catch (const std::exception& ex) {
                           log_record(LogLevel::error, "job_coroutine_failed", {{"job_id", f->lj.job.id}, {"error", ex.what()}});
                         }
                       }
                       // The same job can be here twice (its lease expired and this shard
                       // fetched it again): drop this copy's entry, not the other's.
                       if (auto it = self->jobs_.find(f->lj.job.id); it != self->jobs_.end() && it->second == f)
                         self->jobs_.erase(it);
                       --self->inflight_;
                       --f->lane->inflight;
                       --self->st_.in_flight;
                       f->lane->wake.notify();
                       if (self->stopping_) self->wake_.notify();  // main() drains after stop
                     }));
    }
  }
}

Task<void> Shard::heartbeats() {
  const double every = std::max(0.05, opts_.lease_s / 3);
  Wakeup& timer = housekeeping_;
  while (!done_) {
    co_await timer.wait_for(std::min(every, 0.5));
    if (done_) break;
    std::vector<std::shared_ptr<InFlight>> due;
    double now = mono_s();
    for (auto& [_, f] : jobs_)
      if (now - f->last_beat >= every && !f->lease_lost) due.push_back(f);
    for (auto& f : due) {
      try {
        auto r = co_await f->lane->queue->heartbeat(f->lj.lease, std::chrono::milliseconds(std::int64_t(opts_.lease_s * 1000)));
        f->last_beat = mono_s();
        if (r == Settle::stale) {
          // Taken over (expired and re-leased) or cancelled by an operator: stop working on it.
          f->lease_lost = true;
          f->cancel.emit(asio::cancellation_type::terminal);
        }
      } catch (const std::exception& e) {
        log_record(LogLevel::warn, "heartbeat_failed", {{"job_id", f->lj.job.id}, {"error", e.what()}});
      }
    }
  }
}

// W3: one timer per shard serves every job's time bound (racing a timer against each job's
// fetch cost ~1.5 µs a job: two spawned branches and a timer). A job past its bound is
// cancelled through its cancellation slot, wherever it waits (emit or fetch).
void Shard::arm_deadline(InFlight& f, double bound_s) {
  f.deadline = deadlines_.emplace(mono_s() + bound_s, &f);
  if (*f.deadline == deadlines_.begin()) deadline_wake_.notify();  // earlier than the watch sleeps for
}

void Shard::disarm_deadline(InFlight& f) {
  if (!f.deadline) return;
  deadlines_.erase(*f.deadline);
  f.deadline.reset();
}

Task<void> Shard::deadline_watch() {
  while (!done_) {
    const double now = mono_s();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      InFlight* f = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());
      f->deadline.reset();
      f->timed_out = true;
      f->cancel.emit(asio::cancellation_type::terminal);
    }
    const double next = deadlines_.empty() ? 3600.0 : deadlines_.begin()->first - now;
    co_await deadline_wake_.wait_for(next);
  }
}

Task<void> Shard::refresh_gauges() {
  Wakeup& timer = gauges_;
  auto& reg = *opts_.metrics;
  while (!done_) {
    try {
      auto c = co_await lanes_[0]->queue->depth();  // never the succeeded history (counts() may scan it)
      for (auto* s : {"queued", "running", "dead"})
        reg.gauge("penguiflow_queue_depth", "Jobs in the queue by state", {{"state", s}}).set(double(c.by_state[s]));
      queue::ListFilter filter{queue::JobState::queued, std::nullopt, 200};
      auto queued = co_await lanes_[0]->queue->list(std::move(filter));
      double oldest = 0, now = queue::unix_now();
      for (auto& j : queued)
        if (j.run_at <= now) oldest = std::max(oldest, now - j.run_at);
      reg.gauge("penguiflow_queue_oldest_job_age_seconds", "Age of the oldest ready job (sampled from up to 200 queued jobs)")
          .set(oldest);
    } catch (const std::exception& e) {
      log_record(LogLevel::debug, "gauge_refresh_failed", {{"error", e.what()}});
    }
    reg.gauge("penguiflow_jobs_in_flight", "Jobs being processed by this worker").set(double(st_.in_flight.load()));
    co_await timer.wait_for(2.0);
  }
}

Task<RunResult> Shard::await_result(Flow& flow, const std::string& trace, const FinalPredicate& is_final) {
  for (;;) {
    std::any item = co_await flow.fetch(trace);
    RunResult r;
    if (auto* fe = std::any_cast<FlowError>(&item)) {
      r.kind = RunResult::failure;
      r.permanent = fe->code == FlowErrorCode::validation_error;
      r.reason = r.permanent ? "invalid payload: " + fe->message
                             : "node '" + fe->node_name + "' failed (" + std::string(to_string(fe->code)) + "): " + fe->message;
      r.details = fe->to_json().as_object();
      co_return r;
    }
    const std::any* payload = &item;
    if (auto* m = std::any_cast<Message>(&item)) payload = &m->payload;
    if (auto* fa = std::any_cast<FinalAnswer>(payload); fa && fa->text == "Deadline exceeded") {
      r.kind = RunResult::timeout;  // C9: the flow skipped the message past its deadline
      r.reason = "job deadline exceeded";
      co_return r;
    }
    if (!is_final(item)) continue;  // progress (status updates, chunks), not the result
    try {
      r.result = to_json(*payload);
      r.kind = RunResult::success;
    } catch (const std::exception& e) {
      r.kind = RunResult::failure;
      r.permanent = true;
      r.reason = std::string("result is not JSON-convertible: ") + e.what();
    }
    co_return r;
  }
}

Task<RunResult> Shard::execute(InFlight& f, const FlowEntry& entry) {
  const FlowFactory& factory = entry.factory;
  auto ex = co_await asio::this_coro::executor;
  const auto& job = f.lj.job;
  const double bound = job.deadline_s.value_or(opts_.job_timeout_s);
  Message msg{job.payload, Headers{job.tenant, job.flow, job.priority}, f.trace};
  if (job.deadline_s) msg.deadline_s = wall_now() + *job.deadline_s;

  std::shared_ptr<LiveFlow> lf;
  std::unique_ptr<Flow> own;
  Flow* flow = nullptr;
  RunResult result;
  try {
    if (opts_.mode == FlowMode::long_lived) {
      auto& slot = live_[job.flow];
      if (!slot || slot->retired) {
        slot = std::make_shared<LiveFlow>();
        slot->flow = std::make_unique<Flow>(factory());
        prepare(*slot->flow, job.flow);
        slot->flow->run(ex);
      }
      lf = slot;
      ++lf->inflight;
      ++lf->jobs;
      flow = lf->flow.get();
    } else {
      own = std::make_unique<Flow>(factory());
      prepare(*own, job.flow);
      own->run(ex);
      flow = own.get();
    }
  } catch (const std::exception& e) {
    result.kind = RunResult::failure;
    result.reason = "flow '" + job.flow + "' could not start: " + e.what();
    result.unexpected = true;
  }

  bool interrupted = false;
  if (flow) {
    bool finished = false;  // the flow produced the job's outcome
    arm_deadline(f, bound);
    try {
      co_await flow->emit(std::move(msg), f.trace);
      result = co_await await_result(*flow, f.trace, entry.is_final);
      finished = true;
    } catch (const boost::system::system_error& e) {
      interrupted = true;  // past its time bound, handed back at shutdown, or the lease was lost
    } catch (const std::exception& e) {
      result.kind = RunResult::failure;
      result.reason = std::string("flow error: ") + e.what();
      result.unexpected = true;
    }
    disarm_deadline(f);
    // A cancellation that came after the outcome was in hand still leaves its mark on
    // the cancellation state; the state tells.
    if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none) interrupted = true;
    if (interrupted) {
      co_await asio::this_coro::reset_cancellation_state();
      if (f.handed_back || f.lease_lost) {
        result.kind = RunResult::interrupted;
      } else if (!finished) {  // only the time bound cancelled it (W3)
        result = RunResult{};
        result.kind = RunResult::timeout;
        result.reason = "job exceeded its time bound of " + std::to_string(bound) + " s";
      }
    }
    if (result.kind != RunResult::success) flow->cancel(f.trace);  // W3: cancel the trace
  }

  if (own) {
    co_await own->stop();  // W4: stopped after every job, whatever happened
  } else if (lf) {
    --lf->inflight;
    if (result.kind == RunResult::failure || result.kind == RunResult::timeout) ++lf->failures;
    if (result.unexpected || lf->jobs >= opts_.rebuild_after_jobs || lf->failures >= opts_.rebuild_after_failures)
      retire(job.flow, lf);
    if (lf->retired && lf->inflight == 0) co_await lf->flow->stop();
  }
  co_return result;
}

void Shard::retire(const std::string& name, std::shared_ptr<LiveFlow> lf) {
  if (lf->retired) return;
  lf->retired = true;  // W5: new jobs get a fresh flow; this one stops when its last job ends
  if (auto it = live_.find(name); it != live_.end() && it->second == lf) live_.erase(it);
  log_record(LogLevel::info, "flow_rebuilt", {{"flow", name}, {"jobs", lf->jobs}, {"failures", lf->failures}});
}

Task<void> Shard::run_job(std::shared_ptr<InFlight> f) {
  detail::bind_job(f->trace, &f->jc);
  const auto& job = f->lj.job;
  RunResult r;
  if (job.attempts > job.max_attempts) {
    // Redelivered after its last attempt's lease expired (the worker died or hung).
    r.kind = RunResult::failure;
    r.permanent = true;
    r.reason = "attempts exhausted: the lease of attempt " + std::to_string(job.max_attempts) +
               " expired before the job was settled (worker crashed or hung)";
  } else if (const FlowEntry* entry = st_.flows.find(job.flow)) {
    r = co_await execute(*f, *entry);
  } else {
    r.kind = RunResult::failure;
    r.permanent = true;
    r.reason = "unknown flow '" + job.flow + "'";
  }
  detail::unbind_job(f->trace);
  ++f->lane->settling;
  f->lane->wake.notify();  // its slot is free (Lane::free)
  co_await settle(*f, std::move(r));
  --f->lane->settling;  // settle() does not throw
}

Task<void> Shard::settle(InFlight& f, RunResult r) {
  const auto& job = f.lj.job;
  if (r.kind == RunResult::interrupted || f.lease_lost) {
    if (f.lease_lost) {
      report(f, Outcome::lease_lost, "lease lost (expired and taken over, or cancelled)");
      co_return;
    }
    // W9: hand the lease back so another worker picks the job up at once.
    SettleCall back{SettleCall::retry};
    back.reason = "worker shutdown before the job finished";
    if (co_await send_settle(f, back)) report(f, Outcome::handed_back, "worker shutdown");
    co_return;
  }
  SettleCall call;
  Outcome o;
  if (r.kind == RunResult::success) {
    call.kind = SettleCall::complete;
    call.result = std::move(r.result);
    call.latency = mono_s() - f.started;
    o = Outcome::succeeded;
  } else if (!r.permanent && job.attempts < job.max_attempts) {
    call.kind = SettleCall::retry;
    call.delay = retry_delay(opts_, job.attempts);
    call.reason = r.reason;
    o = r.kind == RunResult::timeout ? Outcome::timeout_retried : Outcome::retried;
  } else {
    call.kind = SettleCall::fail;
    call.details = std::move(r.details);
    call.details["attempts"] = job.attempts;
    call.details["max_attempts"] = job.max_attempts;
    call.details["worker_id"] = opts_.worker_id;
    call.reason = r.permanent ? r.reason : r.reason + " (after " + std::to_string(job.attempts) + " attempts)";
    o = Outcome::dead;
  }
  auto s = co_await send_settle(f, call);
  if (!s) co_return;
  if (*s == Settle::stale) report(f, Outcome::lease_lost, "lease expired before settle: " + call.reason);
  else report(f, o, call.reason);
}

// A settle that fails (the connection dropped: the backends reconnect with backoff) is
// sent again while the lease is still ours, so a finished job is not run a second time
// just because the network blinked. Repeating is safe: every settle is fenced by the
// lease token, so if the attempt that failed had reached the server, the repeat answers
// stale, and that stale is this settle's own (reported as ok). Gives up after
// kSettleAttempts or when the lease would expire before the next try: the job is then
// redelivered when its lease expires (at-least-once, W8), as before.
Task<std::optional<Settle>> Shard::send_settle(InFlight& f, const SettleCall& call) {
  constexpr int kSettleAttempts = 5;
  double backoff = 0.1;
  for (int attempt = 1;; ++attempt) {
    std::string error;
    try {
      Settle s = Settle::ok;
      auto& q = *f.lane->queue;
      switch (call.kind) {
        case SettleCall::complete: s = co_await q.complete(f.lj.lease, call.result, call.latency); break;
        case SettleCall::retry: s = co_await q.retry(f.lj.lease, call.delay, call.reason); break;
        case SettleCall::fail: s = co_await q.fail(f.lj.lease, call.reason, call.details); break;
      }
      if (attempt > 1) {
        log_record(LogLevel::info, "settle_retried",
                   {{"job_id", f.lj.job.id}, {"attempt", attempt}, {"answer", s == Settle::ok ? "ok" : "stale"}});
        s = Settle::ok;  // stale now: the attempt cut off had reached the server
      }
      co_return s;
    } catch (const std::exception& e) {
      error = e.what();
    }
    const bool lease_left = mono_s() + backoff < f.last_beat + opts_.lease_s;
    if (attempt >= kSettleAttempts || !lease_left || done_) {
      // Not settled: the lease expires and the job is redelivered (at-least-once, W8).
      log_record(LogLevel::error, "settle_failed", {{"job_id", f.lj.job.id}, {"attempts", attempt}, {"error", error}});
      co_return std::nullopt;
    }
    log_record(LogLevel::warn, "settle_failed_retrying",
               {{"job_id", f.lj.job.id}, {"attempt", attempt}, {"retry_in_s", backoff}, {"error", error}});
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(seconds(backoff));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    backoff *= 2;
  }
}

}  // namespace

// ---------------------------------------------------------------- Worker

Worker::Worker(FlowRegistry flows, WorkerOptions options) : state_(std::make_shared<State>()) {
  if (options.concurrency < 1) throw std::invalid_argument("--concurrency must be at least 1 (got " + std::to_string(options.concurrency) + ")");
  if (options.threads < 1) throw std::invalid_argument("--threads must be at least 1 (got " + std::to_string(options.threads) + ")");
  if (options.fetch_lanes < 0) throw std::invalid_argument("--fetch-lanes must not be negative (got " + std::to_string(options.fetch_lanes) + ")");
  if (options.lease_s <= 0) throw std::invalid_argument("lease must be positive");
  if (options.job_timeout_s <= 0) throw std::invalid_argument("--job-timeout must be positive");
  if (options.drain_timeout_s < 0) throw std::invalid_argument("--drain-timeout must not be negative");
  if (options.worker_id.empty()) options.worker_id = default_worker_id();
  state_->flows = std::move(flows);
  state_->opts = std::move(options);
}

Worker::~Worker() = default;

void Worker::request_stop() { state_->request_stop(); }
bool Worker::stop_requested() const { return state_->stop_requested.load(); }
const std::string& Worker::worker_id() const { return state_->opts.worker_id; }
std::string Worker::last_error() const {
  std::lock_guard l(state_->err_mu);
  return state_->last_error;
}

WorkerStats Worker::stats() const {
  auto& s = *state_;
  return {s.fetched, s.succeeded, s.retried, s.dead, s.lease_lost, s.handed_back, s.in_flight};
}

int Worker::run() {
  auto& st = *state_;
  std::vector<std::shared_ptr<Shard>> shards;
  for (int i = 0; i < st.opts.threads; ++i) shards.push_back(std::make_shared<Shard>(st, i));
  {
    std::lock_guard l(st.stop_mu);
    st.stoppers.clear();
    for (auto& s : shards) st.stoppers.push_back([s] { s->stop(); });
  }
  if (st.stop_requested) for (auto& s : shards) s->stop();

  asio::io_context signals_io(1);
  std::optional<asio::signal_set> signals;
  std::thread signal_thread;
  // Outlives the wait it re-arms (declared outside the if: the handler refers to it).
  std::function<void(boost::system::error_code, int)> on_signal;
  if (st.opts.handle_signals) {
    signals.emplace(signals_io, SIGINT, SIGTERM);
    on_signal = [&](boost::system::error_code ec, int sig) {
      if (ec) return;
      log_record(LogLevel::info, "shutdown_requested", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}, {"worker_id", st.opts.worker_id}});
      st.request_stop();
      signals->async_wait(on_signal);  // a second signal is logged and otherwise ignored: the drain bound holds
    };
    signals->async_wait(on_signal);
    signal_thread = std::thread([&] { signals_io.run(); });
  }

  log_record(LogLevel::info, "worker_started",
             {{"worker_id", st.opts.worker_id}, {"queue", queue::redact_url(st.opts.queue_url)},
              {"threads", st.opts.threads}, {"concurrency", st.opts.concurrency},
              {"mode", st.opts.mode == FlowMode::stateless ? "stateless" : "long-lived"}});
  std::vector<std::thread> threads;
  for (auto& s : shards) {
    s->start();
    threads.emplace_back([s] { s->io().run(); });
  }
  for (auto& t : threads) t.join();
  if (signals) {
    signals->cancel();
    signals_io.stop();
    signal_thread.join();
  }
  {
    std::lock_guard l(st.stop_mu);
    st.stoppers.clear();
  }
  auto stats = this->stats();
  log_record(LogLevel::info, "worker_stopped",
             {{"worker_id", st.opts.worker_id}, {"succeeded", stats.succeeded}, {"retried", stats.retried},
              {"dead", stats.dead}, {"handed_back", stats.handed_back}});
  return last_error().empty() ? 0 : 1;
}

}  // namespace penguiflow::worker
