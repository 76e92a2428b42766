// The worker in-process, against real SQLite files (W1–W10, W12, W13). Process-level
// behaviour (kill -9, SIGTERM, server restarts) is in process_*_test.cpp.
#include "support/async_test.hpp"

#include <penguiflow/core/logging.hpp>
#include <penguiflow/examples/flows.hpp>
#include <penguiflow/observe/metrics.hpp>
#include <penguiflow/worker/job_context.hpp>
#include <penguiflow/worker/worker.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace penguiflow;
using namespace penguiflow::worker;
namespace json = boost::json;
namespace asio = boost::asio;
using queue::Job;
using queue::JobState;
using queue::NewJob;

namespace {

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("pf-worker-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
            std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    url_ = "sqlite://" + (dir_ / "jobs.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  template <class R, class F>
  R with_queue(F fn) {
    return penguiflow::testing::run_async([&]() -> Task<R> {
      auto q = co_await queue::open_queue(co_await asio::this_coro::executor, url_);
      R r = co_await fn(*q);
      co_await q->close();
      co_return r;
    }());
  }

  std::vector<std::string> enqueue(std::vector<NewJob> jobs) {
    return with_queue<std::vector<std::string>>([&](queue::JobQueue& q) -> Task<std::vector<std::string>> {
      auto rs = co_await q.enqueue_bulk(jobs);
      std::vector<std::string> ids;
      for (auto& r : rs) ids.push_back(r.id);
      co_return ids;
    });
  }

  Job get(const std::string& id) {
    return with_queue<Job>([&](queue::JobQueue& q) -> Task<Job> {
      auto j = co_await q.get(id, std::nullopt);
      if (!j) throw std::runtime_error("no job " + id);
      co_return *j;
    });
  }

  WorkerOptions options() {
    WorkerOptions o;
    o.queue_url = url_;
    o.concurrency = 8;
    o.exit_when_empty = true;
    o.handle_signals = false;
    o.fetch_wait = std::chrono::milliseconds(50);
    o.retry_base_s = 0.01;
    o.retry_max_s = 0.05;
    return o;
  }

  /// Runs the worker to completion, stopping it after `bound` whatever happens.
  int run(Worker& w, std::chrono::seconds bound = std::chrono::seconds(30)) {
    std::atomic<bool> done{false};
    std::thread watchdog([&] {
      auto until = std::chrono::steady_clock::now() + bound;
      while (!done && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (!done) {
        ADD_FAILURE() << "worker did not finish within its bound; stopping it";
        w.request_stop();
      }
    });
    int rc = w.run();
    done = true;
    watchdog.join();
    return rc;
  }

  static NewJob job(std::string flow, json::value payload, int max_attempts = 3) {
    NewJob j;
    j.flow = std::move(flow);
    j.tenant = "acme";
    j.payload = std::move(payload);
    j.max_attempts = max_attempts;
    return j;
  }

  std::filesystem::path dir_;
  std::string url_;
};

/// A flow that echoes what the worker gave it: trace id, tenant, payload.
Flow make_echo_flow() {
  Node echo("echo", [](Message m, Context& ctx) -> Task<Message> {
    json::object out{{"trace_id", ctx.trace_id()}, {"tenant", m.headers.tenant}, {"payload", std::any_cast<json::value>(m.payload)}};
    co_return m.with_payload(json::value(std::move(out)));
  });
  return Flow({echo.to()});
}

/// A real queue handle that records, per handle, which jobs it fetched, how many of them
/// were in flight at most, and whether every settle came through the handle that fetched
/// the job. `lanes` is what it reports as its backend's fetch_lanes().
struct LaneProbe {
  std::mutex mu;
  int handles = 0;
  int lanes = 1;
  std::vector<int> max_in_flight;
  std::vector<int> fetches;
  int foreign_settles = 0;  // a job settled through a handle that did not fetch it
  int settles = 0;
  int heartbeats = 0;
  int foreign_heartbeats = 0;  // a lease renewed through a handle that did not fetch it
  int settle_delay_ms = 0;          // every complete / retry / fail takes this long first
  int fetches_while_settling = 0;   // fetches issued while settles of the handle were out
  std::vector<int> max_outstanding;  // per handle: fetched jobs whose settle has not returned
  // The next this many complete / retry / fail calls throw as a dropped connection does:
  // before reaching the queue (the request was lost) or after it applied them (the reply was).
  int lose_settle_requests = 0;
  int lose_settle_replies = 0;
};

class ProbedQueue final : public queue::JobQueue {
 public:
  ProbedQueue(std::unique_ptr<queue::JobQueue> q, LaneProbe& p) : q_(std::move(q)), p_(p) {
    std::lock_guard l(p_.mu);
    index_ = p_.handles++;
    p_.max_in_flight.push_back(0);
    p_.fetches.push_back(0);
    p_.max_outstanding.push_back(0);
  }
  Task<queue::EnqueueResult> enqueue(NewJob j) override { co_return co_await q_->enqueue(std::move(j)); }
  Task<std::vector<queue::EnqueueResult>> enqueue_bulk(std::vector<NewJob> js) override {
    co_return co_await q_->enqueue_bulk(std::move(js));
  }
  Task<std::vector<queue::LeasedJob>> fetch(queue::FetchRequest req) override {
    if (settling_ > 0) {
      std::lock_guard l(p_.mu);
      ++p_.fetches_while_settling;
    }
    auto got = co_await q_->fetch(std::move(req));
    std::lock_guard l(p_.mu);
    ++p_.fetches[index_];
    for (auto& lj : got) mine_.insert(lj.job.id);
    outstanding_ += static_cast<int>(got.size());
    p_.max_in_flight[index_] = std::max(p_.max_in_flight[index_], static_cast<int>(mine_.size()));
    p_.max_outstanding[index_] = std::max(p_.max_outstanding[index_], outstanding_);
    co_return got;
  }
  Task<queue::Settle> complete(const queue::Lease& l, json::value r, double s) override {
    co_await settling(l);
    lose(p_.lose_settle_requests);
    auto out = co_await q_->complete(l, std::move(r), s);
    lose(p_.lose_settle_replies);
    settled();
    co_return out;
  }
  Task<queue::Settle> retry(const queue::Lease& l, double d, std::string why) override {
    co_await settling(l);
    lose(p_.lose_settle_requests);
    auto out = co_await q_->retry(l, d, std::move(why));
    lose(p_.lose_settle_replies);
    settled();
    co_return out;
  }
  Task<queue::Settle> fail(const queue::Lease& l, std::string why, json::value d) override {
    co_await settling(l);
    lose(p_.lose_settle_requests);
    auto out = co_await q_->fail(l, std::move(why), std::move(d));
    lose(p_.lose_settle_replies);
    settled();
    co_return out;
  }
  Task<queue::Settle> heartbeat(queue::Lease& l, std::chrono::milliseconds e) override {
    {
      std::lock_guard g(p_.mu);
      ++p_.heartbeats;
      if (!mine_.contains(l.job_id)) ++p_.foreign_heartbeats;
    }
    co_return co_await q_->heartbeat(l, e);
  }
  Task<queue::Counts> counts() override { co_return co_await q_->counts(); }
  Task<queue::Counts> depth() override { co_return co_await q_->depth(); }
  Task<std::vector<Job>> list(queue::ListFilter f) override { co_return co_await q_->list(std::move(f)); }
  Task<std::optional<Job>> get(std::string id, std::optional<std::string> t) override {
    co_return co_await q_->get(std::move(id), std::move(t));
  }
  Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> t) override {
    co_return co_await q_->requeue_dead(std::move(ids), std::move(t));
  }
  Task<bool> cancel(std::string id, std::optional<std::string> t) override { co_return co_await q_->cancel(std::move(id), std::move(t)); }
  Task<std::int64_t> purge(double s) override { co_return co_await q_->purge(s); }
  Task<json::value> record_effect(std::string k, json::value v) override { co_return co_await q_->record_effect(std::move(k), std::move(v)); }
  Task<std::optional<json::value>> lookup_effect(std::string k) override { co_return co_await q_->lookup_effect(std::move(k)); }
  Task<void> close() override { co_await q_->close(); }
  std::string describe() const override { return q_->describe(); }
  int fetch_lanes() const override { return p_.lanes; }

 private:
  Task<void> settling(const queue::Lease& l) {
    ++settling_;
    {
      std::lock_guard g(p_.mu);
      ++p_.settles;
      if (mine_.erase(l.job_id) == 0) ++p_.foreign_settles;
    }
    if (p_.settle_delay_ms > 0) {
      asio::steady_timer t(co_await asio::this_coro::executor);
      t.expires_after(std::chrono::milliseconds(p_.settle_delay_ms));
      co_await t.async_wait(asio::use_awaitable);
    }
  }
  void settled() {
    --settling_;
    --outstanding_;
  }
  /// Throws as a dropped connection does while `budget` lasts (a settle not answered).
  void lose(int& budget) {
    {
      std::lock_guard g(p_.mu);
      if (budget <= 0) return;
      --budget;
    }
    settled();
    throw queue::QueueError("connection lost (test)");
  }
  std::unique_ptr<queue::JobQueue> q_;
  LaneProbe& p_;
  int index_ = 0;
  std::set<std::string> mine_;  // fetched through this handle, settle not yet called
  int settling_ = 0;             // settle calls not yet answered
  int outstanding_ = 0;          // fetched, settle not yet answered
};

/// WorkerOptions::open_queue for a worker whose every queue handle reports to `probe`.
/// With `fail_from` > 0, the fail_from-th open and every later one fail.
auto probed_opener(std::string url, LaneProbe& probe, int fail_from = 0) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  return [&probe, url = std::move(url), fail_from, calls](asio::any_io_executor ex,
                                                         queue::QueueConfig cfg) -> Task<std::unique_ptr<queue::JobQueue>> {
    if (fail_from > 0 && ++*calls >= fail_from) throw queue::QueueError("max number of clients reached (test)");
    auto q = co_await queue::open_queue(ex, url, std::move(cfg));
    co_return std::make_unique<ProbedQueue>(std::move(q), probe);
  };
}

}  // namespace

TEST_F(WorkerTest, W1_W2_JobIsOneTraceWithTenantAndResultIsStored) {
  auto ids = enqueue({job("echo", json::object{{"n", 1}}), job("echo", json::object{{"n", 2}})});
  FlowRegistry flows;
  flows.add("echo", make_echo_flow);
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  for (auto& id : ids) {
    Job j = get(id);
    EXPECT_EQ(j.state, JobState::succeeded);
    EXPECT_EQ(j.result.at("trace_id"), json::value("job-" + id));
    EXPECT_EQ(j.result.at("tenant"), "acme");
    EXPECT_TRUE(j.latency_s.has_value());
  }
  EXPECT_EQ(get(ids[1]).result.at("payload").at("n"), 2);
  EXPECT_EQ(w.stats().succeeded, 2u);
}

TEST_F(WorkerTest, W3_DeadlineCancelsTheTraceThenRetriesThenDead) {
  NewJob hang = job("flaky", json::object{{"sleep_ms", 60000}}, 2);
  hang.deadline_s = 0.2;
  auto ids = enqueue({hang, job("quickstart", json::object{{"query", "ok"}})});
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); });
  std::vector<Outcome> outcomes;
  std::mutex mu;
  auto o = options();
  o.on_report = [&](const JobReport& r) {
    std::lock_guard l(mu);
    if (r.flow == "flaky") outcomes.push_back(r.outcome);
  };
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  Job j = get(ids[0]);
  EXPECT_EQ(j.state, JobState::dead);
  EXPECT_EQ(j.attempts, 2);
  EXPECT_NE(j.reason.find("time bound"), std::string::npos) << j.reason;
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0], Outcome::timeout_retried);
  EXPECT_EQ(outcomes[1], Outcome::dead);
  EXPECT_EQ(get(ids[1]).state, JobState::succeeded);
}

TEST_F(WorkerTest, W4_StatelessBuildsAFlowPerJob) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 20; ++i) jobs.push_back(job("echo", json::object{{"i", i}}));
  enqueue(jobs);
  std::atomic<int> built{0};
  FlowRegistry flows;
  flows.add("echo", [&] {
    ++built;
    return make_echo_flow();
  });
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(built.load(), 20);
  EXPECT_EQ(w.stats().succeeded, 20u);
}

TEST_F(WorkerTest, W5_LongLivedRebuildsAfterNJobsAndAfterFailures) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 25; ++i) jobs.push_back(job("echo", json::object{{"i", i}}));
  enqueue(jobs);
  std::atomic<int> built{0};
  FlowRegistry flows;
  flows.add("echo", [&] {
    ++built;
    return make_echo_flow();
  });
  auto o = options();
  o.mode = FlowMode::long_lived;
  o.rebuild_after_jobs = 10;
  o.concurrency = 1;  // deterministic count: 25 jobs -> flows of 10, 10, 5
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(built.load(), 3);
  EXPECT_EQ(w.stats().succeeded, 25u);

  // After M failed jobs the flow is rebuilt too.
  std::vector<NewJob> bad;
  for (int i = 0; i < 4; ++i) bad.push_back(job("flaky", json::object{{"fail", true}}, 1));
  enqueue(bad);
  std::atomic<int> flaky_built{0};
  FlowRegistry flows2;
  flows2.add("flaky", [&] {
    ++flaky_built;
    return examples::make_flaky_flow();
  });
  o.rebuild_after_failures = 2;
  Worker w2(std::move(flows2), o);
  EXPECT_EQ(run(w2), 0);
  EXPECT_EQ(flaky_built.load(), 2);
  EXPECT_EQ(w2.stats().dead, 4u);
}

TEST_F(WorkerTest, W6_BackoffWithJitterAndDeadAfterMaxAttempts) {
  WorkerOptions o;
  o.retry_base_s = 1;
  o.retry_max_s = 10;
  o.retry_jitter = 0.5;
  for (int i = 0; i < 100; ++i) {
    double d1 = retry_delay(o, 1), d3 = retry_delay(o, 3), d9 = retry_delay(o, 9);
    EXPECT_GE(d1, 0.5);
    EXPECT_LE(d1, 1.0);
    EXPECT_GE(d3, 2.0);
    EXPECT_LE(d3, 4.0);
    EXPECT_GE(d9, 5.0);
    EXPECT_LE(d9, 10.0);
  }
  auto ids = enqueue({job("flaky", json::object{{"fail", true}}, 3)});
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  Job j = get(ids[0]);
  EXPECT_EQ(j.state, JobState::dead);
  EXPECT_EQ(j.attempts, 3);
  EXPECT_NE(j.reason.find("failing as the payload asked"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("after 3 attempts"), std::string::npos) << j.reason;
  EXPECT_EQ(j.details.at("node_name"), "flaky");
  EXPECT_EQ(w.stats().retried, 2u);
}

TEST_F(WorkerTest, W6_InvalidPayloadIsDeadAtOnceNamingTheField) {
  auto ids = enqueue({job("quickstart", json::object{{"query", 42}}, 5)});
  FlowRegistry flows;
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); });
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  Job j = get(ids[0]);
  EXPECT_EQ(j.state, JobState::dead);
  EXPECT_EQ(j.attempts, 1);  // retrying cannot fix a bad payload
  EXPECT_NE(j.reason.find("field 'query'"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("expected string, got integer"), std::string::npos) << j.reason;
}

TEST_F(WorkerTest, W7_EffectOnceSurvivesARetry) {
  auto ids = enqueue({job("charge", json::object{{"amount", 5}}, 3)});
  std::atomic<int> charged{0};
  FlowRegistry flows;
  flows.add("charge", [&] {
    Node charge("charge", [&](Message m, Context& ctx) -> Task<Message> {
      auto receipt = co_await effect_once(ctx, "charge-card", [&]() -> Task<json::value> {
        ++charged;
        co_return json::value(json::object{{"receipt", "r-" + std::to_string(charged.load())}});
      });
      if (job_context(ctx)->job->attempts == 1) throw std::runtime_error("crash after the charge");
      co_return m.with_payload(receipt);
    });
    return Flow({charge.to()});
  });
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  Job j = get(ids[0]);
  EXPECT_EQ(j.state, JobState::succeeded);
  EXPECT_EQ(j.attempts, 2);
  EXPECT_EQ(charged.load(), 1);
  EXPECT_EQ(j.result.at("receipt"), "r-1");
}

TEST_F(WorkerTest, W8_HeartbeatsKeepALongJobLeased) {
  auto ids = enqueue({job("flaky", json::object{{"sleep_ms", 1500}}, 1)});
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  auto o = options();
  o.lease_s = 0.5;  // a job three times longer than its lease
  Worker w(std::move(flows), o);
  // A competing consumer would steal the job if a lease lapsed.
  std::atomic<bool> stop{false};
  std::atomic<int> stolen{0};
  std::thread thief([&] {
    while (w.stats().fetched == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the worker holds it
    penguiflow::testing::run_async([&]() -> Task<int> {
      auto q = co_await queue::open_queue(co_await asio::this_coro::executor, url_);
      while (!stop) {
        queue::FetchRequest req{1, std::chrono::milliseconds(50), std::chrono::milliseconds(5000), "thief"};
        auto got = co_await q->fetch(std::move(req));
        stolen += int(got.size());
      }
      co_await q->close();
      co_return 0;
    }(), std::chrono::seconds(60));
  });
  EXPECT_EQ(run(w), 0);
  stop = true;
  thief.join();
  EXPECT_EQ(stolen.load(), 0);
  Job j = get(ids[0]);
  EXPECT_EQ(j.state, JobState::succeeded);
  EXPECT_EQ(j.attempts, 1);
}

TEST_F(WorkerTest, W9_StopDrainsThenHandsBackWhatIsLeft) {
  auto ids = enqueue({job("flaky", json::object{{"sleep_ms", 50}}), job("flaky", json::object{{"sleep_ms", 60000}})});
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  auto o = options();
  o.exit_when_empty = false;
  o.drain_timeout_s = 0.5;
  Worker w(std::move(flows), o);
  std::thread stopper([&] {
    while (w.stats().fetched < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    w.request_stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run(w), 0);
  stopper.join();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 10.0);
  EXPECT_EQ(get(ids[0]).state, JobState::succeeded);  // finished within the drain
  Job left = get(ids[1]);
  EXPECT_EQ(left.state, JobState::queued);  // handed back, not left leased
  EXPECT_NE(left.reason.find("shutdown"), std::string::npos) << left.reason;
  EXPECT_EQ(w.stats().handed_back, 1u);
}

TEST_F(WorkerTest, W10_MetricsCountJobsAndNodes) {
  enqueue({job("quickstart", json::object{{"query", "a"}}), job("quickstart", json::object{{"query", "b"}}),
           job("flaky", json::object{{"fail", true}}, 1)});
  FlowRegistry flows;
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); });
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  observe::Registry registry;
  auto o = options();
  o.metrics = &registry;
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  std::string text = registry.render_prometheus();
  EXPECT_NE(text.find("penguiflow_jobs_total{flow=\"quickstart\",outcome=\"succeeded\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("penguiflow_jobs_total{flow=\"flaky\",outcome=\"dead\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("penguiflow_node_latency_ms"), std::string::npos) << text;
  EXPECT_EQ(text.find("trace_id"), std::string::npos) << "metrics must never be labelled by trace id";
}

TEST_F(WorkerTest, W12_PayloadsAreNotLoggedUnlessAsked) {
  auto log = (dir_ / "log.jsonl").string();
  for (bool log_payloads : {false, true}) {
    enqueue({job("flaky", json::object{{"fail", true}, {"card", "4111-secret"}}, 1)});
    configure_logging({.format = LogFormat::json, .level = LogLevel::info, .file = log});
    FlowRegistry flows;
    flows.add("flaky", [] { return examples::make_flaky_flow(); });
    auto o = options();
    o.log_payloads = log_payloads;
    Worker w(std::move(flows), o);
    EXPECT_EQ(run(w), 0);
    configure_logging({.level = LogLevel::warn});  // closes the file
    std::ifstream in(log);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(all.find("job_dead"), std::string::npos);
    EXPECT_NE(all.find("\"worker_id\""), std::string::npos);
    EXPECT_EQ(all.find("4111-secret") != std::string::npos, log_payloads) << all;
    std::filesystem::remove(log);
  }
}

TEST_F(WorkerTest, W13_QuickstartAndRoadmapRunAsJobs) {
  auto ids = enqueue({job("quickstart", json::object{{"query", "How do I export metrics?"}}),
                      job("roadmap", json::object{{"query", "Investigate the crash in ingest"}})});
  FlowRegistry flows;
  flows.add("quickstart", [] { return examples::make_quickstart_flow(); });
  flows.add("roadmap", [] { return examples::make_roadmap_flow(); }, "", final_answer);
  Worker w(std::move(flows), options());
  EXPECT_EQ(run(w), 0);
  Job q = get(ids[0]);
  ASSERT_EQ(q.state, JobState::succeeded) << q.reason;
  EXPECT_EQ(q.result.at("query"), "How do I export metrics?");
  EXPECT_FALSE(q.result.at("prompt").as_string().empty());
  Job r = get(ids[1]);
  ASSERT_EQ(r.state, JobState::succeeded) << r.reason;
  EXPECT_TRUE(r.result.as_object().contains("text")) << json::serialize(r.result);
}

TEST_F(WorkerTest, FetchLanesShareTheSlotsAndSettleThroughTheirOwnHandle) {
  // (lanes asked for or the backend's choice, concurrency) -> handles a shard opens: a lane
  // gets at least 8 slots, so 12 slots make one lane whatever is asked.
  struct Case {
    int option, backend, concurrency, handles;
  };
  for (Case c : {Case{0, 2, 16, 2}, Case{2, 1, 16, 2}, Case{0, 1, 16, 1}, Case{3, 1, 12, 1}}) {
    SCOPED_TRACE("fetch_lanes " + std::to_string(c.option) + ", backend " + std::to_string(c.backend) + ", concurrency " +
                 std::to_string(c.concurrency));
    std::vector<NewJob> jobs;
    for (int i = 0; i < 200; ++i) jobs.push_back(job("flaky", json::object{{"sleep_ms", 2}}));
    enqueue(jobs);
    LaneProbe probe;
    probe.lanes = c.backend;
    auto o = options();
    o.concurrency = c.concurrency;
    o.fetch_lanes = c.option;
    o.open_queue = probed_opener(url_, probe);
    FlowRegistry flows;
    flows.add("flaky", [] { return examples::make_flaky_flow(); });
    Worker w(std::move(flows), o);
    EXPECT_EQ(run(w), 0);
    EXPECT_EQ(w.stats().succeeded, 200u);
    EXPECT_EQ(probe.handles, c.handles);
    EXPECT_EQ(probe.settles, 200);
    EXPECT_EQ(probe.foreign_settles, 0);
    for (int h = 0; h < probe.handles; ++h) {
      EXPECT_GT(probe.max_in_flight[h], 0) << "handle " << h << " fetched nothing";
      EXPECT_LE(probe.max_in_flight[h], c.concurrency / c.handles) << "handle " << h;
    }
  }
}

// A job's slot is free once its flow is done: the lane refills it while the settle is
// still on its way (here each settle takes 20 ms), yet never runs more flows than its
// slots, and never has more than its slots of settles in flight on top of them.
TEST_F(WorkerTest, ASlotIsRefilledWhileItsJobIsBeingSettledWithinABound) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 300; ++i) jobs.push_back(job("counted", json::object{}));
  enqueue(jobs);
  LaneProbe probe;
  probe.lanes = 2;
  probe.settle_delay_ms = 20;
  auto o = options();
  o.concurrency = 16;
  o.open_queue = probed_opener(url_, probe);
  struct Peak {
    std::mutex mu;
    int running = 0, peak = 0;
  };
  auto peak = std::make_shared<Peak>();
  FlowRegistry flows;
  flows.add("counted", [peak] {
    Node n("counted", [peak](Message m, Context& ctx) -> Task<Message> {
      {
        std::lock_guard l(peak->mu);
        peak->peak = std::max(peak->peak, ++peak->running);
      }
      co_await ctx.sleep(0.002);
      {
        std::lock_guard l(peak->mu);
        --peak->running;
      }
      co_return m;
    });
    return Flow({n.to()});
  });
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(w.stats().succeeded, 300u);
  EXPECT_EQ(probe.handles, 2);
  EXPECT_GT(probe.fetches_while_settling, 0) << "no lane refilled while its jobs were being settled";
  EXPECT_LE(peak->peak, 16);
  for (int h = 0; h < probe.handles; ++h) {
    EXPECT_LE(probe.max_in_flight[h], 8) << "handle " << h << ": more jobs running than its slots";
    EXPECT_GT(probe.max_outstanding[h], 8) << "handle " << h << ": never refilled before a settle returned";
    EXPECT_LE(probe.max_outstanding[h], 16) << "handle " << h << ": more than its slots of settles in flight";
  }
  EXPECT_EQ(probe.foreign_settles, 0);
}

// A settle that fails as a dropped connection makes it fail is sent again: the job is not
// left to expire and run twice. Lost requests are simply repeated; a repeat after a lost
// reply finds the job already settled (stale, its own doing) and still counts as done.
TEST_F(WorkerTest, ASettleCutOffByALostConnectionIsSentAgain) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 40; ++i) jobs.push_back(job("counted", json::object{}));
  auto ids = enqueue(jobs);
  LaneProbe probe;
  probe.lose_settle_requests = 3;
  probe.lose_settle_replies = 3;
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto o = options();
  o.concurrency = 4;
  o.lease_s = 30;  // nothing expires during the test: a second run could only come from a lost settle
  o.open_queue = probed_opener(url_, probe);
  FlowRegistry flows;
  flows.add("counted", [runs] {
    Node n("counted", [runs](Message m, Context&) -> Task<Message> {
      ++*runs;
      co_return m;
    });
    return Flow({n.to()});
  });
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(probe.lose_settle_requests, 0);
  EXPECT_EQ(probe.lose_settle_replies, 0);
  EXPECT_EQ(runs->load(), 40) << "a job ran again: its settle was given up";
  EXPECT_EQ(w.stats().succeeded, 40u);
  EXPECT_EQ(probe.settles, 46);  // 40 settles + 6 repeats
  for (auto& id : ids) EXPECT_EQ(get(id).state, JobState::succeeded) << id;
}

TEST_F(WorkerTest, AnIdleShardWaitsForWorkThroughOneLane) {
  LaneProbe probe;
  auto o = options();
  o.concurrency = 16;
  o.fetch_lanes = 2;
  o.exit_when_empty = false;
  o.open_queue = probed_opener(url_, probe);
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  Worker w(std::move(flows), o);
  auto fetches = [&] {
    std::lock_guard l(probe.mu);
    return probe.fetches;
  };
  std::vector<int> idle;
  std::chrono::steady_clock::time_point stop_at;
  std::thread driver([&] {
    // Idle for 40 fetch waits (50 ms each): one lane polls, the other is parked.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      auto f = fetches();
      if (f.size() == 2 && std::max(f[0], f[1]) >= 40) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    idle = fetches();
    // Work arrives: the watcher finds it and wakes the parked lane; both take jobs.
    std::vector<NewJob> jobs;
    for (int i = 0; i < 200; ++i) jobs.push_back(job("flaky", json::object{{"sleep_ms", 5}}));
    enqueue(jobs);
    until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (w.stats().succeeded < 200 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the lanes find the queue empty and park
    stop_at = std::chrono::steady_clock::now();
    w.request_stop();
  });
  EXPECT_EQ(run(w), 0);
  const double stop_took = std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_at).count();
  driver.join();
  // A parked lane looks for itself every 5 s: a stop that did not wake it would show.
  EXPECT_LT(stop_took, 4.0) << "stop did not wake the parked lanes";
  ASSERT_EQ(idle.size(), 2u);
  EXPECT_GE(std::max(idle[0], idle[1]), 40);
  EXPECT_LE(std::min(idle[0], idle[1]), 2) << "the second lane polled while the shard was idle";
  EXPECT_EQ(w.stats().succeeded, 200u);
  std::lock_guard l(probe.mu);
  EXPECT_GT(probe.max_in_flight[0], 0);
  EXPECT_GT(probe.max_in_flight[1], 0);
}

TEST_F(WorkerTest, HeartbeatsGoThroughTheLaneThatFetchedTheJob) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 16; ++i) jobs.push_back(job("flaky", json::object{{"sleep_ms", 600}}, 1));
  enqueue(jobs);
  LaneProbe probe;
  auto o = options();
  o.concurrency = 16;
  o.fetch_lanes = 2;
  o.lease_s = 0.3;  // renewed every 0.1 s while the jobs run 0.6 s
  o.open_queue = probed_opener(url_, probe);
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(w.stats().succeeded, 16u);
  EXPECT_EQ(w.stats().lease_lost, 0u);
  std::lock_guard l(probe.mu);
  EXPECT_EQ(probe.handles, 2);
  EXPECT_GT(probe.heartbeats, 16);
  EXPECT_EQ(probe.foreign_heartbeats, 0);
}

TEST_F(WorkerTest, AShardRunsWithTheLanesItCouldOpen) {
  std::vector<NewJob> jobs;
  for (int i = 0; i < 50; ++i) jobs.push_back(job("flaky", json::object{{"sleep_ms", 1}}));
  enqueue(jobs);
  LaneProbe probe;
  auto o = options();
  o.concurrency = 32;
  o.fetch_lanes = 4;
  o.open_queue = probed_opener(url_, probe, 3);  // the third handle cannot open (a client limit)
  FlowRegistry flows;
  flows.add("flaky", [] { return examples::make_flaky_flow(); });
  Worker w(std::move(flows), o);
  EXPECT_EQ(run(w), 0);
  EXPECT_EQ(w.stats().succeeded, 50u);
  EXPECT_EQ(w.last_error(), "");
  std::lock_guard l(probe.mu);
  EXPECT_EQ(probe.handles, 2);
  EXPECT_LE(probe.max_in_flight[0], 16);  // the slots were split between the two that opened
  EXPECT_LE(probe.max_in_flight[1], 16);
}

TEST_F(WorkerTest, BadOptionsAreRefusedNamingTheFlag) {
  auto o = options();
  o.concurrency = 0;
  try {
    Worker w(FlowRegistry{}, o);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--concurrency"), std::string::npos);
  }
}

TEST_F(WorkerTest, UnreachableQueueEndsRunWithAnErrorNamingTheUrl) {
  auto o = options();
  o.queue_url = "postgresql://bob:hunter2@127.0.0.1:1/nowhere";
  Worker w(FlowRegistry{}, o);
  EXPECT_EQ(run(w), 1);
  EXPECT_NE(w.last_error().find("127.0.0.1:1"), std::string::npos) << w.last_error();
  EXPECT_EQ(w.last_error().find("hunter2"), std::string::npos) << w.last_error();
}
