// The job queue contract (CONTRACTS.md, section Q) shared by every backend.
//
// A JobQueue is bound to one executor (one event-loop thread, a "shard"); every method is
// called from that thread and returns an awaitable that honours per-operation
// cancellation. I/O failures throw QueueError (its message names the URL, never the
// password, and the cause). A settle that presents a stale lease is not an error: it
// returns Settle::stale (Q3).
//
// What is *not* here on purpose: rescuing expired leases (fetch treats an expired lease
// as fetchable, Q1), promoting delayed jobs (fetch only takes run_at <= now, Q4) and
// cleaning (a service that calls purge()). See docs/backends.md.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <penguiflow/task.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue {

using penguiflow::Task;  // one alias for the whole library (penguiflow/task.hpp)

/// Wall-clock seconds since the Unix epoch, as stored in run_at / lease expiry.
double unix_now();

/// Q2 states. Text form ("queued", "running", "succeeded", "dead") is the wire form.
enum class JobState { queued, running, succeeded, dead };
std::string_view to_string(JobState s);
std::optional<JobState> parse_job_state(std::string_view s);

/// A job as stored (docs/wire-format.md). `payload` is decoded JSON.
struct Job {
  std::string id;
  std::string flow;
  std::string tenant;
  boost::json::value payload;
  int attempts = 0;           // attempts started so far (fetch increments)
  int max_attempts = 5;
  int priority = 0;           // higher first
  double run_at = 0;          // unix seconds; not fetchable before
  std::optional<double> deadline_s;  // per-attempt job deadline, seconds (W3)
  std::string idempotency_key;       // empty: none
  JobState state = JobState::queued;
  std::string reason;                // last retry / dead reason
  boost::json::value details;        // dead details
  boost::json::value result;         // succeeded result
  double created_at = 0;
  double updated_at = 0;
  std::optional<double> latency_s;   // succeeded: as reported by the worker
  std::string lease_owner;           // running: who holds it
  double lease_expires_at = 0;       // running: when the lease lapses
};

/// What a producer hands to enqueue().
struct NewJob {
  std::string flow;
  std::string tenant;
  boost::json::value payload;
  int max_attempts = 5;
  int priority = 0;
  double delay_s = 0;                // run_at = now + delay_s
  std::optional<double> deadline_s;
  std::string idempotency_key;       // Q5: an existing key returns the existing job
};

struct EnqueueResult {
  std::string id;
  bool created = true;               // false: idempotency key already present (Q5)
};

/// A fetched job's lease (Q1, Q3): present it to settle. `token` changes on every fetch,
/// so a worker whose lease expired and was taken over cannot settle any more.
struct Lease {
  std::string job_id;
  std::string owner;
  std::string token;
  double expires_at = 0;
};

struct LeasedJob {
  Job job;
  Lease lease;
};

struct FetchRequest {
  int max_jobs = 1;                                   // Q6: up to N in one round trip
  std::chrono::milliseconds wait{1000};               // bounded wait when nothing is ready
  std::chrono::milliseconds lease{30000};             // lease duration
  std::string owner;                                  // worker id, recorded on the job
};

enum class Settle { ok, stale };

/// Q8 inspection.
struct Counts {
  std::map<std::string, std::int64_t> by_state;                          // state -> n
  std::map<std::string, std::map<std::string, std::int64_t>> by_tenant;  // tenant -> state -> n
};

struct ListFilter {
  std::optional<JobState> state;
  std::optional<std::string> tenant;
  int limit = 100;
};

/// Backend-independent knobs, validated at open.
struct QueueConfig {
  /// Q9: a stored payload larger than this goes dead at fetch ("payload too large").
  std::size_t max_payload_bytes = 1 << 20;
  /// Q9: when set, a job whose flow is not known goes dead at fetch ("unknown flow").
  std::function<bool(std::string_view)> flow_known;
  /// Prefix / namespace for every key, table or file (tests isolate themselves with it).
  std::string namespace_ = "penguiflow";
};

/// An I/O or configuration failure at the backend edge. The message names the URL
/// (password redacted) and the cause.
class QueueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The Q contract. Small on purpose: another backend must be easy to write.
class JobQueue {
 public:
  virtual ~JobQueue() = default;

  virtual Task<EnqueueResult> enqueue(NewJob job) = 0;
  virtual Task<std::vector<EnqueueResult>> enqueue_bulk(std::vector<NewJob> jobs) = 0;

  /// Leases up to max_jobs ready jobs (run_at <= now, or running with an expired lease),
  /// highest priority, then earliest run_at, then FIFO. Waits up to `wait` when none is
  /// ready; returns an empty vector on timeout. Each returned job has attempts + 1.
  /// Stored jobs that cannot be decoded go dead here with a reason (Q9) and are not
  /// returned.
  virtual Task<std::vector<LeasedJob>> fetch(FetchRequest req) = 0;

  virtual Task<Settle> complete(const Lease& lease, boost::json::value result, double latency_s) = 0;
  /// Back to queued with run_at = now + delay_s, reason kept.
  virtual Task<Settle> retry(const Lease& lease, double delay_s, std::string reason) = 0;
  /// To dead with reason and details.
  virtual Task<Settle> fail(const Lease& lease, std::string reason, boost::json::value details) = 0;
  /// Extends the lease to now + extend; on ok, lease.expires_at is updated.
  virtual Task<Settle> heartbeat(Lease& lease, std::chrono::milliseconds extend) = 0;

  // Q8 inspection. `tenant` scopes every call (W11): a job of another tenant is invisible.
  virtual Task<Counts> counts() = 0;
  /// Queued, running and dead jobs per state and tenant (no `succeeded`): what a queue
  /// depth gauge polls every few seconds. A backend answers it without reading the
  /// finished history that counts() may scan (millions of retained jobs). Default:
  /// counts() with `succeeded` left out.
  virtual Task<Counts> depth();
  virtual Task<std::vector<Job>> list(ListFilter filter) = 0;
  virtual Task<std::optional<Job>> get(std::string id, std::optional<std::string> tenant) = 0;
  /// Dead -> queued (attempts reset to 0). Returns how many. Empty ids: all dead jobs
  /// (of the tenant, when given).
  virtual Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> tenant) = 0;
  /// Cancels a queued or running job of the tenant: it goes dead with reason
  /// "cancelled"; a running worker learns it at its next heartbeat (stale). Returns
  /// whether a job was cancelled.
  virtual Task<bool> cancel(std::string id, std::optional<std::string> tenant) = 0;
  /// Deletes succeeded and dead jobs last updated more than `older_than_s` ago.
  virtual Task<std::int64_t> purge(double older_than_s) = 0;

  // W7: durable record of side effects, in the same backend as the jobs.
  /// Stores `value` under `key` unless a value is already there; returns the stored one.
  virtual Task<boost::json::value> record_effect(std::string key, boost::json::value value) = 0;
  virtual Task<std::optional<boost::json::value>> lookup_effect(std::string key) = 0;

  /// Closes connections / threads. Idempotent. Must be awaited before destruction.
  virtual Task<void> close() = 0;

  /// The URL it was opened with, password redacted.
  virtual std::string describe() const = 0;

  /// How many handles a worker shard should fetch through at once to keep this backend
  /// busy (each with its own fetch loop and share of the slots). 1 by default. Redis says
  /// 4: it answers one connection's requests in order and is single-threaded, so with one
  /// fetch stream the server waits while the worker works through a reply.
  virtual int fetch_lanes() const { return 1; }

  /// Whether a fetch on this handle applies every complete / retry / fail called on the
  /// handle before it, before it takes any job. Then a consumer may fetch for the slots of
  /// jobs still being settled: the server never holds more of its leases than it has
  /// slots, and the settles can travel with the fetch (Redis: one script call for both).
  /// false by default (PostgreSQL settles on a second connection; SQLite batches them on
  /// its own thread: carrying them in the claim's transaction was tried and measured
  /// slower, bench/README).
  virtual bool fetch_carries_settles() const { return false; }
};

/// How many lanes a consumer with `slots` jobs in flight runs when `wanted` are asked for
/// (JobQueue::fetch_lanes() or an explicit count): at least 1, and few enough that each
/// lane keeps at least 8 slots (fewer would split small batches further). The worker and
/// queue_bench both size their lanes with it.
inline int fetch_lanes_for(int wanted, int slots) {
  const int most = slots / 8 > 1 ? slots / 8 : 1;
  return wanted < 1 ? 1 : (wanted > most ? most : wanted);
}

/// Opens a queue by URL: memory://, sqlite:///path (sqlite://./rel), postgresql://...,
/// redis://host:port/db. Throws QueueError naming the URL (redacted) and the cause.
/// Defined in the penguiflow_queue_open target, which links every backend built.
/// (Two overloads rather than a default argument: g++ 12 frees a default-argument
/// temporary twice when the call sits inside co_await; see DESIGN.md pitfalls.)
Task<std::unique_ptr<JobQueue>> open_queue(boost::asio::any_io_executor ex, std::string url, QueueConfig config);
Task<std::unique_ptr<JobQueue>> open_queue(boost::asio::any_io_executor ex, std::string url);

/// Returns the URL with any password replaced by "***": the userinfo password (up to the
/// last '@' before the path, so one holding '?' or '#' too) and the values of password=,
/// sslpassword=, pass= and secret= query parameters. Works on text that is not a valid URL.
std::string redact_url(std::string_view url);

/// The secrets redact_url() hides, each as written and percent-decoded (when different):
/// for scrubbing a server's or a library's messages that may echo them.
std::vector<std::string> url_secrets(std::string_view url);

}  // namespace penguiflow::queue
