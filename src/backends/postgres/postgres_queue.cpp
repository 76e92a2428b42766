// The PostgreSQL JobQueue. SQL lives in the statements below; the connection layer is
// pg_connection.cpp; the schema and its migrations are schema.cpp.
#include <penguiflow/backends/postgres.hpp>
#include <penguiflow/queue/detail/wait_set.hpp>
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include "pg_connection.hpp"
#include "schema.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <unordered_map>

namespace penguiflow::queue {
namespace {
namespace asio = boost::asio;
namespace json = boost::json;
using pg::Params;
using pg::PgConnection;
using pg::PgError;
using pg::PgResult;
using pg::Statement;
using Clock = std::chrono::steady_clock;

constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kBackoffMin = std::chrono::milliseconds(100);
constexpr auto kBackoffMax = std::chrono::seconds(5);
// An idle fetch re-checks at least this often even without a notification: a lease taken
// after its last check may expire (the owner crashed) without anything being notified.
constexpr double kIdleRecheckS = 10.0;
// While the LISTEN connection is down, idle fetches fall back to polling this often.
constexpr auto kPollWithoutListen = std::chrono::seconds(1);

// Pinned plans. A queue table's statistics are always wrong: the same rows go queued ->
// running -> succeeded within milliseconds, and right after a bulk enqueue the table looks
// empty to the planner. Left to them, it planned a claim as a bitmap scan of *every* ready
// row plus a sort (13 ms for 200 of 20,000 ready jobs) and a complete as a hash join over
// every row version in jobs_leased, dead ones included (O(jobs) per statement, and a bitmap
// scan never marks dead index entries, so they were read again by every claim). The hot
// statements (claims and settles: index scans in index order, nested loops by tuple id or
// key) run with these settings; a connection switches only when the next statement wants
// the other mode (the bulk enqueue's joins and counts() need hash joins and scans).
// (enable_material: otherwise a complete's nested loop rescanned a materialized copy of
// every running row for each completed job instead of fetching it by tuple id.)
constexpr const char* kPinPlans =
    "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off; "
    "SET enable_material = off";
constexpr const char* kUnpinPlans =
    "RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_hashjoin; RESET enable_mergejoin; RESET enable_material";
// Claims commit without waiting for their WAL to reach disk. Nothing acknowledged rides on
// a claim: a crash that loses one leaves its job queued (or its expired lease expired),
// so it is simply claimed again; and every later synchronous commit (a complete, retry,
// fail, heartbeat or enqueue) flushes the WAL written before it, the claims of the jobs
// it settles included. Enqueues and settles keep the server's synchronous_commit.
constexpr const char* kLazyCommit = "SET synchronous_commit = off";
constexpr const char* kStrictCommit = "RESET synchronous_commit";

// Appends `v` to a PostgreSQL array literal being built in `out` ("{" so far, or "{a,b"),
// double-quoted with `"` and `\` escaped, so any text (JSON included) round-trips.
void append_array_element(std::string& out, std::string_view v) {
  if (out.size() > 1) out += ',';
  out += '"';
  for (char ch : v) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  out += '"';
}

std::string num(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

// Column list shared by every statement that returns jobs (alias j).
constexpr const char* kCols =
    "j.id, j.flow, j.tenant, j.payload, j.raw, j.attempts, j.max_attempts, j.priority, j.run_at, j.deadline_s, "
    "j.idempotency_key, j.state, j.reason, j.details, j.result, j.latency_s, j.created_at, j.updated_at, "
    "j.lease_owner, j.lease_token, j.lease_expires_at, j.seq";
enum Col {
  c_id, c_flow, c_tenant, c_payload, c_raw, c_attempts, c_max_attempts, c_priority, c_run_at, c_deadline_s,
  c_idem, c_state, c_reason, c_details, c_result, c_latency, c_created, c_updated, c_owner, c_token, c_lease_exp,
  c_seq,
  c_tid  // only in the claim's RETURNING
};

json::value parse_or_string(std::string_view text) {
  if (text.empty()) return nullptr;
  std::error_code ec;
  auto v = json::parse(text, ec);
  if (ec) return json::string(text);
  return v;
}

// A row's fields except payload (decoded separately for Q9).
Job row_to_job(const PgResult& r, int i) {
  Job j;
  j.id = std::string(r.text(i, c_id));
  j.flow = std::string(r.text(i, c_flow));
  j.tenant = std::string(r.text(i, c_tenant));
  j.attempts = static_cast<int>(r.integer(i, c_attempts));
  j.max_attempts = static_cast<int>(r.integer(i, c_max_attempts, 5));
  j.priority = static_cast<int>(r.integer(i, c_priority));
  j.run_at = r.number(i, c_run_at);
  if (!r.is_null(i, c_deadline_s)) j.deadline_s = r.number(i, c_deadline_s);
  j.idempotency_key = std::string(r.text(i, c_idem));
  j.state = parse_job_state(r.text(i, c_state)).value_or(JobState::queued);
  j.reason = std::string(r.text(i, c_reason));
  j.details = parse_or_string(r.text(i, c_details));
  j.result = parse_or_string(r.text(i, c_result));
  if (!r.is_null(i, c_latency)) j.latency_s = r.number(i, c_latency);
  j.created_at = r.number(i, c_created);
  j.updated_at = r.number(i, c_updated);
  j.lease_owner = std::string(r.text(i, c_owner));
  j.lease_expires_at = r.number(i, c_lease_exp);
  return j;
}

// For inspection: the payload as stored (a string when it is not JSON).
Job row_to_job_full(const PgResult& r, int i) {
  Job j = row_to_job(r, i);
  if (!r.is_null(i, c_payload)) j.payload = parse_or_string(r.text(i, c_payload));
  else if (!r.is_null(i, c_raw)) j.payload = json::string(r.text(i, c_raw));
  return j;
}

class PostgresQueue final : public JobQueue {
 public:
  PostgresQueue(asio::any_io_executor ex, std::string url, QueueConfig config)
      : ex_(ex),
        url_(std::move(url)),
        redacted_(redact_url(url_)),
        config_(std::move(config)),
        qs_(pg::quote_ident(config_.namespace_)),
        app_name_(("penguiflow " + config_.namespace_).substr(0, 63)),
        db_(ex, "postgresql queue " + redacted_),
        settle_(ex, "postgresql queue " + redacted_ + " (settle)"),
        listen_(ex, "postgresql queue " + redacted_ + " (listen)"),
        listen_timer_(ex) {
    secrets_ = url_secrets(url_);
    build_statements();
  }

  Task<void> start() {
    co_await connect_db(db_);
    co_await migrate();
    co_await connect_listen();
    asio::co_spawn(ex_, listen_loop(), asio::detached);
  }

  // --- enqueue -------------------------------------------------------------------------

  Task<EnqueueResult> enqueue(NewJob job) override {
    std::vector<NewJob> one;
    one.push_back(std::move(job));
    auto r = co_await enqueue_bulk(std::move(one));
    co_return r.at(0);
  }

  Task<std::vector<EnqueueResult>> enqueue_bulk(std::vector<NewJob> jobs) override {
    std::vector<EnqueueResult> out(jobs.size());
    if (jobs.empty()) co_return out;
    json::array arr;
    arr.reserve(jobs.size());
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const auto& nj = jobs[i];
      out[i].id = new_job_id();
      json::object o;
      o["ord"] = i;
      o["id"] = out[i].id;
      o["flow"] = nj.flow;
      o["tenant"] = nj.tenant;
      o["payload"] = json::serialize(nj.payload);
      o["max_attempts"] = nj.max_attempts;
      o["priority"] = nj.priority;
      o["delay_s"] = nj.delay_s;  // negative: run_at in the past (ordering, backfills)
      if (nj.deadline_s) o["deadline_s"] = *nj.deadline_s;
      if (!nj.idempotency_key.empty()) o["idempotency_key"] = nj.idempotency_key;
      arr.push_back(std::move(o));
    }
    Params p{json::serialize(arr)};
    auto r = co_await query(st_enqueue_, p);
    std::vector<std::size_t> unresolved;
    for (int row = 0; row < r.rows(); ++row) {
      auto ord = static_cast<std::size_t>(r.integer(row, 0));
      if (ord >= out.size()) continue;
      out[ord].created = r.boolean(row, 1);
      if (!r.is_null(row, 2)) out[ord].id = std::string(r.text(row, 2));
      else unresolved.push_back(ord);
    }
    if (!unresolved.empty()) {
      // The key was taken within this batch or by a transaction that committed after our
      // snapshot: look the winners up now.
      json::array keys;
      for (auto i : unresolved) keys.push_back(json::string(jobs[i].idempotency_key));
      Params kp{json::serialize(keys)};
      auto k = co_await query(st_ids_by_key_, kp);
      std::map<std::string, std::string, std::less<>> by_key;
      for (int row = 0; row < k.rows(); ++row) by_key[std::string(k.text(row, 0))] = std::string(k.text(row, 1));
      for (auto i : unresolved) {
        out[i].created = false;
        if (auto it = by_key.find(jobs[i].idempotency_key); it != by_key.end()) out[i].id = it->second;
      }
    }
    co_return out;
  }

  // --- fetch ---------------------------------------------------------------------------

  Task<std::vector<LeasedJob>> fetch(FetchRequest req) override {
    const int n = std::clamp(req.max_jobs, 1, 10000);
    const auto deadline = Clock::now() + std::max(req.wait, std::chrono::milliseconds(0));
    const double lease_s = std::max<double>(0.001, req.lease.count() / 1000.0);
    while (true) {
      if (closing_) throw QueueError("postgresql queue " + redacted_ + ": closed");
      pump_notifications();
      const bool idle_known = idle_.valid && listen_up_ && idle_.epoch == epoch_ && Clock::now() < idle_.recheck_at;
      if (!idle_known) {
        const auto epoch_before = epoch_;
        const bool listening = listen_up_;
        Params p{std::to_string(n), req.owner, num(lease_s)};
        auto r = co_await query(st_claim_, p);
        if (r.rows() > 0) {
          idle_.valid = false;
          auto jobs = co_await decode_claimed(r);
          if (!jobs.empty()) co_return jobs;
          continue;  // everything claimed was bad data and is dead now; look again
        }
        if (Clock::now() >= deadline) co_return std::vector<LeasedJob>{};  // wait=0: no more queries
        // Nothing ready: find when something will be (a delayed job, an expiring lease).
        Params none;
        auto d = co_await query(st_next_due_, none);
        double due_in = d.rows() && !d.is_null(0, 0) ? d.number(0, 0) : kIdleRecheckS;
        // At least a few ms: a due job can be briefly locked by another claimer (SKIP LOCKED).
        due_in = std::clamp(due_in, 0.005, kIdleRecheckS);
        idle_ = {listening, epoch_before, detail::steady_after(due_in) + std::chrono::milliseconds(1)};
      }
      const auto now = Clock::now();
      if (now >= deadline) co_return std::vector<LeasedJob>{};
      auto until = std::min(deadline, idle_.recheck_at);
      if (!listen_up_) until = std::min(until, now + kPollWithoutListen);
      co_await waiters_.wait_until(until);
    }
  }

  // --- settle --------------------------------------------------------------------------

  // Completions that arrive while one is in flight are sent together as one statement
  // (one round trip, one commit): the hot path of a busy worker. The first of a batch
  // waits one event-loop turn before sending, so the completions of jobs that finished in
  // the same turn (e.g. a fetched batch of no-op jobs) go with it instead of after it.
  Task<Settle> complete(const Lease& lease, json::value result, double latency_s) override {
    auto me = std::make_shared<PendingComplete>();
    me->id = lease.job_id;
    me->token = lease.token;
    me->result = json::serialize(result);
    me->latency_s = latency_s;
    complete_queue_.push_back(me);
    while (!me->done) {
      if (!complete_flushing_) {
        complete_flushing_ = true;
        co_await asio::post(ex_, asio::use_awaitable);
        co_await flush_completes();
        continue;
      }
      try {
        co_await complete_waiters_.wait_until(Clock::time_point::max());
      } catch (...) {
        // Cancelled while waiting: withdraw if the batch has not taken us yet.
        if (!me->done)
          complete_queue_.erase(std::remove(complete_queue_.begin(), complete_queue_.end(), me), complete_queue_.end());
        throw;
      }
    }
    if (me->error) std::rethrow_exception(me->error);
    co_return me->ok ? Settle::ok : Settle::stale;
  }

  Task<Settle> retry(const Lease& lease, double delay_s, std::string reason) override {
    tid_of_.erase(lease.job_id);
    Params p{lease.job_id, lease.token, num(std::max(0.0, delay_s)), std::move(reason)};
    auto r = co_await settle_query(st_retry_, p);
    co_return r.affected() > 0 ? Settle::ok : Settle::stale;
  }

  Task<Settle> fail(const Lease& lease, std::string reason, json::value details) override {
    tid_of_.erase(lease.job_id);
    Params p{lease.job_id, lease.token, std::move(reason), json::serialize(details)};
    auto r = co_await settle_query(st_fail_, p);
    co_return r.affected() > 0 ? Settle::ok : Settle::stale;
  }

  Task<Settle> heartbeat(Lease& lease, std::chrono::milliseconds extend) override {
    Params p{lease.job_id, lease.token, num(std::max<double>(0.001, extend.count() / 1000.0))};
    auto r = co_await settle_query(st_heartbeat_, p);
    if (r.rows() == 0) {
      tid_of_.erase(lease.job_id);
      co_return Settle::stale;
    }
    lease.expires_at = r.number(0, 0);
    if (auto it = tid_of_.find(lease.job_id); it != tid_of_.end() && it->second.first == lease.token)
      it->second.second = std::string(r.text(0, 1));  // the renewed row is a new tuple
    co_return Settle::ok;
  }

  // --- inspection ----------------------------------------------------------------------

  Task<Counts> counts() override {
    Params none;
    auto r = co_await query(st_counts_, none);
    Counts c;
    for (auto s : {JobState::queued, JobState::running, JobState::succeeded, JobState::dead})
      c.by_state[std::string(to_string(s))] = 0;
    add_counts(c, r);
    co_return c;
  }

  // Each arm of st_depth_ is answered by its partial index (jobs_ready, jobs_leased,
  // jobs_dead): the succeeded history is never read.
  Task<Counts> depth() override {
    Params none;
    auto r = co_await query(st_depth_, none);
    Counts c;
    for (auto s : {JobState::queued, JobState::running, JobState::dead}) c.by_state[std::string(to_string(s))] = 0;
    add_counts(c, r);
    co_return c;
  }

  // Rows of (tenant, state, count).
  template <class R>
  static void add_counts(Counts& c, R& r) {
    for (int i = 0; i < r.rows(); ++i) {
      std::string tenant(r.text(i, 0)), state(r.text(i, 1));
      auto n = r.integer(i, 2);
      c.by_state[state] += n;
      c.by_tenant[tenant][state] += n;
    }
  }

  Task<std::vector<Job>> list(ListFilter filter) override {
    Params p{filter.state ? std::optional<std::string>(std::string(to_string(*filter.state))) : std::nullopt,
             filter.tenant, std::to_string(std::max(0, filter.limit))};
    auto r = co_await query(st_list_, p);
    std::vector<Job> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(row_to_job_full(r, i));
    co_return out;
  }

  Task<std::optional<Job>> get(std::string id, std::optional<std::string> tenant) override {
    Params p{std::move(id), std::move(tenant)};
    auto r = co_await query(st_get_, p);
    if (r.rows() == 0) co_return std::nullopt;
    co_return row_to_job_full(r, 0);
  }

  Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> tenant) override {
    std::optional<std::string> id_list;
    if (!ids.empty()) {
      json::array a;
      for (auto& id : ids) a.push_back(json::string(id));
      id_list = json::serialize(a);
    }
    Params p{std::move(id_list), std::move(tenant)};
    auto r = co_await query(st_requeue_, p);
    co_return r.affected();
  }

  Task<bool> cancel(std::string id, std::optional<std::string> tenant) override {
    Params p{std::move(id), std::move(tenant)};
    auto r = co_await query(st_cancel_, p);
    co_return r.affected() > 0;
  }

  Task<std::int64_t> purge(double older_than_s) override {
    Params p{num(older_than_s)};
    auto r = co_await query(st_purge_, p);
    co_return r.affected();
  }

  // --- effects -------------------------------------------------------------------------

  Task<json::value> record_effect(std::string key, json::value value) override {
    Params p{key, json::serialize(value)};
    auto r = co_await query(st_record_effect_, p);
    if (r.rows() > 0) co_return parse_or_string(r.text(0, 0));
    // Inserted concurrently by a transaction our snapshot did not see: read it now.
    auto found = co_await lookup_effect(std::move(key));
    if (found) co_return *found;
    throw QueueError("postgresql queue " + redacted_ + ": effect vanished while recording it");
  }

  Task<std::optional<json::value>> lookup_effect(std::string key) override {
    Params p{std::move(key)};
    auto r = co_await query(st_lookup_effect_, p);
    if (r.rows() == 0) co_return std::nullopt;
    co_return parse_or_string(r.text(0, 0));
  }

  // --- lifecycle -----------------------------------------------------------------------

  Task<void> close() override {
    if (closed_) co_return;
    closed_ = true;
    closing_ = true;
    listen_.cancel();
    listen_timer_.cancel();
    waiters_.notify_all();
    while (loop_running_) co_await loop_done_.wait_until(Clock::time_point::max());
    auto lock = co_await lock_db(db_);
    db_.pg.close();
    auto settle_lock = co_await lock_db(settle_);
    settle_.pg.close();
    listen_.close();
  }

  std::string describe() const override { return redacted_; }

 private:
  struct PendingComplete {
    std::string id, token, result;
    std::string tid;  // the row's tuple id from the claim, when known
    double latency_s = 0;
    bool done = false;
    bool ok = false;
    std::exception_ptr error;
  };

  // Sends `group` as one complete statement; members it settled are marked ok, the others
  // are returned (not settled by this statement). The batch travels as parallel arrays:
  // json_to_recordset built a hash table per object on the server.
  Task<std::vector<PendingComplete*>> send_completes(const Statement& st, std::vector<PendingComplete*> group,
                                                     bool with_tid) {
    std::string ids = "{", tokens = "{", tids = "{", results = "{", latencies = "{";
    for (auto* c : group) {
      append_array_element(ids, c->id);
      append_array_element(tokens, c->token);
      if (with_tid) append_array_element(tids, c->tid);
      append_array_element(results, c->result);
      if (latencies.size() > 1) latencies += ',';
      latencies += num(c->latency_s);
    }
    for (auto* a : {&ids, &tokens, &tids, &results, &latencies}) *a += '}';
    Params p;
    if (with_tid) p = Params{std::move(ids), std::move(tokens), std::move(tids), std::move(results), std::move(latencies)};
    else p = Params{std::move(ids), std::move(tokens), std::move(results), std::move(latencies)};
    auto r = co_await settle_query(st, p);
    std::multiset<std::string, std::less<>> settled;
    for (int i = 0; i < r.rows(); ++i) settled.emplace(r.text(i, 0));
    std::vector<PendingComplete*> rest;
    for (auto* c : group) {
      // The same lease twice in one batch: only the first settles.
      auto it = settled.find(c->id);
      if (it != settled.end()) {
        c->ok = true;
        settled.erase(it);
      } else {
        rest.push_back(c);
      }
    }
    co_return rest;
  }

  Task<void> flush_completes() {
    complete_flushing_ = true;
    auto batch = std::move(complete_queue_);
    complete_queue_.clear();
    std::exception_ptr error;
    try {
      std::vector<PendingComplete*> by_tid, by_id;
      for (auto& c : batch) {
        if (auto it = tid_of_.find(c->id); it != tid_of_.end()) {
          if (it->second.first == c->token) c->tid = std::move(it->second.second);
          tid_of_.erase(it);
        }
        (c->tid.empty() ? by_id : by_tid).push_back(c.get());
      }
      if (!by_tid.empty()) {
        // Rows not found by tuple id (moved, or not ours any more) are retried by id.
        auto missed = co_await send_completes(st_complete_tid_, std::move(by_tid), true);
        by_id.insert(by_id.end(), missed.begin(), missed.end());
      }
      if (!by_id.empty()) co_await send_completes(st_complete_, std::move(by_id), false);
    } catch (...) {
      error = std::current_exception();
    }
    for (auto& c : batch) {
      c->done = true;
      c->error = error;
    }
    complete_flushing_ = false;
    complete_waiters_.notify_all();
  }

  struct IdleCache {
    bool valid = false;
    std::uint64_t epoch = 0;
    Clock::time_point recheck_at{};
  };

  void build_statements() {
    const std::string& s = qs_;
    auto st = [](const char* name, std::string sql) { return Statement{std::string("pf_") + name, std::move(sql)}; };
    // The hot path: claims and settles (see kPinPlans).
    auto hot = [](const char* name, std::string sql) {
      return Statement{std::string("pf_") + name, std::move(sql), true};
    };
    auto claim = [](const char* name, std::string sql) {
      return Statement{std::string("pf_") + name, std::move(sql), true, true};
    };
    st_enqueue_ = st("enqueue",
        "WITH input AS (SELECT * FROM json_to_recordset($1::json) AS x(ord integer, id text, flow text, tenant text, "
        "payload text, max_attempts integer, priority integer, delay_s double precision, deadline_s double precision, "
        "idempotency_key text)), "
        "ins AS (INSERT INTO " + s + ".jobs (id, flow, tenant, payload, max_attempts, priority, run_at, deadline_s, "
        "idempotency_key) SELECT id, flow, tenant, payload, max_attempts, priority, " + s + ".now_s() + delay_s, "
        "deadline_s, idempotency_key FROM input ORDER BY ord "
        "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id) "
        "SELECT i.ord, ins.id IS NOT NULL, coalesce(ins.id, k.id) FROM input i LEFT JOIN ins ON ins.id = i.id "
        "LEFT JOIN " + s + ".jobs k ON ins.id IS NULL AND k.idempotency_key = i.idempotency_key ORDER BY i.ord");
    st_ids_by_key_ = st("ids_by_key", "SELECT idempotency_key, id FROM " + s +
        ".jobs WHERE idempotency_key = ANY (ARRAY(SELECT json_array_elements_text($1::json)))");
    // Q1/Q4/Q6: ready jobs in order through the partial index, plus jobs whose lease
    // expired; SKIP LOCKED lets concurrent workers claim disjoint batches. The UPDATE finds
    // the rows it locked by their tuple id (a row locked by us cannot move before we
    // commit), not by a second primary-key lookup: ~2 us less server CPU per claimed job.
    // The id is compared as well, so a tuple id could at worst miss, never claim another row.
    st_claim_ = claim("claim",
        "WITH ready AS (SELECT ctid AS tid, id, priority, run_at, seq FROM " + s + ".jobs WHERE state = 'queued' AND "
        "run_at <= " + s + ".now_s() ORDER BY priority DESC, run_at, seq LIMIT $1 FOR UPDATE SKIP LOCKED), "
        "expired AS (SELECT ctid AS tid, id, priority, run_at, seq FROM " + s + ".jobs WHERE state = 'running' AND "
        "lease_expires_at <= " + s + ".now_s() ORDER BY priority DESC, run_at, seq LIMIT $1 FOR UPDATE SKIP LOCKED), "
        "pick AS (SELECT tid, id FROM (SELECT * FROM ready UNION ALL SELECT * FROM expired) c "
        "ORDER BY priority DESC, run_at, seq LIMIT $1) "
        "UPDATE " + s + ".jobs j SET state = 'running', attempts = j.attempts + 1, lease_owner = $2, "
        "lease_token = gen_random_uuid()::text, lease_expires_at = " + s + ".now_s() + $3::double precision, "
        "updated_at = " + s + ".now_s() FROM pick WHERE j.ctid = pick.tid AND j.id = pick.id RETURNING " + kCols +
        ", j.ctid");
    st_next_due_ = st("next_due", "SELECT least((SELECT min(run_at) FROM " + s + ".jobs WHERE state = 'queued'), "
        "(SELECT min(lease_expires_at) FROM " + s + ".jobs WHERE state = 'running')) - " + s + ".now_s()");
    st_bury_ = hot("bury", "UPDATE " + s + ".jobs j SET state = 'dead', reason = x.reason, details = x.details, "
        "lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s() "
        "FROM json_to_recordset($1::json) AS x(id text, token text, reason text, details text) "
        "WHERE j.id = x.id AND j.lease_token = x.token");
    st_adopt_raw_ = hot("adopt_raw", "UPDATE " + s + ".jobs j SET flow = x.flow, tenant = x.tenant, payload = x.payload, "
        "max_attempts = x.max_attempts, deadline_s = x.deadline_s, raw = NULL "
        "FROM json_to_recordset($1::json) AS x(id text, token text, flow text, tenant text, payload text, "
        "max_attempts integer, deadline_s double precision) WHERE j.id = x.id AND j.lease_token = x.token");
    const std::string fence = " WHERE id = $1 AND lease_token = $2 AND state = 'running'";
    // The common case: completes find their rows by the tuple id the claim returned (one
    // heap fetch instead of a primary-key descent); id and token are still checked, so a
    // row that moved since (or a reused slot) is simply not settled here and goes through
    // st_complete_ by id. The lease token is the fence: every statement that ends a lease
    // clears it, so a matching token means the job is running under that lease. (A
    // `state = 'running'` test here would let the planner walk jobs_leased, every running
    // row and dead version, for each batch instead of fetching the batch's rows.)
    st_complete_tid_ = hot("complete_tid", "UPDATE " + s + ".jobs j SET state = 'succeeded', result = x.result, "
        "latency_s = x.latency_s, lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s() "
        "FROM unnest($1::text[], $2::text[], $3::tid[], $4::text[], $5::double precision[]) AS x(id, token, tid, result, "
        "latency_s) "
        "WHERE j.ctid = x.tid AND j.id = x.id AND j.lease_token = x.token RETURNING j.id");
    st_complete_ = hot("complete", "UPDATE " + s + ".jobs j SET state = 'succeeded', result = x.result, "
        "latency_s = x.latency_s, lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s() "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::double precision[]) AS x(id, token, result, latency_s) "
        "WHERE j.id = x.id AND j.lease_token = x.token RETURNING j.id");
    st_retry_ = hot("retry", "UPDATE " + s + ".jobs SET state = 'queued', run_at = " + s + ".now_s() + $3, "
        "reason = $4, lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s()" + fence);
    st_fail_ = hot("fail", "UPDATE " + s + ".jobs SET state = 'dead', reason = $3, details = $4, "
        "lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s()" + fence);
    st_heartbeat_ = hot("heartbeat", "UPDATE " + s + ".jobs SET lease_expires_at = " + s + ".now_s() + $3, "
        "updated_at = " + s + ".now_s()" + fence + " RETURNING lease_expires_at, ctid");
    st_counts_ = st("counts", "SELECT coalesce(tenant, ''), state, count(*) FROM " + s + ".jobs GROUP BY 1, 2");
    {
      std::string arms;
      for (const char* state : {"queued", "running", "dead"})
        arms += std::string(arms.empty() ? "" : " UNION ALL ") + "SELECT coalesce(tenant, ''), state, count(*) FROM " +
                s + ".jobs WHERE state = '" + state + "' GROUP BY 1, 2";
      st_depth_ = st("depth", arms);
    }
    st_list_ = st("list", std::string("SELECT ") + kCols + " FROM " + s + ".jobs j WHERE ($1::text IS NULL OR "
        "j.state = $1) AND ($2::text IS NULL OR j.tenant = $2) ORDER BY j.seq LIMIT $3");
    st_get_ = st("get", std::string("SELECT ") + kCols + " FROM " + s + ".jobs j WHERE j.id = $1 AND "
        "($2::text IS NULL OR j.tenant = $2)");
    st_requeue_ = st("requeue", "UPDATE " + s + ".jobs SET state = 'queued', attempts = 0, run_at = " + s +
        ".now_s(), lease_token = NULL, lease_expires_at = NULL, updated_at = " + s + ".now_s() "
        "WHERE state = 'dead' AND ($1::text IS NULL OR id IN (SELECT json_array_elements_text($1::json))) "
        "AND ($2::text IS NULL OR tenant = $2)");
    st_cancel_ = st("cancel", "UPDATE " + s + ".jobs SET state = 'dead', reason = 'cancelled', lease_token = NULL, "
        "lease_expires_at = NULL, updated_at = " + s + ".now_s() WHERE id = $1 AND state IN ('queued', 'running') "
        "AND ($2::text IS NULL OR tenant = $2)");
    st_purge_ = st("purge", "DELETE FROM " + s + ".jobs WHERE state IN ('succeeded', 'dead') AND updated_at < " +
        s + ".now_s() - $1::double precision");
    st_record_effect_ = st("record_effect", "WITH ins AS (INSERT INTO " + s + ".effects (key, value) VALUES ($1, $2) "
        "ON CONFLICT (key) DO NOTHING RETURNING value) SELECT value FROM ins UNION ALL "
        "SELECT value FROM " + s + ".effects WHERE key = $1 LIMIT 1");
    st_lookup_effect_ = st("lookup_effect", "SELECT value FROM " + s + ".effects WHERE key = $1");
  }

  // Q9: decodes the claimed rows; rows that cannot be decoded go dead (once: a dead job is
  // never claimed again) and are not returned.
  Task<std::vector<LeasedJob>> decode_claimed(const PgResult& r) {
    struct Row {
      LeasedJob lj;
      std::int64_t seq;
    };
    std::vector<Row> good;
    json::array bury, adopt;
    for (int i = 0; i < r.rows(); ++i) {
      Job job = row_to_job(r, i);
      Lease lease{job.id, job.lease_owner, std::string(r.text(i, c_token)), job.lease_expires_at};
      std::optional<DecodeError> error;
      bool adopted = false;
      if (r.is_null(i, c_payload) && !r.is_null(i, c_raw)) {
        // A whole document written by an outside producer into `raw`.
        auto d = decode_job_document(r.text(i, c_raw), config_, job.id);
        if (d.error) {
          error = d.error;
        } else {
          job.flow = d.job->flow;
          job.tenant = d.job->tenant;
          job.payload = std::move(d.job->payload);
          job.max_attempts = d.job->max_attempts;
          job.deadline_s = d.job->deadline_s;
          json::object o;
          o["id"] = job.id;
          o["token"] = lease.token;
          o["flow"] = job.flow;
          o["tenant"] = job.tenant;
          o["payload"] = json::serialize(job.payload);
          o["max_attempts"] = job.max_attempts;
          if (job.deadline_s) o["deadline_s"] = *job.deadline_s;
          adopt.push_back(std::move(o));
          adopted = true;
        }
      } else {
        auto text = r.text(i, c_payload);
        std::error_code ec;
        json::value payload = r.is_null(i, c_payload) ? json::value(nullptr) : json::parse(text, ec);
        if (ec) {
          error = DecodeError{DecodeError::Code::bad_json, "malformed job: invalid JSON payload (" + ec.message() + ")"};
        } else {
          job.payload = std::move(payload);
          error = validate_job(job, config_, std::max<std::size_t>(text.size(), 1));
        }
      }
      if (error) {
        json::object o;
        o["id"] = job.id;
        o["token"] = lease.token;
        o["reason"] = error->reason;
        o["details"] = json::serialize(error->details());
        bury.push_back(std::move(o));
        continue;
      }
      if (!adopted) {
        if (tid_of_.size() >= kMaxTids) tid_of_.clear();
        tid_of_.insert_or_assign(job.id, std::make_pair(lease.token, std::string(r.text(i, c_tid))));
      }
      good.push_back(Row{LeasedJob{std::move(job), std::move(lease)}, r.integer(i, c_seq)});
    }
    if (!bury.empty()) {
      Params p{json::serialize(bury)};
      co_await query(st_bury_, p);
    }
    if (!adopt.empty()) {
      Params p{json::serialize(adopt)};
      co_await query(st_adopt_raw_, p);
    }
    // RETURNING has no order: restore fetch order (Q4).
    std::sort(good.begin(), good.end(), [](const Row& a, const Row& b) {
      if (a.lj.job.priority != b.lj.job.priority) return a.lj.job.priority > b.lj.job.priority;
      if (a.lj.job.run_at != b.lj.job.run_at) return a.lj.job.run_at < b.lj.job.run_at;
      return a.seq < b.seq;
    });
    std::vector<LeasedJob> out;
    out.reserve(good.size());
    for (auto& g : good) out.push_back(std::move(g.lj));
    co_return out;
  }

  // --- the statement connection --------------------------------------------------------

  // A statement connection with its lock and reconnect backoff. Claims, inspection and
  // enqueues use `db_`; settles (complete, retry, fail, heartbeat) use `settle_`, so a
  // batch of completions commits while the next claim runs: the server group-commits
  // the two instead of making each wait for the other's fsync.
  struct Link {
    Link(asio::any_io_executor ex, std::string label) : pg(ex, std::move(label)) {}
    PgConnection pg;
    bool busy = false;
    bool pinned = false;       // kPinPlans is in effect on this connection
    bool lazy_commit = false;  // kLazyCommit is
    detail::WaitSet waiters;
    Clock::time_point next_connect_at{};
    Clock::duration backoff = kBackoffMin;
  };

  struct DbLock {
    Link* l;
    DbLock(Link* l) : l(l) {}
    DbLock(DbLock&& o) noexcept : l(o.l) { o.l = nullptr; }
    ~DbLock() {
      if (l) {
        l->busy = false;
        l->waiters.notify_all();
      }
    }
  };

  // One statement at a time on a connection, in call order. Cancellable while waiting.
  Task<DbLock> lock_db(Link& l) {
    while (l.busy) co_await l.waiters.wait_until(Clock::time_point::max());
    l.busy = true;
    co_return DbLock(&l);
  }

  Task<void> connect_db(Link& l) {
    const auto now = Clock::now();
    if (now < l.next_connect_at) {
      // Back off after a failed attempt so a down server is not hammered.
      asio::steady_timer t(ex_, l.next_connect_at);
      co_await t.async_wait(asio::use_awaitable);
    }
    try {
      l.pinned = false;  // a new session has the server's defaults
      l.lazy_commit = false;
      co_await l.pg.connect(url_, app_name_, kConnectTimeout, secrets_);
      l.backoff = kBackoffMin;
      l.next_connect_at = {};
    } catch (const PgError&) {
      l.next_connect_at = Clock::now() + l.backoff;
      l.backoff = std::min<Clock::duration>(l.backoff * 2, kBackoffMax);
      throw;
    }
  }

  Task<PgResult> query(const Statement& st, const Params& params) { return query_on(db_, st, params); }

  // The settle connection is opened on first use.
  Task<PgResult> settle_query(const Statement& st, const Params& params) { return query_on(settle_, st, params); }

  Task<PgResult> query_on(Link& l, const Statement& st, const Params& params) {
    if (closed_) throw QueueError("postgresql queue " + redacted_ + ": closed");
    auto lock = co_await lock_db(l);
    if (closed_) throw QueueError("postgresql queue " + redacted_ + ": closed");
    if (!l.pg.still_alive()) co_await connect_db(l);
    if (st.pinned != l.pinned || st.lazy_commit != l.lazy_commit) {
      std::string setup;
      if (st.pinned != l.pinned) setup = st.pinned ? kPinPlans : kUnpinPlans;
      if (st.lazy_commit != l.lazy_commit) setup += std::string(setup.empty() ? "" : "; ") + (st.lazy_commit ? kLazyCommit : kStrictCommit);
      co_await l.pg.exec_script(setup);
      l.pinned = st.pinned;
      l.lazy_commit = st.lazy_commit;
    }
    co_return co_await l.pg.exec(st, params);
  }

  // --- migrations ----------------------------------------------------------------------

  Task<void> migrate() {
    auto lock = co_await lock_db(db_);
    const Params none;
    co_await db_.pg.exec_script("BEGIN");
    bool committed = false;
    std::optional<std::string> error;
    try {
      co_await db_.pg.exec_script("SELECT pg_advisory_xact_lock(" + std::to_string(pg::kMigrationLockKey) + ")");
      co_await db_.pg.exec_script("CREATE SCHEMA IF NOT EXISTS " + qs_ + "; CREATE TABLE IF NOT EXISTS " + qs_ +
                               ".schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL "
                               "DEFAULT now())");
      auto r = co_await db_.pg.exec_script("SELECT coalesce(max(version), 0) FROM " + qs_ + ".schema_version");
      const int have = static_cast<int>(r.integer(0, 0));
      if (have > kPostgresSchemaVersion) {
        error = "postgresql queue " + redacted_ + ": schema " + config_.namespace_ + " is at version " +
                std::to_string(have) + ", newer than this build knows (" + std::to_string(kPostgresSchemaVersion) +
                "); upgrade penguiflow";
      } else {
        auto steps = pg::migrations(qs_);
        for (int v = have; v < kPostgresSchemaVersion; ++v) co_await db_.pg.exec_script(steps[static_cast<std::size_t>(v)]);
        co_await db_.pg.exec_script("COMMIT");
        committed = true;
      }
    } catch (const PgError& e) {
      error = std::string(e.what());
    }
    if (!committed && db_.pg.connected()) {
      try {
        co_await db_.pg.exec_script("ROLLBACK");
      } catch (const PgError&) {
      }
    }
    if (error) throw QueueError(*error);
  }

  // --- notifications -------------------------------------------------------------------

  Task<void> connect_listen() {
    co_await listen_.connect(url_, app_name_, kConnectTimeout, secrets_);
    co_await listen_.exec_script("LISTEN " + qs_);
    listen_up_ = true;
    ++epoch_;
  }

  // Reads notifications already received without waiting (the listen loop may not have
  // run yet since they arrived).
  void pump_notifications() {
    if (!listen_up_ || listen_busy_) return;
    try {
      if (listen_.take_notifications() > 0) ++epoch_;
    } catch (const PgError&) {
      listen_up_ = false;
      ++epoch_;
    }
  }

  Task<void> listen_loop() {
    loop_running_ = true;
    auto backoff = std::chrono::duration_cast<Clock::duration>(kBackoffMin);
    while (!closing_) {
      bool failed = false;
      try {
        if (!listen_up_) {
          listen_busy_ = true;
          co_await connect_listen();
          listen_busy_ = false;
          backoff = kBackoffMin;
          waiters_.notify_all();
        }
        co_await listen_.wait_readable();
        if (listen_.take_notifications() > 0) {
          ++epoch_;
          waiters_.notify_all();
        }
      } catch (...) {
        failed = true;
      }
      if (failed && !closing_) {
        listen_busy_ = false;
        listen_.close();
        listen_up_ = false;
        ++epoch_;
        waiters_.notify_all();  // idle fetches switch to polling while we reconnect
        listen_timer_.expires_after(backoff);
        boost::system::error_code ec;
        co_await listen_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        backoff = std::min<Clock::duration>(backoff * 2, kBackoffMax);
      }
    }
    loop_running_ = false;
    loop_done_.notify_all();
  }

  asio::any_io_executor ex_;
  std::string url_;
  std::string redacted_;
  std::vector<std::string> secrets_;  // url_secrets(url_): scrubbed from libpq's messages
  QueueConfig config_;
  std::string qs_;
  std::string app_name_;
  Link db_;
  Link settle_;
  PgConnection listen_;
  asio::steady_timer listen_timer_;


  bool listen_up_ = false;
  bool listen_busy_ = false;  // the listen loop is (re)connecting: leave listen_ alone
  std::uint64_t epoch_ = 0;   // bumped on every notification and listen (re)connect
  detail::WaitSet waiters_;   // idle fetches
  IdleCache idle_;
  bool loop_running_ = false;
  detail::WaitSet loop_done_;
  bool closing_ = false;
  bool closed_ = false;

  std::vector<std::shared_ptr<PendingComplete>> complete_queue_;
  bool complete_flushing_ = false;
  detail::WaitSet complete_waiters_;

  // Job id -> (lease token, tuple id) of the rows this handle claimed and has not settled:
  // completes address their rows by tuple id. Bounded (cleared when it grows past
  // kMaxTids: leases abandoned without a settle then simply complete by id).
  static constexpr std::size_t kMaxTids = 100000;
  std::unordered_map<std::string, std::pair<std::string, std::string>> tid_of_;

  Statement st_enqueue_, st_ids_by_key_, st_claim_, st_next_due_, st_bury_, st_adopt_raw_, st_complete_tid_, st_complete_, st_retry_,
      st_fail_, st_heartbeat_, st_counts_, st_depth_, st_list_, st_get_, st_requeue_, st_cancel_, st_purge_, st_record_effect_,
      st_lookup_effect_;
};

bool is_postgres_url(std::string_view url) {
  return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
}

}  // namespace

Task<std::unique_ptr<JobQueue>> open_postgres_queue(asio::any_io_executor ex, std::string url, QueueConfig config) {
  if (!is_postgres_url(url))
    throw QueueError("postgresql queue " + redact_url(url) + ": not a postgresql:// or postgres:// URL");
  if (!pg::valid_schema_name(config.namespace_))
    throw QueueError("postgresql queue " + redact_url(url) + ": namespace '" + config.namespace_ +
                     "' is not a valid schema name (1-63 of [A-Za-z0-9_-])");
  auto q = std::make_unique<PostgresQueue>(ex, std::move(url), std::move(config));
  std::exception_ptr failure;
  try {
    co_await q->start();
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await q->close();
    std::rethrow_exception(failure);
  }
  co_return std::unique_ptr<JobQueue>(std::move(q));
}

}  // namespace penguiflow::queue
