// The shared queue conformance suite: every backend passes the same tests (Q1-Q10, W7).
// Test names start with the contract number they cover. Time bounds are generous upper
// bounds only; no test proves ordering with a sleep.
#include "queue/conformance.hpp"

#include "support/async_test.hpp"

#include <penguiflow/queue/ids.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>

namespace penguiflow::queue::testing {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

std::string unique_namespace() {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string s = "pft_";
  auto r = rng();
  for (int i = 0; i < 12; ++i) s += hex[(r >> (i * 4)) & 15];
  return s;
}

namespace {

struct RequirementFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void require(bool ok, const char* expr, int line) {
  if (!ok) throw RequirementFailed(std::string("requirement failed (conformance.cpp:") + std::to_string(line) + "): " + expr);
}
// Two statements: g++ 12 rejects a string literal in the same full-expression as co_await.
#define REQUIRE(c)                         \
  do {                                     \
    bool require_ok_ = static_cast<bool>(c); \
    require(require_ok_, #c, __LINE__);    \
  } while (0)

/// What a test body gets: the factory, the executor and the test's config. open() may be
/// called more than once: every handle shares config.namespace_ (the same queue).
struct Ctx {
  const QueueFactory& factory;
  asio::any_io_executor ex;
  QueueConfig cfg;
  std::vector<std::unique_ptr<JobQueue>> opened;

  Task<JobQueue*> open() {
    auto q = co_await factory.open(ex, cfg);
    opened.push_back(std::move(q));
    co_return opened.back().get();
  }
  Task<void> write_raw(std::string id, std::string raw) { co_await factory.write_raw(ex, cfg, std::move(id), std::move(raw)); }
};

using Body = std::function<Task<void>(Ctx&)>;

Task<void> drive(const QueueFactory& f, Body body, QueueConfig cfg) {
  auto ex = co_await asio::this_coro::executor;  // not inside the braces (g++ 12 pitfall)
  Ctx c{f, ex, std::move(cfg), {}};
  c.cfg.namespace_ = unique_namespace();
  std::exception_ptr ep;
  try {
    co_await body(c);
  } catch (...) {
    ep = std::current_exception();
  }
  for (auto& q : c.opened) {
    try {
      co_await q->close();
    } catch (...) {
      if (!ep) ep = std::current_exception();
    }
  }
  if (ep) std::rethrow_exception(ep);
}

void run(const QueueFactory& f, Body body, QueueConfig cfg = {}, std::chrono::milliseconds bound = 40s) {
  penguiflow::testing::run_async(drive(f, std::move(body), std::move(cfg)), bound);
}

#define SKIP_IF_UNAVAILABLE()                                             \
  do {                                                                    \
    if (!GetParam().available) GTEST_SKIP() << GetParam().skip_reason;    \
  } while (0)

/// Runs every task concurrently on the current executor; rethrows the first failure.
Task<void> join_all(std::vector<Task<void>> tasks) {
  auto ex = co_await asio::this_coro::executor;
  struct State {
    std::size_t left;
    std::exception_ptr ep;
    asio::steady_timer done;
  };
  auto st = std::make_shared<State>(State{tasks.size(), nullptr, asio::steady_timer(ex)});
  st->done.expires_at(asio::steady_timer::time_point::max());
  for (auto& t : tasks) {
    asio::co_spawn(ex, std::move(t), [st](std::exception_ptr e) {
      if (e && !st->ep) st->ep = e;
      if (--st->left == 0) st->done.cancel();
    });
  }
  boost::system::error_code ec;
  if (st->left > 0) co_await st->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (st->ep) std::rethrow_exception(st->ep);
}

Task<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(asio::use_awaitable);
}

// Overloads, not default arguments: a default argument is evaluated at the call site, and
// g++ 12 rejects a literal there when the call sits inside a co_await expression.
NewJob new_job(std::string tenant, json::value payload) {
  NewJob j;
  j.flow = "quickstart";
  j.tenant = std::move(tenant);
  j.payload = std::move(payload);
  return j;
}
NewJob new_job(std::string tenant) { return new_job(std::move(tenant), json::value(json::object{{"n", 1}})); }
NewJob new_job() { return new_job(std::string("acme")); }

FetchRequest fetch_req(int max_jobs, std::chrono::milliseconds wait, std::chrono::milliseconds lease,
                       std::string owner) {
  FetchRequest r;
  r.max_jobs = max_jobs;
  r.wait = wait;
  r.lease = lease;
  r.owner = std::move(owner);
  return r;
}
FetchRequest fetch_req(int max_jobs, std::chrono::milliseconds wait, std::chrono::milliseconds lease) {
  return fetch_req(max_jobs, wait, lease, std::string("worker-1"));
}
FetchRequest fetch_req(int max_jobs, std::chrono::milliseconds wait) { return fetch_req(max_jobs, wait, 30s); }
FetchRequest fetch_req(int max_jobs) { return fetch_req(max_jobs, 2s); }

std::int64_t count_of(const std::map<std::string, std::int64_t>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

// Plain function calls to turn literals into values: g++ 12 rejects a string literal passed
// straight to a coroutine inside a co_await expression ("array used as initializer").
std::string S(const char* s) { return s; }
std::optional<std::string> T(const char* s) { return std::string(s); }

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Fetches until one job is returned (bounded); returns it.
Task<LeasedJob> fetch_one(JobQueue& q, std::chrono::milliseconds lease, std::string owner) {
  auto got = co_await q.fetch(fetch_req(1, 5s, lease, std::move(owner)));
  REQUIRE(got.size() == 1);
  co_return std::move(got.front());
}
Task<LeasedJob> fetch_one(JobQueue& q) { return fetch_one(q, 30s, std::string("worker-1")); }
Task<LeasedJob> fetch_one(JobQueue& q, std::chrono::milliseconds lease) { return fetch_one(q, lease, std::string("worker-1")); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Q2: the basic life of a job.

TEST_P(QueueConformance, Q2_EnqueueFetchCompleteRoundTrip) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    NewJob nj = new_job("acme", json::value(json::object{{"x", 42}}));
    nj.max_attempts = 3;
    nj.deadline_s = 12.5;
    auto r = co_await q.enqueue(nj);
    REQUIRE(r.created);
    REQUIRE(!r.id.empty());

    auto g = co_await q.get(r.id, T("acme"));
    REQUIRE(g.has_value());
    REQUIRE(g->state == JobState::queued);
    REQUIRE(g->attempts == 0);
    REQUIRE(g->flow == "quickstart");

    double before = unix_now();
    auto got = co_await q.fetch(fetch_req(1, 2s, 30s, S("w1")));
    REQUIRE(got.size() == 1);
    auto& lj = got.front();
    REQUIRE(lj.job.id == r.id);
    REQUIRE(lj.job.flow == "quickstart");
    REQUIRE(lj.job.tenant == "acme");
    REQUIRE(lj.job.payload == json::value(json::object{{"x", 42}}));
    REQUIRE(lj.job.attempts == 1);
    REQUIRE(lj.job.max_attempts == 3);
    REQUIRE(lj.job.deadline_s && *lj.job.deadline_s == 12.5);
    REQUIRE(lj.job.state == JobState::running);
    REQUIRE(lj.lease.job_id == r.id);
    REQUIRE(lj.lease.owner == "w1");
    REQUIRE(!lj.lease.token.empty());
    REQUIRE(lj.lease.expires_at > before + 20);

    auto running = co_await q.get(r.id, std::nullopt);
    REQUIRE(running && running->state == JobState::running);
    REQUIRE(running->lease_owner == "w1");

    json::value result = json::object{{"ok", true}};
    REQUIRE(co_await q.complete(lj.lease, result, 0.25) == Settle::ok);
    auto done = co_await q.get(r.id, T("acme"));
    REQUIRE(done && done->state == JobState::succeeded);
    REQUIRE(done->result == result);
    REQUIRE(done->latency_s && std::abs(*done->latency_s - 0.25) < 1e-6);
    REQUIRE(done->attempts == 1);
    // Settled: the lease is spent.
    REQUIRE(co_await q.complete(lj.lease, result, 0.25) == Settle::stale);
  });
}

TEST_P(QueueConformance, Q2_RetryKeepsReasonAndDelays) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto r = co_await q.enqueue(new_job());
    auto lj = co_await fetch_one(q);
    double t = unix_now();
    REQUIRE(co_await q.retry(lj.lease, 1.0, S("flaky upstream")) == Settle::ok);
    auto g = co_await q.get(r.id, std::nullopt);
    REQUIRE(g && g->state == JobState::queued);
    REQUIRE(g->reason == "flaky upstream");
    REQUIRE(g->attempts == 1);
    REQUIRE(g->run_at >= t + 0.9);
    // Not before its delay...
    auto early = co_await q.fetch(fetch_req(1, 0ms));
    REQUIRE(early.empty());
    // ...but after it.
    auto again = co_await fetch_one(q);
    REQUIRE(again.job.id == r.id);
    REQUIRE(again.job.attempts == 2);
    REQUIRE(again.job.reason == "flaky upstream");  // the next attempt is told why the last one failed
    REQUIRE(unix_now() >= g->run_at - 0.05);
    REQUIRE(co_await q.retry(lj.lease, 0, S("old lease")) == Settle::stale);
    REQUIRE(co_await q.complete(again.lease, nullptr, 0.1) == Settle::ok);
  });
}

TEST_P(QueueConformance, Q2_FailGoesDeadWithReasonAndDetails) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto r = co_await q.enqueue(new_job());
    auto lj = co_await fetch_one(q);
    json::value details = json::object{{"trace_id", "job-x"}, {"code", "NODE_EXCEPTION"}};
    REQUIRE(co_await q.fail(lj.lease, S("boom"), details) == Settle::ok);
    auto g = co_await q.get(r.id, std::nullopt);
    REQUIRE(g && g->state == JobState::dead);
    REQUIRE(g->reason == "boom");
    REQUIRE(g->details == details);
    REQUIRE((co_await q.fetch(fetch_req(1, 0ms))).empty());
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "dead") == 1);
    REQUIRE(co_await q.fail(lj.lease, S("again"), nullptr) == Settle::stale);
  });
}

// ---------------------------------------------------------------------------------------
// Q1 / Q3: leases.

namespace {
struct RaceState {
  std::set<std::string> held;
  std::map<std::string, int> delivered;
  int completed = 0;
  int duplicates = 0;
  int total = 0;
};

Task<void> race_consumer(JobQueue& q, RaceState& st, std::string owner) {
  int idle = 0;
  while (st.completed < st.total && idle < 20) {
    auto got = co_await q.fetch(fetch_req(4, 200ms, 30s, owner));
    if (got.empty()) {
      ++idle;
      continue;
    }
    idle = 0;
    for (auto& lj : got)
      if (!st.held.insert(lj.job.id).second) ++st.duplicates;
    for (auto& lj : got) {
      ++st.delivered[lj.job.id];
      auto s = co_await q.complete(lj.lease, nullptr, 0.0);
      REQUIRE(s == Settle::ok);
      st.held.erase(lj.job.id);
      ++st.completed;
    }
  }
}
}  // namespace

TEST_P(QueueConformance, Q1_ConcurrentConsumersNeverShareALease) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    // Two handles on the same queue (two connections / instances), 4 consumers each.
    auto& a = *co_await c.open();
    auto& b = *co_await c.open();
    RaceState st;
    st.total = 120;
    std::vector<NewJob> jobs;
    for (int i = 0; i < st.total; ++i) jobs.push_back(new_job("acme", json::value(i)));
    auto ids = co_await a.enqueue_bulk(jobs);
    REQUIRE(ids.size() == jobs.size());
    std::vector<Task<void>> consumers;
    for (int i = 0; i < 8; ++i) consumers.push_back(race_consumer(i % 2 ? a : b, st, "w" + std::to_string(i)));
    co_await join_all(std::move(consumers));
    REQUIRE(st.duplicates == 0);
    REQUIRE(st.completed == st.total);
    REQUIRE(static_cast<int>(st.delivered.size()) == st.total);
    for (auto& [id, n] : st.delivered) REQUIRE(n == 1);
    auto cnt = co_await a.counts();
    REQUIRE(count_of(cnt.by_state, "succeeded") == st.total);
  }, {}, 60s);
}

TEST_P(QueueConformance, Q1_ExpiredLeaseIsRedelivered) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto r = co_await q.enqueue(new_job());
    auto first = co_await fetch_one(q, 200ms, S("crashed-worker"));
    REQUIRE(first.job.attempts == 1);
    // The lease lapses (the worker "crashed"); another worker gets it, attempts kept + 1.
    auto second = co_await fetch_one(q, 30s, S("worker-2"));
    REQUIRE(second.job.id == r.id);
    REQUIRE(second.job.attempts == 2);
    REQUIRE(second.lease.token != first.lease.token);
    REQUIRE(second.lease.owner == "worker-2");
    REQUIRE(co_await q.complete(second.lease, nullptr, 0.0) == Settle::ok);
  });
}

TEST_P(QueueConformance, Q3_StaleLeaseCannotSettle) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto r = co_await q.enqueue(new_job());
    auto first = co_await fetch_one(q, 200ms, S("slow-worker"));
    auto second = co_await fetch_one(q, 30s, S("worker-2"));
    REQUIRE(second.job.id == r.id);
    Lease old = first.lease;
    REQUIRE(co_await q.complete(old, nullptr, 0.0) == Settle::stale);
    REQUIRE(co_await q.retry(old, 0.0, S("late")) == Settle::stale);
    REQUIRE(co_await q.fail(old, S("late"), nullptr) == Settle::stale);
    REQUIRE(co_await q.heartbeat(old, 10s) == Settle::stale);
    auto g = co_await q.get(r.id, std::nullopt);
    REQUIRE(g && g->state == JobState::running);
    REQUIRE(g->lease_owner == "worker-2");
    REQUIRE(co_await q.complete(second.lease, nullptr, 0.0) == Settle::ok);
  });
}

TEST_P(QueueConformance, Q3_HeartbeatExtendsLease) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    co_await q.enqueue(new_job());
    auto lj = co_await fetch_one(q, 1000ms);
    double before = lj.lease.expires_at;
    REQUIRE(co_await q.heartbeat(lj.lease, 10s) == Settle::ok);
    REQUIRE(lj.lease.expires_at > before);
    REQUIRE(lj.lease.expires_at > unix_now() + 5);
    // Past the original 1 s lease, nobody else can take it.
    auto other = co_await q.fetch(fetch_req(1, 1500ms, 30s, S("thief")));
    REQUIRE(other.empty());
    REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
    REQUIRE(co_await q.heartbeat(lj.lease, 10s) == Settle::stale);
  });
}

// A backend whose fetches carry the settles (JobQueue::fetch_carries_settles; a worker
// then fetches for the slots of jobs still being settled) applies every complete / retry
// / fail called on a handle before a fetch on it, before that fetch takes any job.
TEST_P(QueueConformance, Q2_AFetchAppliesTheSettlesCalledBeforeIt) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    if (!q.fetch_carries_settles()) co_return;  // no such promise to check
    auto ex = co_await asio::this_coro::executor;
    std::vector<NewJob> jobs{new_job(), new_job(), new_job()};
    co_await q.enqueue_bulk(jobs);
    auto got = co_await q.fetch(fetch_req(3));
    REQUIRE(got.size() == 3);
    // Called, not awaited: none is answered before the fetch below is issued. (The
    // results outlive a body that fails early: the calls may still be out then.)
    auto results = std::make_shared<std::vector<std::optional<Settle>>>(3);
    Lease stale = got[2].lease;
    stale.token += "x";
    auto settle = [&](int i, std::function<Task<Settle>()> call) {
      asio::co_spawn(ex, [results, i, call]() -> Task<void> { (*results)[i] = co_await call(); }, asio::detached);
    };
    settle(0, [&q, l = got[0].lease]() { return q.complete(l, nullptr, 0.01); });
    settle(1, [&q, l = got[1].lease]() { return q.retry(l, 0, std::string("again")); });
    settle(2, [&q, stale]() { return q.complete(stale, nullptr, 0.01); });
    auto again = co_await q.fetch(fetch_req(3, 0ms));
    REQUIRE(again.size() == 1);  // the retried job, ready again before this fetch took jobs
    REQUIRE(again[0].job.id == got[1].job.id);
    REQUIRE(again[0].job.attempts == 2);
    REQUIRE(again[0].job.reason == "again");
    auto& res = *results;
    for (int i = 0; i < 500 && !(res[0] && res[1] && res[2]); ++i) co_await sleep_for(10ms);
    REQUIRE(res[0] == Settle::ok);
    REQUIRE(res[1] == Settle::ok);
    REQUIRE(res[2] == Settle::stale);
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "succeeded") == 1);
    REQUIRE(count_of(cnt.by_state, "running") == 2);
    REQUIRE(count_of(cnt.by_state, "queued") == 0);
    REQUIRE(co_await q.complete(again[0].lease, nullptr, 0.01) == Settle::ok);
    REQUIRE(co_await q.complete(got[2].lease, nullptr, 0.01) == Settle::ok);
    // Many at once (more than one settle batch): still every one before the fetch.
    constexpr int kMany = 300;
    std::vector<NewJob> many(kMany, new_job());
    co_await q.enqueue_bulk(many);
    auto leased = co_await q.fetch(fetch_req(kMany));
    REQUIRE(static_cast<int>(leased.size()) == kMany);
    auto retried = std::make_shared<int>(0);
    for (auto& lj : leased)
      asio::co_spawn(
          ex,
          [&q, retried, l = lj.lease]() -> Task<void> {
            if (co_await q.retry(l, 0, std::string("again")) == Settle::ok) ++*retried;
          },
          asio::detached);
    auto back = co_await q.fetch(fetch_req(kMany, 0ms));
    REQUIRE(static_cast<int>(back.size()) == kMany);
    for (int i = 0; i < 500 && *retried < kMany; ++i) co_await sleep_for(10ms);
    REQUIRE(*retried == kMany);
  });
}

// ---------------------------------------------------------------------------------------
// Q4: order and delays.

TEST_P(QueueConformance, Q4_DelayedJobNotFetchedEarly) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    NewJob nj = new_job();
    nj.delay_s = 1.0;
    double t = unix_now();
    auto r = co_await q.enqueue(nj);
    auto early = co_await q.fetch(fetch_req(1, 0ms));
    REQUIRE(early.empty());
    auto lj = co_await fetch_one(q);
    REQUIRE(lj.job.id == r.id);
    REQUIRE(lj.job.run_at >= t + 0.9);
    REQUIRE(unix_now() >= lj.job.run_at - 0.05);
    REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
  });
}

TEST_P(QueueConformance, Q4_PriorityThenRunAtThenFifo) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    struct Spec {
      const char* name;
      int priority;
      double delay;
    };
    // Expected order: f (p5, earlier run_at), c (p5), d (p0, earliest run_at), a, b (FIFO), e (p-1).
    std::vector<Spec> specs{{"a", 0, 0}, {"b", 0, 0}, {"c", 5, 0}, {"d", 0, -10}, {"e", -1, -20}, {"f", 5, -5}};
    std::map<std::string, std::string> name_of;
    for (auto& s : specs) {
      NewJob nj = new_job("acme", json::value(s.name));
      nj.priority = s.priority;
      nj.delay_s = s.delay;
      auto r = co_await q.enqueue(nj);
      name_of[r.id] = s.name;
    }
    std::string order;
    for (int i = 0; i < 6; ++i) {
      auto lj = co_await fetch_one(q);
      order += name_of[lj.job.id];
      REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
    }
    if (order != "fcdabe") throw RequirementFailed("fetch order was " + order + ", expected fcdabe");
  });
}

// ---------------------------------------------------------------------------------------
// Q5: idempotent enqueue.

TEST_P(QueueConformance, Q5_IdempotentEnqueue) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    NewJob nj = new_job();
    nj.idempotency_key = "order-42";
    auto first = co_await q.enqueue(nj);
    REQUIRE(first.created);
    auto second = co_await q.enqueue(nj);
    REQUIRE(!second.created);
    REQUIRE(second.id == first.id);
    // Still one job, even once it is running.
    auto lj = co_await fetch_one(q);
    auto third = co_await q.enqueue(nj);
    REQUIRE(!third.created && third.id == first.id);
    auto g = co_await q.get(first.id, std::nullopt);
    REQUIRE(g && g->idempotency_key == "order-42");
    // No key: two jobs.
    auto x = co_await q.enqueue(new_job());
    auto y = co_await q.enqueue(new_job());
    REQUIRE(x.created && y.created && x.id != y.id);
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "queued") + count_of(cnt.by_state, "running") == 3);
    REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
  });
}

TEST_P(QueueConformance, Q5_IdempotentBulkEnqueue) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    NewJob pre = new_job();
    pre.idempotency_key = "k2";
    auto existing = co_await q.enqueue(pre);
    std::vector<NewJob> batch;
    for (const char* k : {"k1", "k2", "k1", ""}) {
      NewJob nj = new_job();
      nj.idempotency_key = k;
      batch.push_back(nj);
    }
    auto rs = co_await q.enqueue_bulk(batch);
    REQUIRE(rs.size() == 4);
    REQUIRE(rs[0].created);
    REQUIRE(!rs[1].created && rs[1].id == existing.id);
    REQUIRE(!rs[2].created && rs[2].id == rs[0].id);
    REQUIRE(rs[3].created && rs[3].id != rs[0].id);
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "queued") == 3);
  });
}

// ---------------------------------------------------------------------------------------
// Q6: batches and bounded waits.

TEST_P(QueueConformance, Q6_BulkEnqueueAndBatchFetch) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    std::vector<NewJob> jobs;
    for (int i = 0; i < 50; ++i) jobs.push_back(new_job("acme", json::value(i)));
    auto rs = co_await q.enqueue_bulk(jobs);
    REQUIRE(rs.size() == 50);
    std::set<std::string> ids;
    for (auto& r : rs) {
      REQUIRE(r.created);
      ids.insert(r.id);
    }
    REQUIRE(ids.size() == 50);
    auto b1 = co_await q.fetch(fetch_req(20));
    REQUIRE(b1.size() == 20);
    auto b2 = co_await q.fetch(fetch_req(100));
    REQUIRE(b2.size() == 30);
    REQUIRE((co_await q.fetch(fetch_req(10, 0ms))).empty());
    std::set<std::string> got;
    for (auto* b : {&b1, &b2})
      for (auto& lj : *b) {
        got.insert(lj.job.id);
        REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
      }
    REQUIRE(got == ids);
    std::vector<NewJob> none;
    REQUIRE((co_await q.enqueue_bulk(none)).empty());
  });
}

TEST_P(QueueConformance, Q6_FetchWithNothingReadyReturnsEmptyWithinBound) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto t0 = std::chrono::steady_clock::now();
    auto got = co_await q.fetch(fetch_req(5, 300ms));
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(got.empty());
    REQUIRE(took < 300ms + 2s);
    REQUIRE(took >= 150ms);  // it did wait (a worker must not spin)
  });
}

TEST_P(QueueConformance, Q6_WaitingFetchWakesWhenAJobArrives) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& consumer = *co_await c.open();
    auto& producer = *co_await c.open();
    std::vector<LeasedJob> got;
    auto consume = [](JobQueue& q, std::vector<LeasedJob>& out) -> Task<void> {
      out = co_await q.fetch(fetch_req(1, 10s));
    };
    auto produce = [](JobQueue& q) -> Task<void> {
      co_await sleep_for(100ms);
      co_await q.enqueue(new_job());
    };
    auto t0 = std::chrono::steady_clock::now();
    std::vector<Task<void>> tasks;
    tasks.push_back(consume(consumer, got));
    tasks.push_back(produce(producer));
    co_await join_all(std::move(tasks));
    REQUIRE(got.size() == 1);
    REQUIRE(std::chrono::steady_clock::now() - t0 < 8s);
    REQUIRE(co_await consumer.complete(got.front().lease, nullptr, 0.0) == Settle::ok);
  });
}

// ---------------------------------------------------------------------------------------
// Q7: durability of what was acknowledged (backends that persist).

TEST_P(QueueConformance, Q7_AcknowledgedJobsSurviveReopen) {
  SKIP_IF_UNAVAILABLE();
  if (GetParam().name == "memory") GTEST_SKIP() << "memory:// promises no durability";
  run(GetParam(), [](Ctx& c) -> Task<void> {
    std::string id;
    {
      auto q = co_await c.factory.open(c.ex, c.cfg);
      id = (co_await q->enqueue(new_job())).id;
      co_await q->record_effect(S("job-x:charge"), json::value(S("charged")));
      co_await q->close();
    }
    auto& q = *co_await c.open();
    auto g = co_await q.get(id, std::nullopt);
    REQUIRE(g && g->state == JobState::queued);
    auto e = co_await q.lookup_effect(S("job-x:charge"));
    REQUIRE(e && *e == json::value("charged"));
  });
}

// ---------------------------------------------------------------------------------------
// Q8: inspection.

TEST_P(QueueConformance, Q8_CountsPerStateAndTenant) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    std::vector<std::string> tenants{"acme", "acme", "globex", "acme", "globex"};
    for (auto& t : tenants) co_await q.enqueue(new_job(t));
    auto a1 = co_await fetch_one(q);
    REQUIRE(a1.job.tenant == "acme");
    REQUIRE(co_await q.complete(a1.lease, nullptr, 0.0) == Settle::ok);
    auto a2 = co_await fetch_one(q);
    REQUIRE(a2.job.tenant == "acme");
    REQUIRE(co_await q.fail(a2.lease, S("bad"), nullptr) == Settle::ok);
    auto g1 = co_await fetch_one(q);
    REQUIRE(g1.job.tenant == "globex");
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "queued") == 2);
    REQUIRE(count_of(cnt.by_state, "running") == 1);
    REQUIRE(count_of(cnt.by_state, "succeeded") == 1);
    REQUIRE(count_of(cnt.by_state, "dead") == 1);
    REQUIRE(count_of(cnt.by_tenant["acme"], "succeeded") == 1);
    REQUIRE(count_of(cnt.by_tenant["acme"], "dead") == 1);
    REQUIRE(count_of(cnt.by_tenant["acme"], "queued") == 1);
    REQUIRE(count_of(cnt.by_tenant["acme"], "running") == 0);
    REQUIRE(count_of(cnt.by_tenant["globex"], "running") == 1);
    REQUIRE(count_of(cnt.by_tenant["globex"], "queued") == 1);
    // depth(): the same without the succeeded history.
    auto d = co_await q.depth();
    REQUIRE(count_of(d.by_state, "queued") == 2);
    REQUIRE(count_of(d.by_state, "running") == 1);
    REQUIRE(count_of(d.by_state, "dead") == 1);
    REQUIRE(count_of(d.by_state, "succeeded") == 0);
    REQUIRE(count_of(d.by_tenant["acme"], "dead") == 1);
    REQUIRE(count_of(d.by_tenant["acme"], "queued") == 1);
    REQUIRE(count_of(d.by_tenant["globex"], "running") == 1);
    // Listing by a live state: in enqueue order.
    ListFilter queued;
    queued.state = JobState::queued;
    auto lq = co_await q.list(queued);
    REQUIRE(lq.size() == 2);
    REQUIRE(lq[0].tenant == "acme" && lq[1].tenant == "globex");
    ListFilter running;
    running.state = JobState::running;
    auto lr = co_await q.list(running);
    REQUIRE(lr.size() == 1 && lr[0].id == g1.job.id);
  });
}

TEST_P(QueueConformance, Q8_ListAndGetAreTenantScoped) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto a = co_await q.enqueue(new_job(S("acme")));
    auto g = co_await q.enqueue(new_job(S("globex")));
    REQUIRE((co_await q.get(a.id, T("acme"))).has_value());
    REQUIRE(!(co_await q.get(a.id, T("globex"))).has_value());
    REQUIRE((co_await q.get(a.id, std::nullopt)).has_value());  // operator view: no tenant scope
    REQUIRE(!(co_await q.get(S("no-such-job"), std::nullopt)).has_value());
    ListFilter f;
    f.tenant = "acme";
    auto la = co_await q.list(f);
    REQUIRE(la.size() == 1 && la[0].id == a.id && la[0].tenant == "acme");
    ListFilter all;
    all.state = JobState::queued;
    auto lq = co_await q.list(all);
    REQUIRE(lq.size() == 2);
    ListFilter one;
    one.limit = 1;
    REQUIRE((co_await q.list(one)).size() == 1);
    ListFilter dead;
    dead.state = JobState::dead;
    REQUIRE((co_await q.list(dead)).empty());
    (void)g;
  });
}

TEST_P(QueueConformance, Q8_RequeueDead) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto x = co_await q.enqueue(new_job());
    auto y = co_await q.enqueue(new_job());
    for (int i = 0; i < 2; ++i) {
      auto lj = co_await fetch_one(q);
      REQUIRE(co_await q.fail(lj.lease, S("broken"), nullptr) == Settle::ok);
    }
    std::vector<std::string> only_x{x.id};
    REQUIRE(co_await q.requeue_dead(only_x, T("globex")) == 0);
    REQUIRE(co_await q.requeue_dead(only_x, T("acme")) == 1);
    auto gx = co_await q.get(x.id, std::nullopt);
    REQUIRE(gx && gx->state == JobState::queued && gx->attempts == 0);
    std::vector<std::string> all_dead;
    REQUIRE(co_await q.requeue_dead(all_dead, std::nullopt) == 1);
    REQUIRE(co_await q.requeue_dead(all_dead, std::nullopt) == 0);
    auto got = co_await q.fetch(fetch_req(10));
    REQUIRE(got.size() == 2);
    for (auto& lj : got) {
      REQUIRE(lj.job.attempts == 1);
      REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
    }
    (void)y;
  });
}

TEST_P(QueueConformance, Q8_CancelQueuedAndRunning) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto running = co_await q.enqueue(new_job());
    auto lj = co_await fetch_one(q);
    REQUIRE(lj.job.id == running.id);
    auto queued = co_await q.enqueue(new_job());
    REQUIRE(!(co_await q.cancel(queued.id, T("globex"))));
    REQUIRE(co_await q.cancel(queued.id, T("acme")));
    auto g = co_await q.get(queued.id, std::nullopt);
    REQUIRE(g && g->state == JobState::dead && g->reason == "cancelled");
    REQUIRE(co_await q.cancel(running.id, std::nullopt));
    REQUIRE(co_await q.heartbeat(lj.lease, 10s) == Settle::stale);  // the worker learns it here
    REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::stale);
    REQUIRE(!(co_await q.cancel(running.id, std::nullopt)));  // already dead
    REQUIRE((co_await q.fetch(fetch_req(10, 0ms))).empty());
  });
}

TEST_P(QueueConformance, Q8_PurgeByRetention) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    auto a = co_await q.enqueue(new_job());
    auto b = co_await q.enqueue(new_job());
    auto lja = co_await fetch_one(q);
    REQUIRE(co_await q.complete(lja.lease, nullptr, 0.0) == Settle::ok);
    auto ljb = co_await fetch_one(q);
    REQUIRE(co_await q.fail(ljb.lease, S("x"), nullptr) == Settle::ok);
    auto keep = co_await q.enqueue(new_job());
    REQUIRE(co_await q.purge(3600) == 0);
    // Once the settled jobs are older than 0.2 s they go; the queued one never does.
    std::int64_t purged = 0;
    bool ok = co_await penguiflow::testing::eventually(
        [&]() -> Task<bool> {
          purged += co_await q.purge(0.2);
          co_return purged >= 2;
        },
        10s, 50ms);
    REQUIRE(ok);
    REQUIRE(purged == 2);
    REQUIRE(!(co_await q.get(a.id, std::nullopt)).has_value());
    REQUIRE(!(co_await q.get(b.id, std::nullopt)).has_value());
    REQUIRE((co_await q.get(keep.id, std::nullopt)).has_value());
  });
}

// ---------------------------------------------------------------------------------------
// W7: side-effect records.

TEST_P(QueueConformance, W7_RecordEffectFirstWriterWins) {
  SKIP_IF_UNAVAILABLE();
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& a = *co_await c.open();
    auto& b = *co_await c.open();
    REQUIRE(!(co_await a.lookup_effect(S("job-1:charge"))).has_value());
    json::value first = json::object{{"charge_id", "ch_1"}};
    json::value second = json::object{{"charge_id", "ch_2"}};
    REQUIRE(co_await a.record_effect(S("job-1:charge"), first) == first);
    REQUIRE(co_await b.record_effect(S("job-1:charge"), second) == first);
    auto seen = co_await b.lookup_effect(S("job-1:charge"));
    REQUIRE(seen && *seen == first);
    REQUIRE(co_await a.record_effect(S("job-1:email"), second) == second);
  });
}

// ---------------------------------------------------------------------------------------
// Q9 / Q10: data written by outside producers.

TEST_P(QueueConformance, Q9_BadDataGoesDeadOnceAndGoodJobsKeepFlowing) {
  SKIP_IF_UNAVAILABLE();
  if (!GetParam().write_raw) GTEST_SKIP() << "backend cannot write raw job documents";
  QueueConfig cfg;
  cfg.max_payload_bytes = 2048;
  cfg.flow_known = [](std::string_view f) { return f != "nope"; };
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    std::map<std::string, std::string> bad{
        {"raw-bad-json", R"({"flow":"quickstart","tenant":"acme","payload":{)"},
        {"raw-no-tenant", R"({"flow":"quickstart","payload":{"a":1}})"},
        {"raw-too-big", R"({"flow":"quickstart","tenant":"acme","payload":{"blob":")" + std::string(4000, 'x') + "\"}}"},
        {"raw-unknown-flow", R"({"flow":"nope","tenant":"acme","payload":{}})"},
    };
    std::map<std::string, std::string> expect{{"raw-bad-json", "json"},
                                              {"raw-no-tenant", "tenant"},
                                              {"raw-too-big", "payload too large"},
                                              {"raw-unknown-flow", "unknown flow"}};
    std::set<std::string> good{"raw-good-1", "raw-good-2"};
    co_await c.write_raw(S("raw-good-1"), S(R"({"flow":"quickstart","tenant":"acme","payload":{"n":1}})"));
    for (auto& [id, doc] : bad) co_await c.write_raw(id, doc);
    co_await c.write_raw(S("raw-good-2"), S(R"({"flow":"quickstart","tenant":"acme","payload":{"n":2}})"));
    good.insert((co_await q.enqueue(new_job())).id);

    std::set<std::string> seen;
    for (int round = 0; round < 20 && seen.size() < good.size(); ++round) {
      auto got = co_await q.fetch(fetch_req(10, 500ms));
      for (auto& lj : got) {
        if (!good.count(lj.job.id)) throw RequirementFailed("bad job " + lj.job.id + " was delivered");
        seen.insert(lj.job.id);
        REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
      }
    }
    REQUIRE(seen == good);
    REQUIRE((co_await q.fetch(fetch_req(10, 200ms))).empty());

    ListFilter f;
    f.state = JobState::dead;
    auto dead = co_await q.list(f);
    REQUIRE(dead.size() == bad.size());
    for (auto& j : dead) {
      REQUIRE(expect.count(j.id));
      if (lower(j.reason).find(expect[j.id]) == std::string::npos)
        throw RequirementFailed("dead reason for " + j.id + " is '" + j.reason + "', expected it to mention '" +
                                expect[j.id] + "'");
    }
    auto cnt = co_await q.counts();
    REQUIRE(count_of(cnt.by_state, "dead") == 4);
    REQUIRE(count_of(cnt.by_state, "succeeded") == 3);
  }, cfg);
}

TEST_P(QueueConformance, Q10_RawWrittenJobRuns) {
  SKIP_IF_UNAVAILABLE();
  if (!GetParam().write_raw) GTEST_SKIP() << "backend cannot write raw job documents";
  run(GetParam(), [](Ctx& c) -> Task<void> {
    auto& q = *co_await c.open();
    double now = unix_now();
    json::object doc{{"id", "ext-1"},         {"flow", "quickstart"}, {"tenant", "acme"},
                     {"payload", {{"q", "hi"}}}, {"attempts", 0},        {"max_attempts", 7},
                     {"priority", 3},          {"run_at", now - 1},   {"deadline_s", 9.5}};
    co_await c.write_raw(S("ext-1"), json::serialize(doc));
    // The minimal document: defaults for everything else, runs now.
    co_await c.write_raw(S("ext-2"), S(R"({"flow":"quickstart","tenant":"acme","payload":1})"));
    auto got = co_await q.fetch(fetch_req(2));
    if (got.size() == 1) {
      auto more = co_await q.fetch(fetch_req(1));
      for (auto& lj : more) got.push_back(std::move(lj));
    }
    REQUIRE(got.size() == 2);
    std::sort(got.begin(), got.end(), [](auto& x, auto& y) { return x.job.id < y.job.id; });
    auto& j1 = got[0].job;
    REQUIRE(j1.id == "ext-1");
    REQUIRE(j1.flow == "quickstart" && j1.tenant == "acme");
    REQUIRE(j1.payload == json::value(json::object{{"q", "hi"}}));
    REQUIRE(j1.attempts == 1);
    REQUIRE(j1.max_attempts == 7);
    REQUIRE(j1.priority == 3);
    REQUIRE(j1.deadline_s && *j1.deadline_s == 9.5);
    REQUIRE(std::abs(j1.run_at - (now - 1)) < 0.01);
    auto& j2 = got[1].job;
    REQUIRE(j2.id == "ext-2");
    REQUIRE(j2.payload == json::value(1));
    REQUIRE(j2.max_attempts == 5 && j2.priority == 0 && j2.attempts == 1);
    for (auto& lj : got) REQUIRE(co_await q.complete(lj.lease, nullptr, 0.0) == Settle::ok);
  });
}

}  // namespace penguiflow::queue::testing
