// The production job worker (CONTRACTS.md, section W): fetches jobs from a queue, runs a
// flow per job as one trace, settles each job, renews leases, retries with backoff and
// jitter, dead-letters, and shuts down gracefully.
//
//   penguiflow::worker::FlowRegistry flows;
//   flows.add("quickstart", [] { return make_quickstart_flow(); });
//   penguiflow::worker::Worker worker(std::move(flows), {.queue_url = "sqlite://./jobs.db"});
//   return worker.run();   // blocks; SIGTERM / SIGINT drain and return 0
//
// Concurrency (DESIGN.md): `threads` shards, each an event loop with its own queue
// handles (fetch lanes: the backend's JobQueue::fetch_lanes(), each with a share of the
// slots) and flows; `concurrency` flows running at once per shard. Shards share nothing but
// atomics (stats, metrics) and the stop request.
#pragma once

#include <penguiflow/core/flow.hpp>
#include <penguiflow/queue/queue.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace penguiflow::observe {
class Registry;
}

namespace penguiflow::worker {

/// Builds a fresh flow. Called on the shard's thread; must not start it.
using FlowFactory = std::function<Flow()>;

/// Which item fetched for a job's trace is its result. Items before it (progress:
/// status updates, stream chunks) are skipped. A FlowError always ends the job.
using FinalPredicate = std::function<bool(const std::any& item)>;

/// The default: the first item that is not a StreamChunk (bare or in a Message).
bool first_non_chunk(const std::any& item);
/// For flows that stream progress and end with a FinalAnswer (the roadmap pattern).
bool final_answer(const std::any& item);

/// A registered flow.
struct FlowEntry {
  FlowFactory factory;
  std::string description;
  FinalPredicate is_final = first_non_chunk;
};

/// Named flow factories: what a job's `flow` field refers to.
class FlowRegistry {
 public:
  /// Throws std::invalid_argument for an empty or duplicate name.
  void add(std::string name, FlowFactory factory, std::string description = {}, FinalPredicate is_final = first_non_chunk);
  const FlowEntry* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  /// (name, description) in name order.
  std::vector<std::pair<std::string, std::string>> list() const;

 private:
  std::map<std::string, FlowEntry, std::less<>> flows_;
};

/// W4 / W5.
enum class FlowMode { stateless, long_lived };

/// How a job ended on this worker.
enum class Outcome { succeeded, retried, dead, timeout_retried, lease_lost, handed_back };
std::string_view to_string(Outcome o);

/// Reported after every settle (thread: the job's shard).
struct JobReport {
  std::string job_id;
  std::string flow;
  std::string tenant;
  int attempt = 0;
  Outcome outcome = Outcome::succeeded;
  std::string reason;      // empty on success
  double latency_s = 0;    // fetch → settle
  double queue_wait_s = 0; // run_at → fetch
};

/// Options. Aggregate; every field has a production default.
struct WorkerOptions {
  std::string queue_url = "sqlite://./penguiflow.db";
  int concurrency = 16;                   // flows running at once per shard (and up to as many settles in flight)
  int threads = 1;                        // shards
  int fetch_lanes = 0;                    // queue handles (fetch loops) per shard; 0: the backend's choice
                                          // (JobQueue::fetch_lanes), at most concurrency / 8
  FlowMode mode = FlowMode::stateless;
  int rebuild_after_jobs = 10000;         // long-lived: rebuild the flow after N jobs
  int rebuild_after_failures = 50;        // ... or after M failed jobs (any unexpected error rebuilds at once)
  double job_timeout_s = 300;             // bound on a job's wait for its result when it has no deadline_s (W3)
  double drain_timeout_s = 30;            // W9
  double lease_s = 30;                    // lease length; renewed every lease_s / 3 (W8)
  std::chrono::milliseconds fetch_wait{500};  // bounded fetch wait; also how fast an idle shard notices stop
  double retry_base_s = 1;                // W6: min(base * 2^(attempt-1), max) scaled by jitter
  double retry_max_s = 300;
  double retry_jitter = 0.5;              // delay drawn from [1 - jitter, 1] x backoff
  bool exit_when_empty = false;           // stop once no job is queued or running
  std::string worker_id;                  // default: <hostname>-<pid>
  bool log_payloads = false;              // W12: payloads are never logged unless asked
  bool handle_signals = true;             // SIGTERM / SIGINT request a graceful stop
  queue::QueueConfig queue_config{};      // flow_known is filled from the registry
  observe::Registry* metrics = nullptr;   // W10: jobs / node metrics go here when set
  std::function<void(const JobReport&)> on_report;  // called on the shard's thread
  /// Opens one of the shard's queue handles (one per fetch lane); default:
  /// queue::open_queue(ex, queue_url, config).
  std::function<queue::Task<std::unique_ptr<queue::JobQueue>>(boost::asio::any_io_executor, queue::QueueConfig)>
      open_queue;
};

/// Totals over every shard (atomics; read any time from any thread).
struct WorkerStats {
  std::uint64_t fetched = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t retried = 0;
  std::uint64_t dead = 0;
  std::uint64_t lease_lost = 0;
  std::uint64_t handed_back = 0;
  std::uint64_t in_flight = 0;
};

class Worker {
 public:
  /// Throws std::invalid_argument naming a bad option (concurrency < 1, ...).
  Worker(FlowRegistry flows, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Runs until stopped (signal, request_stop, or exit_when_empty). Returns 0 after a
  /// graceful stop, 1 when a shard could not open its queue (the error is logged and
  /// kept in last_error()). Blocks the calling thread.
  int run();
  /// Thread- and signal-safe: stop fetching, drain, hand back what is left.
  void request_stop();
  /// True from the moment a stop was requested (signal, request_stop, exit_when_empty).
  bool stop_requested() const;
  WorkerStats stats() const;
  const std::string& worker_id() const;
  std::string last_error() const;

  struct State;  // shared with the shards (worker.cpp)

 private:
  std::shared_ptr<State> state_;
};

/// W6 backoff with jitter: min(base * 2^(attempt-1), max) x uniform[1 - jitter, 1].
double retry_delay(const WorkerOptions& options, int attempt);

}  // namespace penguiflow::worker
