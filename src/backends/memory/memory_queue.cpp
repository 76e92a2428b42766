// memory:// backend. All state lives in a MemoryStore on one executor; no locks.
#include <penguiflow/backends/memory.hpp>
#include <penguiflow/queue/detail/wait_set.hpp>
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include <boost/json/serialize.hpp>

#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

namespace penguiflow::queue {
namespace json = boost::json;

class MemoryStore {
 public:
  struct Entry {
    Job job;
    std::optional<std::string> raw;  // undecoded document from write_raw_job (Q9 at fetch)
    std::uint64_t seq = 0;
    std::string token;
    double ready_at = 0;  // claimable from: run_at (queued) or lease expiry (running)
    bool in_ready = false;
    std::size_t payload_bytes = 1;  // measured once at enqueue (Q9 size check at fetch)
  };
  using ReadyKey = std::tuple<int, double, std::uint64_t>;  // (-priority, ready_at, seq)

  std::map<std::uint64_t, Entry> by_seq;
  std::unordered_map<std::string, std::uint64_t> by_id;
  std::set<ReadyKey> ready;                           // claim order
  std::set<std::pair<double, std::uint64_t>> due;     // next wake-up
  std::map<std::pair<std::string, std::string>, std::string> idem;  // (tenant, key) -> id
  std::map<std::string, json::value> effects;
  detail::WaitSet waiters;
  std::uint64_t next_seq = 1;

  Entry* find(const std::string& id) {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &by_seq.at(it->second);
  }
  void unready(Entry& e) {
    if (!e.in_ready) return;
    ready.erase({-e.job.priority, e.ready_at, e.seq});
    due.erase({e.ready_at, e.seq});
    e.in_ready = false;
  }
  void make_ready(Entry& e, double at) {
    unready(e);
    e.ready_at = at;
    ready.insert({-e.job.priority, at, e.seq});
    due.insert({at, e.seq});
    e.in_ready = true;
  }
  Entry& insert(Job job, std::optional<std::string> raw) {
    auto seq = next_seq++;
    auto& e = by_seq[seq];
    e.seq = seq;
    e.job = std::move(job);
    e.raw = std::move(raw);
    by_id[e.job.id] = seq;
    if (!e.job.idempotency_key.empty()) idem[{e.job.tenant, e.job.idempotency_key}] = e.job.id;
    make_ready(e, e.job.run_at);
    return e;
  }
  void settle(Entry& e, JobState s, double now) {
    unready(e);
    e.job.state = s;
    e.job.updated_at = now;
    e.job.lease_owner.clear();
    e.job.lease_expires_at = 0;
    e.token.clear();
  }
};

std::shared_ptr<MemoryStore> make_memory_store() { return std::make_shared<MemoryStore>(); }

void write_raw_job(MemoryStore& store, std::string id, std::string raw_json) {
  if (store.find(id)) throw QueueError("memory queue: job id already exists: " + id);
  // Place it by what can be read now (priority, run_at); the real checks run at fetch.
  QueueConfig lenient;
  lenient.max_payload_bytes = static_cast<std::size_t>(-1);
  auto d = decode_job_document(raw_json, lenient, id);
  double now = unix_now();
  Job j = d.job ? std::move(*d.job) : Job{};
  j.id = id;
  if (!d.job) j.run_at = now;
  if (j.run_at == 0) j.run_at = now;
  j.state = JobState::queued;
  j.created_at = j.updated_at = now;
  store.insert(std::move(j), std::move(raw_json));
  store.waiters.notify_all();
}

namespace {

class MemoryQueue final : public JobQueue {
 public:
  MemoryQueue(boost::asio::any_io_executor ex, QueueConfig config, std::shared_ptr<MemoryStore> store)
      : ex_(std::move(ex)), config_(std::move(config)), s_(store ? std::move(store) : make_memory_store()) {}

  Task<EnqueueResult> enqueue(NewJob job) override { co_return add(job, unix_now()); }

  Task<std::vector<EnqueueResult>> enqueue_bulk(std::vector<NewJob> jobs) override {
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    double now = unix_now();
    for (auto& j : jobs) out.push_back(add(j, now));
    co_return out;
  }

  Task<std::vector<LeasedJob>> fetch(FetchRequest req) override {
    auto deadline = std::chrono::steady_clock::now() + req.wait;
    for (;;) {
      auto jobs = claim(req);
      if (!jobs.empty() || std::chrono::steady_clock::now() >= deadline || req.max_jobs <= 0) co_return jobs;
      auto wake = deadline;
      if (!s_->due.empty()) wake = std::min(wake, detail::steady_after(s_->due.begin()->first - unix_now()));
      co_await s_->waiters.wait_until(wake);
    }
  }

  Task<Settle> complete(const Lease& lease, json::value result, double latency_s) override {
    auto* e = leased(lease);
    if (!e) co_return Settle::stale;
    s_->settle(*e, JobState::succeeded, unix_now());
    e->job.result = std::move(result);
    e->job.latency_s = latency_s;
    co_return Settle::ok;
  }

  Task<Settle> retry(const Lease& lease, double delay_s, std::string reason) override {
    auto* e = leased(lease);
    if (!e) co_return Settle::stale;
    double now = unix_now();
    s_->settle(*e, JobState::queued, now);
    e->job.reason = std::move(reason);
    e->job.run_at = now + delay_s;
    s_->make_ready(*e, e->job.run_at);
    s_->waiters.notify_all();
    co_return Settle::ok;
  }

  Task<Settle> fail(const Lease& lease, std::string reason, json::value details) override {
    auto* e = leased(lease);
    if (!e) co_return Settle::stale;
    s_->settle(*e, JobState::dead, unix_now());
    e->job.reason = std::move(reason);
    e->job.details = std::move(details);
    co_return Settle::ok;
  }

  Task<Settle> heartbeat(Lease& lease, std::chrono::milliseconds extend) override {
    auto* e = leased(lease);
    if (!e) co_return Settle::stale;
    double now = unix_now();
    e->job.lease_expires_at = now + extend.count() / 1000.0;
    e->job.updated_at = now;
    s_->make_ready(*e, e->job.lease_expires_at);
    lease.expires_at = e->job.lease_expires_at;
    co_return Settle::ok;
  }

  Task<Counts> counts() override {
    Counts c;
    for (auto s : {JobState::queued, JobState::running, JobState::succeeded, JobState::dead})
      c.by_state[std::string(to_string(s))] = 0;
    for (auto& [seq, e] : s_->by_seq) {
      auto st = std::string(to_string(e.job.state));
      ++c.by_state[st];
      ++c.by_tenant[e.job.tenant][st];
    }
    co_return c;
  }

  Task<std::vector<Job>> list(ListFilter f) override {
    std::vector<Job> out;
    for (auto& [seq, e] : s_->by_seq) {
      if (static_cast<int>(out.size()) >= f.limit) break;
      if (f.state && e.job.state != *f.state) continue;
      if (f.tenant && e.job.tenant != *f.tenant) continue;
      out.push_back(view(e));
    }
    co_return out;
  }

  Task<std::optional<Job>> get(std::string id, std::optional<std::string> tenant) override {
    auto* e = s_->find(id);
    if (!e || (tenant && e->job.tenant != *tenant)) co_return std::nullopt;
    co_return view(*e);
  }

  Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> tenant) override {
    std::vector<MemoryStore::Entry*> targets;
    if (ids.empty()) {
      for (auto& [seq, e] : s_->by_seq)
        if (e.job.state == JobState::dead) targets.push_back(&e);
    } else {
      for (auto& id : ids)
        if (auto* e = s_->find(id); e && e->job.state == JobState::dead) targets.push_back(e);
    }
    std::int64_t n = 0;
    double now = unix_now();
    for (auto* e : targets) {
      if (tenant && e->job.tenant != *tenant) continue;
      e->job.state = JobState::queued;
      e->job.attempts = 0;
      e->job.run_at = now;
      e->job.updated_at = now;
      s_->make_ready(*e, now);
      ++n;
    }
    if (n) s_->waiters.notify_all();
    co_return n;
  }

  Task<bool> cancel(std::string id, std::optional<std::string> tenant) override {
    auto* e = s_->find(id);
    if (!e || (tenant && e->job.tenant != *tenant)) co_return false;
    if (e->job.state != JobState::queued && e->job.state != JobState::running) co_return false;
    s_->settle(*e, JobState::dead, unix_now());
    e->job.reason = "cancelled";
    co_return true;
  }

  Task<std::int64_t> purge(double older_than_s) override {
    double cutoff = unix_now() - older_than_s;
    std::int64_t n = 0;
    for (auto it = s_->by_seq.begin(); it != s_->by_seq.end();) {
      auto& j = it->second.job;
      if ((j.state == JobState::succeeded || j.state == JobState::dead) && j.updated_at < cutoff) {
        if (!j.idempotency_key.empty()) {
          auto k = s_->idem.find({j.tenant, j.idempotency_key});
          if (k != s_->idem.end() && k->second == j.id) s_->idem.erase(k);
        }
        s_->by_id.erase(j.id);
        it = s_->by_seq.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    co_return n;
  }

  Task<json::value> record_effect(std::string key, json::value value) override {
    auto [it, inserted] = s_->effects.try_emplace(std::move(key), std::move(value));
    co_return it->second;
  }

  Task<std::optional<json::value>> lookup_effect(std::string key) override {
    auto it = s_->effects.find(key);
    if (it == s_->effects.end()) co_return std::nullopt;
    co_return it->second;
  }

  Task<void> close() override { co_return; }

  std::string describe() const override { return "memory://"; }

 private:
  EnqueueResult add(const NewJob& nj, double now) {
    if (!nj.idempotency_key.empty()) {
      auto it = s_->idem.find({nj.tenant, nj.idempotency_key});
      if (it != s_->idem.end()) return {it->second, false};
    }
    auto& e = s_->insert(make_job(nj, new_job_id(), now), std::nullopt);
    e.payload_bytes = std::max<std::size_t>(1, json::serialize(e.job.payload).size());
    s_->waiters.notify_all();
    return {e.job.id, true};
  }

  MemoryStore::Entry* leased(const Lease& lease) {
    auto* e = s_->find(lease.job_id);
    if (!e || e->job.state != JobState::running || e->token.empty() || e->token != lease.token) return nullptr;
    return e;
  }

  static Job view(const MemoryStore::Entry& e) { return e.job; }

  std::vector<LeasedJob> claim(const FetchRequest& req) {
    std::vector<LeasedJob> out;
    if (req.max_jobs <= 0) return out;
    double now = unix_now();
    std::vector<std::uint64_t> picked;
    for (auto& [negp, at, seq] : s_->ready) {
      if (static_cast<int>(picked.size()) >= req.max_jobs) break;
      if (at <= now) picked.push_back(seq);
    }
    for (auto seq : picked) {
      auto& e = s_->by_seq.at(seq);
      if (e.raw) {
        auto d = decode_job_document(*e.raw, config_, e.job.id);
        if (!d) {  // Q9: dead once, with the reason; never returned
          e.job.attempts += 1;
          s_->settle(e, JobState::dead, now);
          e.job.reason = d.error->reason;
          e.job.details = d.error->details();
          continue;
        }
        d.job->id = e.job.id;
        d.job->run_at = e.job.run_at;
        d.job->created_at = e.job.created_at;
        e.job = std::move(*d.job);
        e.raw.reset();
      } else if (auto err = validate_job(e.job, config_, e.payload_bytes)) {
        e.job.attempts += 1;
        s_->settle(e, JobState::dead, now);
        e.job.reason = err->reason;
        e.job.details = err->details();
        continue;
      }
      e.job.state = JobState::running;
      e.job.attempts += 1;
      e.job.lease_owner = req.owner;
      e.job.lease_expires_at = now + req.lease.count() / 1000.0;
      e.job.updated_at = now;
      e.token = new_lease_token();
      s_->make_ready(e, e.job.lease_expires_at);
      out.push_back(LeasedJob{e.job, Lease{e.job.id, req.owner, e.token, e.job.lease_expires_at}});
    }
    return out;
  }

  boost::asio::any_io_executor ex_;
  QueueConfig config_;
  std::shared_ptr<MemoryStore> s_;
};

}  // namespace

std::unique_ptr<JobQueue> make_memory_queue(boost::asio::any_io_executor ex, QueueConfig config,
                                            std::shared_ptr<MemoryStore> store) {
  return std::make_unique<MemoryQueue>(std::move(ex), std::move(config), std::move(store));
}

Task<std::unique_ptr<JobQueue>> open_memory_queue(boost::asio::any_io_executor ex, std::string url,
                                                  QueueConfig config) {
  if (url != "memory://" && url != "memory:" && url != "memory")
    throw QueueError("cannot open queue " + redact_url(url) + ": a memory queue URL is just memory://");
  co_return make_memory_queue(std::move(ex), std::move(config));
}

}  // namespace penguiflow::queue

namespace penguiflow::queue {
Task<std::unique_ptr<JobQueue>> open_memory_queue(boost::asio::any_io_executor ex, std::string url) {
  return open_memory_queue(std::move(ex), std::move(url), QueueConfig{});
}
}  // namespace penguiflow::queue
