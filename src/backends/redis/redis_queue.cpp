// The Redis JobQueue: Lua scripts over one pipelined connection, BLPOP wake-ups for idle
// fetchers. Layout and wire format: docs/wire-format.md#redis.
#include <penguiflow/backends/redis.hpp>
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include "connection.hpp"
#include "scripts.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <set>
#include <unordered_map>

namespace penguiflow::queue {
namespace {

using redis::Connection;
using redis::RespValue;
using redis::Script;

std::string num(double v) {
  std::array<char, 64> buf;
  auto [p, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return std::string(buf.data(), p);
}

/// Unix seconds cut to whole milliseconds: its text has at most 14 significant digits, so
/// Redis parses it (ZADD scores, and the scores of small sorted sets, which are stored as
/// text and re-parsed on every insert) on strtod's fast path instead of its multi-precision
/// one. Floor, so that a delayed job is never fetched early.
double ms_floor(double v) { return std::floor(v * 1000) / 1000; }

double to_double(const std::string& s, double dflt = 0) {
  if (s.empty()) return dflt;
  double v = dflt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() ? v : dflt;
}

int to_int(const std::string& s, int dflt = 0) {
  if (s.empty()) return dflt;
  double d = to_double(s, dflt);
  return static_cast<int>(d);
}

using Fields = std::unordered_map<std::string, std::string>;

Fields to_fields(const RespValue& v) {
  Fields f;
  for (std::size_t i = 0; i + 1 < v.elements.size(); i += 2) f[v.elements[i].str] = v.elements[i + 1].str;
  return f;
}

std::string field(const Fields& f, const char* name) {
  auto it = f.find(name);
  return it == f.end() ? std::string() : it->second;
}

boost::json::value parse_or_string(const std::string& s) {
  if (s.empty()) return nullptr;
  boost::system::error_code ec;
  auto v = boost::json::parse(s, ec);
  if (ec) return boost::json::value(s);
  return v;
}

/// A decoded job document overlaid with the hash fields (the authority on state).
/// `decode_error` receives the Q9 refusal when the document does not decode; the Job is
/// then built from the hash fields alone (payload null).
Job job_from_fields(const Fields& f, const QueueConfig& config, std::optional<DecodeError>* decode_error) {
  std::string id = field(f, "id");
  Job job;
  auto doc = f.find("doc");
  if (doc == f.end()) {
    if (decode_error)
      *decode_error = DecodeError{DecodeError::Code::bad_json, "malformed job: job document missing (no 'doc' field)"};
  } else {
    auto d = decode_job_document(doc->second, config, id);
    if (d.job)
      job = std::move(*d.job);
    else if (decode_error)
      *decode_error = d.error;
  }
  job.id = id;
  if (auto t = field(f, "tenant"); !t.empty() || job.tenant.empty()) job.tenant = t;
  if (auto s = parse_job_state(field(f, "state"))) job.state = *s;
  job.attempts = to_int(field(f, "attempts"), job.attempts);
  job.priority = to_int(field(f, "priority"), job.priority);
  job.run_at = to_double(field(f, "run_at"), job.run_at);
  job.reason = field(f, "reason");
  job.details = parse_or_string(field(f, "details"));
  job.result = parse_or_string(field(f, "result"));
  job.created_at = to_double(field(f, "created_at"));
  job.updated_at = to_double(field(f, "updated_at"));
  if (auto l = field(f, "latency_s"); !l.empty()) job.latency_s = to_double(l);
  // "lease": the job's entry in {ns}:leases, when it has one (then it is running):
  // '<token> <expires_at> <attempts> <#owner> <owner><tenant>'.
  if (auto l = field(f, "lease"); !l.empty()) {
    std::array<std::size_t, 4> sp{};
    std::size_t at = 0;
    bool ok = true;
    for (auto& p : sp) {
      p = l.find(' ', at);
      if (p == std::string::npos) {
        ok = false;
        break;
      }
      at = p + 1;
    }
    if (ok) {
      job.state = JobState::running;
      job.lease_expires_at = to_double(l.substr(sp[0] + 1, sp[1] - sp[0] - 1));
      job.attempts = to_int(l.substr(sp[1] + 1, sp[2] - sp[1] - 1), job.attempts);
      auto olen = static_cast<std::size_t>(std::max(0, to_int(l.substr(sp[2] + 1, sp[3] - sp[2] - 1))));
      job.lease_owner = l.substr(sp[3] + 1, olen);
    }
  }
  return job;
}

/// The fetch script returns 7 elements per job, one job after the other.
constexpr std::size_t kFetchFields = 7;

/// A job as the fetch script returns it: id, doc, tenant, attempts, run_at, created_at,
/// reason (nil where the hash has no such field), at `f`; now running. The priority comes
/// from the document (the hash's copy never differs).
Job job_from_fetch(const RespValue* f, const QueueConfig& config, double now, std::optional<DecodeError>* decode_error) {
  const std::string& id = f[0].str;
  Job job;
  if (f[1].is_nil()) {
    *decode_error = DecodeError{DecodeError::Code::bad_json, "malformed job: job document missing (no 'doc' field)"};
  } else {
    auto d = decode_job_document(f[1].str, config, id);
    if (d.job)
      job = std::move(*d.job);
    else
      *decode_error = d.error;
  }
  job.id = id;
  if (const auto& t = f[2].str; !t.empty() || job.tenant.empty()) job.tenant = t;
  job.state = JobState::running;
  job.attempts = to_int(f[3].str, job.attempts);
  job.run_at = to_double(f[4].str, job.run_at);
  job.created_at = to_double(f[5].str);
  job.updated_at = now;
  job.reason = f[6].str;
  return job;
}

QueueConfig inspection_config() {
  QueueConfig c;
  c.max_payload_bytes = std::numeric_limits<std::size_t>::max();
  return c;
}

class RedisQueue final : public JobQueue {
 public:
  RedisQueue(boost::asio::any_io_executor ex, redis::Endpoint ep, QueueConfig config)
      : ex_(ex),
        ep_(ep),
        config_(std::move(config)),
        keys_(config_.namespace_),
        script_keys_(keys_.script_keys()),
        conn_(ex, ep, "penguiflow:" + config_.namespace_) {}

  ~RedisQueue() override { close_now(); }

  Task<void> open() {
    co_await conn_.connect();
    std::vector<std::vector<std::string>> loads;
    for (std::size_t i = 0; i < redis::kScriptCount; ++i)
      loads.push_back({"SCRIPT", "LOAD", redis::script_text(static_cast<Script>(i))});
    auto replies = co_await conn_.exec_many(std::move(loads));
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (replies[i].is_error())
        throw error("cannot load script " + std::string(redis::script_name(static_cast<Script>(i))) + " (" +
                    replies[i].str + ")");
      shas_[i] = replies[i].str;
    }
    co_await check_layout();
  }

  /// Stamps a queue without a layout key with ours (a new queue, or one of layouts 1-2,
  /// which this build reads), and refuses one a newer build wrote: its scripts would
  /// misread keys they do not know.
  Task<void> check_layout() {
    const std::string ours = std::to_string(kRedisLayoutVersion);
    std::vector<std::vector<std::string>> cmds{{"SET", keys_.layout, ours, "NX"}, {"GET", keys_.layout}};
    auto r = co_await conn_.exec_many(std::move(cmds));
    if (r.size() != 2 || r[1].is_error()) throw error("cannot read the queue's layout version");
    const std::string& have = r[1].str;
    int v = 0;
    auto [end, ec] = std::from_chars(have.data(), have.data() + have.size(), v);
    if (ec != std::errc() || end != have.data() + have.size() || v < 1)
      throw error("namespace '" + config_.namespace_ + "' has an unreadable layout version '" + have + "' in " +
                  keys_.layout);
    if (v > kRedisLayoutVersion)
      throw error("namespace '" + config_.namespace_ + "' is at layout version " + have +
                  ", newer than this build knows (" + ours + "); upgrade penguiflow");
    if (v < kRedisLayoutVersion) {
      std::vector<std::string> set{"SET", keys_.layout, ours};
      co_await conn_.exec(std::move(set));
    }
  }

  Task<EnqueueResult> enqueue(NewJob job) override {
    std::vector<NewJob> one;
    one.push_back(std::move(job));
    auto r = co_await enqueue_bulk(std::move(one));
    co_return r.front();
  }

  Task<std::vector<EnqueueResult>> enqueue_bulk(std::vector<NewJob> jobs) override {
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    constexpr std::size_t kChunk = 500;  // bounds one script's run time and argument count
    for (std::size_t start = 0; start < jobs.size(); start += kChunk) {
      std::size_t end = std::min(jobs.size(), start + kChunk);
      double now = unix_now();
      std::vector<std::string> argv{num(now), std::to_string(end - start)};
      argv.reserve(2 + 7 * (end - start));
      for (std::size_t i = start; i < end; ++i) {
        Job j = make_job(jobs[i], new_job_id(), now);
        argv.push_back(j.id);
        argv.push_back(encode_job_document(j));
        argv.push_back(j.tenant);
        argv.push_back(std::to_string(j.priority));
        argv.push_back(num(j.run_at));
        argv.push_back(j.idempotency_key);
        argv.push_back(jobs[i].delay_s > 0 ? "1" : "0");
      }
      auto r = co_await eval(Script::enqueue, std::move(argv));
      for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
        out.push_back(EnqueueResult{r.elements[i].str, r.elements[i + 1].as_int() == 1});
    }
    co_return out;
  }

  Task<std::vector<LeasedJob>> fetch(FetchRequest req) override {
    const auto deadline = std::chrono::steady_clock::now() + req.wait;
    const int max_jobs = std::max(1, req.max_jobs);
    std::vector<LeasedJob> out;
    // The settles waiting on this handle ride on the first call: applied before anything
    // is taken (fetch_carries_settles()), in one script call instead of two. More than
    // one batch waiting (a lane with over kMaxBatch slots): the others go first.
    auto carried = take_batch(nullptr);
    while (!pending_settles_.empty()) {
      co_await send_settle_batch(carried);
      carried = take_batch(nullptr);
    }
    while (true) {
      double now = ms_floor(unix_now());
      double expires = ms_floor(now + std::chrono::duration<double>(req.lease).count());
      std::string token_prefix = new_lease_token();
      std::vector<std::string> args1{num(now), std::to_string(max_jobs), req.owner, num(expires), token_prefix};
      RespValue r;
      if (carried.empty()) {
        r = co_await eval(Script::fetch, std::move(args1));
      } else {
        auto batch = std::move(carried);
        carried.clear();
        args1.push_back(std::to_string(batch.size()));
        append_settle_args(args1, batch);
        r = co_await send_batch(Script::fetch, std::move(args1), batch, 2);
      }
      if (!r.is_array() || r.elements.size() != 3 || r.elements[1].elements.size() % kFetchFields != 0)
        throw error("unexpected fetch reply");
      const std::string next_due = r.elements[0].str;
      bool refused = false;
      const auto& taken = r.elements[1].elements;
      for (std::size_t k = 0; k < taken.size(); k += kFetchFields) {
        std::optional<DecodeError> bad;
        Job job = job_from_fetch(&taken[k], config_, now, &bad);
        job.lease_owner = req.owner;
        job.lease_expires_at = expires;
        Lease lease{job.id, req.owner, token_prefix, expires};
        if (bad) {
          // Q9: dead once, with the reason; fenced by the lease just taken.
          refused = true;
          std::vector<std::string> args2{bad->reason, boost::json::serialize(bad->details())};
          co_await settle(lease, "fail", std::move(args2));
          continue;
        }
        out.push_back(LeasedJob{std::move(job), std::move(lease)});
      }
      if (!out.empty()) co_return out;
      if (refused) continue;  // more may be ready behind the refused ones
      auto left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) co_return out;
      double wait_s = left;
      if (!next_due.empty()) wait_s = std::min(wait_s, to_double(next_due) - unix_now());
      const bool until_deadline = wait_s >= left;
      // Timed out with no wake-up token and nothing due before the deadline: nothing can
      // have become ready, so skip the last script call (idle cost: 2 commands a wait).
      if (!co_await wait_for_wake(std::max(wait_s, 0.01)) && until_deadline) co_return out;
    }
  }

  Task<Settle> complete(const Lease& lease, boost::json::value result, double latency_s) override {
    std::vector<std::string> args3{boost::json::serialize(result), num(latency_s)};
    co_return co_await settle_combined(lease, "complete", std::move(args3));
  }

  Task<Settle> retry(const Lease& lease, double delay_s, std::string reason) override {
    double run_at = unix_now() + std::max(0.0, delay_s);
    std::vector<std::string> args4{num(run_at), std::move(reason), delay_s > 0 ? "1" : "0"};
    co_return co_await settle_combined(lease, "retry", std::move(args4));
  }

  Task<Settle> fail(const Lease& lease, std::string reason, boost::json::value details) override {
    std::vector<std::string> args5{std::move(reason), boost::json::serialize(details)};
    co_return co_await settle_combined(lease, "fail", std::move(args5));
  }

  Task<Settle> heartbeat(Lease& lease, std::chrono::milliseconds extend) override {
    double expires = ms_floor(unix_now() + std::chrono::duration<double>(extend).count());
    std::vector<std::string> args6{num(expires)};
    auto s = co_await settle(lease, "heartbeat", std::move(args6));
    if (s == Settle::ok) lease.expires_at = expires;
    co_return s;
  }

  Task<Counts> counts() override {
    std::vector<std::string> args7{num(unix_now()), "counts"};
    auto r = co_await eval(Script::admin, std::move(args7));
    Counts c;
    if (!r.is_array() || r.elements.size() != 6) throw error("unexpected counts reply");
    c.by_state["queued"] = r.elements[0].as_int() + r.elements[1].as_int();
    c.by_state["running"] = r.elements[2].as_int();
    c.by_state["succeeded"] = r.elements[3].as_int();
    c.by_state["dead"] = r.elements[4].as_int();
    const auto& kv = r.elements[5].elements;
    for (std::size_t i = 0; i + 1 < kv.size(); i += 2) {
      const std::string& k = kv[i].str;
      auto n = kv[i + 1].as_int();
      auto nl = k.rfind('\n');
      if (nl == std::string::npos || n == 0) continue;
      c.by_tenant[k.substr(0, nl)][k.substr(nl + 1)] = n;
    }
    co_return c;
  }

  Task<std::vector<Job>> list(ListFilter filter) override {
    std::string state = filter.state ? std::string(to_string(*filter.state)) : std::string();
    std::vector<std::string> args8{num(unix_now()), "list", state, filter.tenant ? "1" : "0",
                                           filter.tenant.value_or(""), std::to_string(std::max(0, filter.limit))};
    auto r = co_await eval(Script::admin, std::move(args8));
    std::vector<Job> out;
    static const QueueConfig ic = inspection_config();
    for (const auto& jv : r.elements) out.push_back(job_from_fields(to_fields(jv), ic, nullptr));
    co_return out;
  }

  Task<std::optional<Job>> get(std::string id, std::optional<std::string> tenant) override {
    std::vector<std::vector<std::string>> cmds;
    cmds.push_back({"HGETALL", keys_.job(id)});
    cmds.push_back({"HGET", keys_.leases, id});
    auto rs = co_await conn_.exec_many(std::move(cmds));
    for (auto& v : rs)
      if (v.is_error()) throw error(v.str);
    const auto& r = rs[0];
    if (!r.is_array() || r.elements.empty()) co_return std::nullopt;
    Fields f = to_fields(r);
    f["id"] = id;
    if (!rs[1].is_nil()) f["lease"] = rs[1].str;
    static const QueueConfig ic = inspection_config();
    Job job = job_from_fields(f, ic, nullptr);
    if (tenant && job.tenant != *tenant) co_return std::nullopt;
    co_return job;
  }

  Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> tenant) override {
    std::vector<std::string> argv{num(unix_now()), "requeue", tenant ? "1" : "0", tenant.value_or("")};
    for (auto& id : ids) argv.push_back(std::move(id));
    auto r = co_await eval(Script::admin, std::move(argv));
    co_return r.as_int();
  }

  Task<bool> cancel(std::string id, std::optional<std::string> tenant) override {
    std::vector<std::string> args10{num(unix_now()), "cancel", id, tenant ? "1" : "0", tenant.value_or("")};
    auto r = co_await eval(Script::admin, std::move(args10));
    co_return r.as_int() == 1;
  }

  Task<std::int64_t> purge(double older_than_s) override {
    std::vector<std::string> args11{num(unix_now()), "purge", num(unix_now() - older_than_s)};
    auto r = co_await eval(Script::admin, std::move(args11));
    co_return r.as_int();
  }

  Task<boost::json::value> record_effect(std::string key, boost::json::value value) override {
    auto text = boost::json::serialize(value);
    std::vector<std::vector<std::string>> cmds;
    cmds.push_back({"HSETNX", keys_.effects, key, text});
    cmds.push_back({"HGET", keys_.effects, key});
    auto r = co_await conn_.exec_many(std::move(cmds));
    for (auto& v : r)
      if (v.is_error()) throw error(v.str);
    if (r[1].is_nil()) co_return value;
    co_return parse_or_string(r[1].str);
  }

  Task<std::optional<boost::json::value>> lookup_effect(std::string key) override {
    std::vector<std::string> args12{"HGET", keys_.effects, key};
    auto r = co_await exec(std::move(args12));
    if (r.is_nil()) co_return std::nullopt;
    co_return parse_or_string(r.str);
  }

  Task<void> close() override {
    close_now();
    co_return;
  }

  std::string describe() const override { return ep_.redacted; }
  int fetch_lanes() const override { return 2; }  // architecture.md "Fetch lanes"
  bool fetch_carries_settles() const override { return true; }  // one connection, in order; fetch() takes the waiting ones

 private:
  QueueError error(const std::string& why) const { return QueueError("redis queue " + ep_.redacted + ": " + why); }

  void close_now() {
    closed_ = true;
    conn_.close();
    for (auto& c : idle_waiters_) c->close();
    idle_waiters_.clear();
    for (auto* c : busy_waiters_) c->close();  // their fetches fail with QueueError
  }

  Task<RespValue> exec(std::vector<std::string> args) {
    auto r = co_await conn_.exec(std::move(args));
    if (r.is_error()) throw error(r.str);
    co_return r;
  }

  /// EVALSHA; on NOSCRIPT (server restarted, failed over, or SCRIPT FLUSH) runs the same
  /// call as EVAL with the script's text, which also puts it back in the server's cache
  /// under the same SHA. (SCRIPT LOAD + EVALSHA again could meet NOSCRIPT a second time if
  /// the cache is flushed in between.)
  Task<RespValue> eval(Script s, std::vector<std::string> argv) {
    const auto idx = static_cast<std::size_t>(s);
    std::vector<std::string> args;
    args.reserve(4 + script_keys_.size() + argv.size());
    args.push_back("EVALSHA");
    args.push_back(shas_[idx]);
    args.push_back(std::to_string(script_keys_.size()));
    args.insert(args.end(), script_keys_.begin(), script_keys_.end());
    args.push_back(keys_.job_prefix);
    for (auto& a : argv) args.push_back(std::move(a));
    auto r = co_await conn_.exec(args);
    if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0) {
      args[0] = "EVAL";
      args[1] = redis::script_text(s);
      r = co_await conn_.exec(std::move(args));
    }
    if (r.is_error()) throw error("script " + std::string(redis::script_name(s)) + ": " + r.str);
    co_return r;
  }

  Task<Settle> settle(const Lease& lease, const char* op, std::vector<std::string> extra) {
    std::vector<std::string> argv{num(ms_floor(unix_now())), op, lease.job_id, lease.token};
    for (auto& e : extra) argv.push_back(std::move(e));
    auto r = co_await eval(Script::settle, std::move(argv));
    co_return r.as_int() == 1 ? Settle::ok : Settle::stale;
  }

  /// One complete / retry / fail waiting to be sent by settle_combined().
  struct PendingSettle {
    explicit PendingSettle(const boost::asio::any_io_executor& ex) : wake(ex) {}
    std::string op, job_id, token;
    std::vector<std::string> extra;  // the op args of the settle script
    boost::asio::steady_timer wake;  // cancelled to resume the waiting caller
    bool done = false;               // result / error set
    bool leader = false;             // the caller is to send the next batch
    Settle result = Settle::stale;
    std::exception_ptr error;
  };

  /// complete / retry / fail, combined: while a settle is in flight on the connection,
  /// later ones wait and then go as ONE settle_batch script call (each fenced by its own
  /// lease token, Q3; each caller gets its own Settle). A settle issued with none in
  /// flight lets the event loop run once, then is sent with those that arrived meanwhile.
  /// A fetch() on the handle takes every waiting settle along in its own script call
  /// (fetch_carries_settles()). Once kPipelineAt settles wait, they are sent at once as
  /// another batch, pipelined behind the one in flight: a worker
  /// whose jobs finish in a burst then frees its slots in steps, so its next fetch and the
  /// flows it runs overlap the server's work on the remaining settles instead of
  /// alternating with it (measured: worker_bench e2e c=200 +30%). The caller that sends a
  /// batch hands the sending on to a waiter when nothing else is in flight, so no
  /// background task runs. Cancellation: a caller cancelled while waiting stops waiting
  /// (operation_aborted); its settle is dropped if not yet sent, else completes unseen. A
  /// caller cancelled while it sends a batch lets the batch finish (it carries the others'
  /// settles), then gets operation_aborted; its own settle is applied.
  Task<Settle> settle_combined(const Lease& lease, const char* op, std::vector<std::string> extra) {
    auto me = std::make_shared<PendingSettle>(ex_);
    me->op = op;
    me->job_id = lease.job_id;
    me->token = lease.token;
    me->extra = std::move(extra);
    me->wake.expires_at(boost::asio::steady_timer::time_point::max());
    pending_settles_.push_back(me);
    const bool idle = settles_in_flight_ == 0 && !next_sender_ && !gathering_;
    if (idle || (!gathering_ && pending_settles_.size() >= kPipelineAt)) {
      me->leader = true;
      if (idle) {
        // Nothing in flight. The jobs of one fetch run side by side, so when the first
        // finishes, the others' last steps are already queued on the loop: let them run
        // once (one post) and take their settles along, instead of sending this one alone
        // and the rest a round trip later (Redis worker_bench c=50 +15-20%). A fetch in
        // that turn takes them all (then this caller waits for it like the others).
        gathering_ = true;
        co_await boost::asio::post(ex_, boost::asio::use_awaitable);
        gathering_ = false;
      }
    }
    if (!me->leader) {
      while (!me->done && !me->leader) {
        boost::system::error_code ec;
        co_await me->wake.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
        if (me->done || me->leader) break;
        auto cs = co_await boost::asio::this_coro::cancellation_state;
        if (cs.cancelled() != boost::asio::cancellation_type::none) {
          auto it = std::find(pending_settles_.begin(), pending_settles_.end(), me);
          if (it != pending_settles_.end()) pending_settles_.erase(it);
          throw boost::system::system_error(boost::asio::error::operation_aborted);
        }
      }
      if (me->done) {
        if (me->error) std::rethrow_exception(me->error);
        co_return me->result;
      }
      // Chosen to send (next_sender_). A cancellation that raced with that must not
      // abort the others' settles.
      if (next_sender_ == me) next_sender_.reset();
      co_await boost::asio::this_coro::reset_cancellation_state();
    }
    auto batch = take_batch(me);
    if (batch.size() == 1) {
      std::exception_ptr failed;
      try {
        me->result = co_await settle_one(*me);
      } catch (...) {
        failed = std::current_exception();
      }
      finish_batch(batch, failed);
      if (failed) std::rethrow_exception(failed);
    } else {
      co_await send_settle_batch(batch);
    }
    if ((co_await boost::asio::this_coro::cancellation_state).cancelled() != boost::asio::cancellation_type::none)
      throw boost::system::system_error(boost::asio::error::operation_aborted);  // settled, unseen
    co_return me->result;
  }

  /// Takes the waiting settles to send as one batch (at most kMaxBatch, and `me` when
  /// given) and counts the batch in flight until finish_batch(). A waiter chosen to send
  /// the next batch but not resumed yet is carried by this one instead.
  std::vector<std::shared_ptr<PendingSettle>> take_batch(const std::shared_ptr<PendingSettle>& me) {
    std::vector<std::shared_ptr<PendingSettle>> batch;
    while (!pending_settles_.empty() && batch.size() < kMaxBatch) {
      batch.push_back(std::move(pending_settles_.front()));
      pending_settles_.pop_front();
    }
    if (me && std::find(batch.begin(), batch.end(), me) == batch.end()) {
      pending_settles_.erase(std::find(pending_settles_.begin(), pending_settles_.end(), me));
      batch.push_back(me);
    }
    for (auto& p : batch) {
      p->leader = p == me;  // a leader waiting out its gathering turn now waits for this batch
      if (p == next_sender_) next_sender_.reset();
    }
    if (!batch.empty()) ++settles_in_flight_;
    return batch;
  }

  static void append_settle_args(std::vector<std::string>& argv, std::vector<std::shared_ptr<PendingSettle>>& batch) {
    argv.reserve(argv.size() + 6 * batch.size());
    for (auto& p : batch) {
      argv.push_back(p->op);
      argv.push_back(p->job_id);
      argv.push_back(p->token);
      for (std::size_t i = 0; i < 3; ++i) argv.push_back(i < p->extra.size() ? std::move(p->extra[i]) : std::string());
    }
  }

  /// Runs a script that carries `batch` and ends it: the per-settle results are the reply's
  /// element `at` (the reply itself when at < 0). The call runs with no cancellation slot:
  /// it carries other callers' settles, which a cancellation would leave applied but
  /// reported failed; a cancelled caller learns of it once the call is done.
  Task<RespValue> send_batch(Script s, std::vector<std::string> argv, std::vector<std::shared_ptr<PendingSettle>>& batch,
                             int at) {
    std::exception_ptr failed;
    RespValue r;
    try {
      auto send = eval(s, std::move(argv));
      auto shielded = boost::asio::bind_cancellation_slot(boost::asio::cancellation_slot(), boost::asio::use_awaitable);
      r = co_await boost::asio::co_spawn(ex_, std::move(send), shielded);
      const RespValue* results = at < 0 ? &r : (r.is_array() && r.elements.size() > std::size_t(at) ? &r.elements[at] : nullptr);
      if (!results || !results->is_array() || results->elements.size() != batch.size())
        throw error("unexpected " + std::string(redis::script_name(s)) + " reply");
      for (std::size_t i = 0; i < batch.size(); ++i)
        batch[i]->result = results->elements[i].as_int() == 1 ? Settle::ok : Settle::stale;
    } catch (...) {
      failed = std::current_exception();
    }
    finish_batch(batch, failed);
    if (failed) std::rethrow_exception(failed);
    co_return r;
  }

  /// `batch` as one settle_batch script call.
  Task<void> send_settle_batch(std::vector<std::shared_ptr<PendingSettle>>& batch) {
    std::vector<std::string> argv{num(ms_floor(unix_now())), std::to_string(batch.size())};
    append_settle_args(argv, batch);
    co_await send_batch(Script::settle_batch, std::move(argv), batch, -1);
  }

  /// A batch is done (results set, or `failed`): resumes its callers and, when nothing is
  /// left in flight to carry the settles that arrived meanwhile, wakes the first of them
  /// to send the next batch.
  void finish_batch(std::vector<std::shared_ptr<PendingSettle>>& batch, std::exception_ptr failed) {
    --settles_in_flight_;
    for (auto& p : batch) {
      p->done = true;
      p->error = failed;
      if (!p->leader) p->wake.cancel();
    }
    if (!pending_settles_.empty() && settles_in_flight_ == 0 && !next_sender_) {
      next_sender_ = pending_settles_.front();
      next_sender_->leader = true;
      next_sender_->wake.cancel();
    }
  }

  Task<Settle> settle_one(PendingSettle& p) {
    Lease lease{p.job_id, {}, p.token, 0};  // a named local: g++ 12 mis-destroys temporaries in co_await
    auto r = co_await settle(lease, p.op.c_str(), std::move(p.extra));
    co_return r;
  }

  /// Blocks in BLPOP on the wake-up list for up to `seconds`, on a connection of its own
  /// (a blocked connection cannot carry other requests). Enqueue, retry and requeue push
  /// tokens to the list, so a job arriving wakes a waiter at once. A cancelled wait closes
  /// its connection (the server ends the BLPOP). Returns whether a token arrived.
  Task<bool> wait_for_wake(double seconds) {
    std::unique_ptr<Connection> c;
    if (!idle_waiters_.empty()) {
      c = std::move(idle_waiters_.back());
      idle_waiters_.pop_back();
    } else {
      c = std::make_unique<Connection>(ex_, ep_, "penguiflow:" + config_.namespace_ + ":wake");
    }
    char tbuf[32];
    std::snprintf(tbuf, sizeof tbuf, "%.3f", std::max(seconds, 0.001));
    std::string timeout(tbuf);
    bool woken = false;
    busy_waiters_.insert(c.get());
    try {
      std::vector<std::string> blpop{"BLPOP", keys_.wake, timeout};
      auto r = co_await c->exec(std::move(blpop));
      if (r.is_error()) throw error(r.str);
      woken = !r.is_nil();
    } catch (...) {
      busy_waiters_.erase(c.get());
      c->close();
      throw;
    }
    busy_waiters_.erase(c.get());
    if (!closed_ && idle_waiters_.size() < 8) idle_waiters_.push_back(std::move(c));
    co_return woken;
  }

  boost::asio::any_io_executor ex_;
  redis::Endpoint ep_;
  QueueConfig config_;
  redis::QueueKeys keys_;
  std::vector<std::string> script_keys_;
  Connection conn_;
  std::array<std::string, redis::kScriptCount> shas_;
  std::vector<std::unique_ptr<Connection>> idle_waiters_;
  std::set<Connection*> busy_waiters_;  // owned by the fetch waiting on them
  bool closed_ = false;
  static constexpr std::size_t kPipelineAt = 64;  // waiting settles that go without waiting more
  static constexpr std::size_t kMaxBatch = 128;   // bounds one script's run time and argument count
  int settles_in_flight_ = 0;                     // settle_combined() batches being sent
  bool gathering_ = false;                        // an idle settle lets the loop run once first
  std::shared_ptr<PendingSettle> next_sender_;  // a waiter chosen to send the next batch
  std::deque<std::shared_ptr<PendingSettle>> pending_settles_;
};

}  // namespace

Task<std::unique_ptr<JobQueue>> open_redis_queue(boost::asio::any_io_executor ex, std::string url,
                                                 QueueConfig config) {
  auto ep = redis::parse_redis_url(url);
  const auto& ns = config.namespace_;
  if (ns.empty() || ns.find_first_of("{}") != std::string::npos)
    throw QueueError("redis queue " + ep.redacted + ": invalid namespace '" + ns +
                     "' (must be non-empty, without '{' or '}')");
  auto q = std::make_unique<RedisQueue>(ex, ep, std::move(config));
  co_await q->open();
  co_return q;
}

}  // namespace penguiflow::queue
