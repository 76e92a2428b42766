// The job worker as processes (CONTRACTS.md section W), against SQLite, PostgreSQL and
// Redis: kill -9 with jobs in flight, SIGTERM drains, deadlines, poison and malformed
// jobs, server restarts, the `penguiflow` command line, idle memory.
//
// The worker under test is `test_worker` (tests/worker/test_worker_main.cpp): a user's own
// binary built on penguiflow::cli::run with test flows (effect, hang, poison) and the
// example flows. The test process enqueues and inspects through the JobQueue API (and
// through outside clients: sqlite3, psql, redis-cli). PostgreSQL and Redis cases need
// PENGUIFLOW_TEST_PG_URL / PENGUIFLOW_TEST_REDIS_URL (scripts/test-servers.sh) and skip
// without them; each test works in a namespace of its own (--namespace).
//
// Every wait is a poll on a condition with a hard bound; children are SIGKILLed in
// teardown. Measured numbers (shutdown times, RSS, duplicate effects) are printed, not
// asserted (beyond generous sanity bounds).
#include "process_support.hpp"
#include "support/async_test.hpp"

#include <penguiflow/queue/queue.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

using namespace penguiflow;
using namespace penguiflow::testing;
namespace json = boost::json;
namespace asio = boost::asio;
using queue::Counts;
using queue::Job;
using queue::JobQueue;
using queue::JobState;
using queue::NewJob;

#ifndef PF_TEST_WORKER_BIN
#error "PF_TEST_WORKER_BIN must name the test_worker executable"
#endif
#ifndef PF_CLI_BIN
#error "PF_CLI_BIN must name the penguiflow executable"
#endif

namespace {

const std::string kWorkerBin = PF_TEST_WORKER_BIN;
const std::string kCliBin = PF_CLI_BIN;

double secs_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::int64_t n_of(const Counts& c, const char* state) {
  auto it = c.by_state.find(state);
  return it == c.by_state.end() ? 0 : it->second;
}

std::string counts_str(const Counts& c) {
  std::string s;
  for (auto* st : {"queued", "running", "succeeded", "dead"}) s += std::string(st) + "=" + std::to_string(n_of(c, st)) + " ";
  return s;
}

std::string sql_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// Where a test's queue lives.
struct Backend {
  std::string name;  // sqlite | postgres | redis
  std::string url;
  std::string ns;    // QueueConfig::namespace_ / --namespace
  std::string sqlite_file;
};

/// Backend-parameterised fixture: a queue in a namespace of its own, helpers to reach it
/// through the API and through outside clients, and the worker processes.
class ProcessFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::make_unique<TempDir>("pf-proc.");
    be_.name = GetParam();
    be_.ns = "pfw_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    if (be_.name == "sqlite") {
      be_.sqlite_file = dir_->str("jobs.db");
      be_.url = "sqlite://" + be_.sqlite_file;
    } else if (be_.name == "postgres") {
#ifndef PF_HAVE_POSTGRES
      GTEST_SKIP() << "this build has no PostgreSQL backend";
#endif
      const char* url = std::getenv("PENGUIFLOW_TEST_PG_URL");
      if (!url || !*url) GTEST_SKIP() << "PENGUIFLOW_TEST_PG_URL is not set (eval \"$(scripts/test-servers.sh start)\")";
      be_.url = url;
    } else if (be_.name == "redis") {
#ifndef PF_HAVE_REDIS
      GTEST_SKIP() << "this build has no Redis backend";
#endif
      const char* url = std::getenv("PENGUIFLOW_TEST_REDIS_URL");
      if (!url || !*url) GTEST_SKIP() << "PENGUIFLOW_TEST_REDIS_URL is not set (eval \"$(scripts/test-servers.sh start)\")";
      be_.url = url;
    }
    effect_file_ = dir_->str("effects.txt");
    (void)counts();  // creates the tables / schema before any outside client writes
  }

  void TearDown() override {
    if (HasFailure())
      for (auto& p : procs_) std::fprintf(stderr, "%s\n", p->describe().c_str());
    for (auto& p : procs_) p->kill_now();
    procs_.clear();
    cleanup_namespace(be_);
  }

  /// Drops a test namespace on the shared servers (best effort).
  void cleanup_namespace(const Backend& be) {
    if (be.url.empty() || !dir_) return;
    if (be.name == "postgres")
      run_command({"psql", be.url, "-qc", "DROP SCHEMA IF EXISTS \"" + be.ns + "\" CASCADE"}, dir_->path().string(), 20s);
    if (be.name == "redis")
      run_command({"sh", "-c", "redis-cli -u \"$0\" --scan --pattern \"{$1}:*\" | xargs -r redis-cli -u \"$0\" DEL >/dev/null",
                   be.url, be.ns},
                  dir_->path().string(), 20s);
  }

  // ---------------------------------------------------------------- queue API

  /// Opens the queue, runs fn, closes it (a fresh connection per call: survives restarts).
  template <class T>
  T with_queue(const std::function<Task<T>(JobQueue&)>& fn, std::chrono::milliseconds bound = 20s) {
    queue::QueueConfig cfg;
    cfg.namespace_ = be_.ns;
    std::string url = be_.url;
    return run_async([&]() -> Task<T> {
      auto q = co_await queue::open_queue(co_await asio::this_coro::executor, url, cfg);
      std::exception_ptr err;
      T result{};
      try {
        result = co_await fn(*q);
      } catch (...) {
        err = std::current_exception();
      }
      co_await q->close();
      if (err) std::rethrow_exception(err);
      co_return result;
    }(), bound);
  }

  std::vector<std::string> enqueue(std::vector<NewJob> jobs) {
    return with_queue<std::vector<std::string>>([&](JobQueue& q) -> Task<std::vector<std::string>> {
      auto rs = co_await q.enqueue_bulk(jobs);
      std::vector<std::string> ids;
      for (auto& r : rs) ids.push_back(r.id);
      co_return ids;
    });
  }

  std::vector<std::string> enqueue_effects(int n, int sleep_ms, std::string tenant = "acme") {
    std::vector<NewJob> jobs;
    for (int i = 0; i < n; ++i) {
      NewJob j;
      j.flow = "effect";
      j.tenant = tenant;
      j.payload = json::object{{"sleep_ms", sleep_ms}, {"i", i}};
      jobs.push_back(std::move(j));
    }
    return enqueue(std::move(jobs));
  }

  Counts counts() {
    return with_queue<Counts>([](JobQueue& q) -> Task<Counts> { co_return co_await q.counts(); });
  }

  std::optional<Job> get(const std::string& id) {
    return with_queue<std::optional<Job>>([&](JobQueue& q) -> Task<std::optional<Job>> {
      std::optional<std::string> any_tenant;
      co_return co_await q.get(id, any_tenant);
    });
  }

  std::vector<Job> list(std::optional<JobState> state) {
    return with_queue<std::vector<Job>>([&](JobQueue& q) -> Task<std::vector<Job>> {
      queue::ListFilter f{state, std::nullopt, 100000};
      co_return co_await q.list(std::move(f));
    });
  }

  /// ids whose W7 effect record ("job-<id>:side-effect") is present.
  std::set<std::string> recorded_effects(const std::vector<std::string>& ids) {
    return with_queue<std::set<std::string>>([&](JobQueue& q) -> Task<std::set<std::string>> {
      std::set<std::string> out;
      for (auto& id : ids) {
        std::string key = "job-" + id + ":side-effect";
        auto v = co_await q.lookup_effect(std::move(key));
        if (v && v->is_object() && v->as_object().contains("job") && v->as_object().at("job").as_string() == id)
          out.insert(id);
      }
      co_return out;
    });
  }

  /// Polls until `pred(counts)` holds; fails with the last counts otherwise.
  bool wait_counts(const std::function<bool(const Counts&)>& pred, std::chrono::milliseconds bound, Counts* last = nullptr) {
    Counts c;
    std::string err;
    bool ok = poll_until([&] {
      c = counts();
      return pred(c);
    }, bound, 50ms, &err);
    if (last) *last = c;
    if (!ok) ADD_FAILURE() << "condition on counts not met within " << bound.count() << " ms; last counts: " << counts_str(c)
                           << (err.empty() ? "" : " last error: " + err);
    return ok;
  }

  std::optional<Job> wait_state(const std::string& id, JobState state, std::chrono::milliseconds bound) {
    std::optional<Job> j;
    std::string err;
    bool ok = poll_until([&] {
      j = get(id);
      return j && j->state == state;
    }, bound, 50ms, &err);
    if (!ok) {
      ADD_FAILURE() << "job " << id << " did not reach " << queue::to_string(state) << " within " << bound.count()
                    << " ms; last: " << (j ? std::string(queue::to_string(j->state)) + " reason=" + j->reason : "absent")
                    << (err.empty() ? "" : " error: " + err);
      return std::nullopt;
    }
    return j;
  }

  // ---------------------------------------------------------------- outside clients

  /// Writes a raw job document the way a producer in another language would
  /// (docs/wire-format.md): sqlite3, psql or redis-cli.
  void outside_write(const std::string& id, const std::string& doc) {
    CommandResult r;
    const std::string d = dir_->path().string();
    if (be_.name == "sqlite") {
      r = run_command({"sqlite3", be_.sqlite_file, "PRAGMA busy_timeout=5000; INSERT INTO " + be_.ns + "_jobs (id, doc) VALUES (" +
                                                      sql_quote(id) + ", " + sql_quote(doc) + ");"},
                      d);
    } else if (be_.name == "postgres") {
      r = run_command({"psql", be_.url, "-v", "ON_ERROR_STOP=1", "-qc",
                       "INSERT INTO \"" + be_.ns + "\".jobs (id, raw) VALUES (" + sql_quote(id) + ", " + sql_quote(doc) + ")"},
                      d);
    } else {
      const std::string tag = "{" + be_.ns + "}";
      r = run_command({"redis-cli", "-u", be_.url, "HSETNX", tag + ":job:" + id, "doc", doc}, d);
      if (r.code == 0) r = run_command({"redis-cli", "-u", be_.url, "ZADD", tag + ":scheduled", "0", id}, d);
      if (r.code == 0) r = run_command({"redis-cli", "-u", be_.url, "LPUSH", tag + ":wake", "1"}, d);
    }
    ASSERT_EQ(r.code, 0) << "outside client failed: " << r.err << r.out;
  }

  bool have_outside_client() const {
    return have_program(be_.name == "sqlite" ? "sqlite3" : be_.name == "postgres" ? "psql" : "redis-cli");
  }

  // ---------------------------------------------------------------- processes

  /// Starts `test_worker worker` on this test's queue with short leases and retries.
  Process& start_worker(std::vector<std::string> extra, const std::string& label = "worker") {
    std::vector<std::string> argv{kWorkerBin, "worker", "-q", be_.url, "--namespace", be_.ns, "--lease", "2",
                                  "--retry-base", "0.05", "--retry-max", "0.2", "--worker-id",
                                  label + "-" + std::to_string(procs_.size())};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::map<std::string, std::string> env{{"PENGUIFLOW_TEST_EFFECT_FILE", effect_file_}};
    procs_.push_back(std::make_unique<Process>(argv, env, dir_->path().string(), label + std::to_string(procs_.size())));
    return *procs_.back();
  }

  /// The `penguiflow` command (the stock binary) on this test's queue.
  CommandResult cli(std::vector<std::string> args, std::chrono::milliseconds bound = 30s) {
    std::vector<std::string> argv{kCliBin};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"-q", be_.url, "--namespace", be_.ns});
    return run_command(argv, dir_->path().string(), bound);
  }

  /// Lines of the effect file, counted per content.
  std::map<std::string, int> effect_lines() {
    std::map<std::string, int> m;
    std::istringstream in(read_file(effect_file_));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) ++m[line];
    return m;
  }

  Backend be_;
  std::unique_ptr<TempDir> dir_;
  std::string effect_file_;
  std::vector<std::unique_ptr<Process>> procs_;
};

std::string backend_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

#define PF_BACKEND_SUITE(Suite)             \
  class Suite : public ProcessFixture {};   \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::Values("sqlite", "postgres", "redis"), backend_name)

#define PF_SERVER_SUITE(Suite)              \
  class Suite : public ProcessFixture {};   \
  INSTANTIATE_TEST_SUITE_P(Servers, Suite, ::testing::Values("postgres", "redis"), backend_name)

// ==================================================================== W8 + W7: kill -9

PF_BACKEND_SUITE(W8_W7_KillNine);

// A worker killed with SIGKILL mid-load leaves its leased jobs to expire; a second worker
// redelivers them. Every job ends succeeded exactly once and its side-effect record
// (effect_once) is present. The effect *file* may hold a duplicate line for a job whose
// effect ran but whose record was not committed before the kill: the recorded effect is
// the exactly-once guarantee, the raw side effect is at-least-once (job_context.hpp).
TEST_P(W8_W7_KillNine, JobsInFlightAreRedeliveredAndEveryEffectIsRecordedOnce) {
  const int n = 200;
  auto ids = enqueue_effects(n, 50);
  ASSERT_EQ(ids.size(), size_t(n));

  auto& a = start_worker({"--concurrency", "16"}, "worker-a");
  Counts before;
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "succeeded") >= 30 && n_of(c, "running") >= 4; }, 30s, &before))
      << a.describe();
  a.signal(SIGKILL);
  ASSERT_EQ(a.wait_exit(5s), 128 + SIGKILL);
  Counts at_kill = counts();
  std::printf("[kill -9 %s] counts at kill: %s\n", be_.name.c_str(), counts_str(at_kill).c_str());

  auto& b = start_worker({"--concurrency", "16"}, "worker-b");
  Counts last;
  ASSERT_TRUE(wait_counts([&](const Counts& c) { return n_of(c, "succeeded") == n; }, 60s, &last)) << b.describe();
  EXPECT_EQ(n_of(last, "dead"), 0);
  EXPECT_EQ(n_of(last, "queued") + n_of(last, "running"), 0);

  auto done = list(JobState::succeeded);
  std::set<std::string> succeeded;
  int redelivered = 0;
  for (auto& j : done) {
    EXPECT_TRUE(succeeded.insert(j.id).second) << "job listed twice: " << j.id;
    EXPECT_EQ(j.result, json::value(json::object{{"done", true}})) << j.id;
    if (j.attempts > 1) ++redelivered;
  }
  EXPECT_EQ(succeeded, std::set<std::string>(ids.begin(), ids.end()));
  EXPECT_GT(redelivered, 0) << "no job was in flight at the kill: the test proved nothing";

  auto recorded = recorded_effects(ids);
  EXPECT_EQ(recorded.size(), ids.size()) << "a succeeded job has no side-effect record";

  auto lines = effect_lines();
  int duplicates = 0, missing = 0;
  for (auto& id : ids) {
    auto it = lines.find(id);
    if (it == lines.end()) ++missing;
    else duplicates += it->second - 1;
  }
  EXPECT_EQ(missing, 0) << "an effect recorded as done never ran";
  std::printf("[kill -9 %s] %d jobs, %d redelivered after the kill, effect records %zu/%d, "
              "duplicate effect-file lines: %d (recorded effect = exactly once; raw effect = at least once)\n",
              be_.name.c_str(), n, redelivered, recorded.size(), n, duplicates);
  b.signal(SIGTERM);
  EXPECT_EQ(b.wait_exit(15s), 0);
}

// ==================================================================== W9: SIGTERM

PF_BACKEND_SUITE(W9_Sigterm);

// SIGTERM mid-load: the worker stops fetching, lets in-flight jobs finish within the
// drain timeout, exits 0; no job is left running; jobs it never fetched are untouched.
TEST_P(W9_Sigterm, DuringLoadExitsZeroWithinDrainAndLeavesNothingRunning) {
  const int n = 150;
  const double drain = 3;
  auto ids = enqueue_effects(n, 100);
  auto& w = start_worker({"--concurrency", "16", "--drain-timeout", "3"});
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "succeeded") >= 20 && n_of(c, "running") >= 1; }, 30s))
      << w.describe();
  auto t0 = std::chrono::steady_clock::now();
  w.signal(SIGTERM);
  auto code = w.wait_exit(std::chrono::milliseconds(int((drain + 5) * 1000)));
  double took = secs_since(t0);
  ASSERT_TRUE(code.has_value()) << "no exit within drain + 5 s\n" << w.describe();
  EXPECT_EQ(*code, 0) << w.describe();
  std::printf("[sigterm %s] exit %d after %.3f s (drain timeout %.0f s)\n", be_.name.c_str(), *code, took, drain);
  EXPECT_LT(took, drain + 5);

  auto c = counts();
  EXPECT_EQ(n_of(c, "running"), 0) << counts_str(c);
  EXPECT_EQ(n_of(c, "dead"), 0) << counts_str(c);
  EXPECT_EQ(n_of(c, "succeeded") + n_of(c, "queued"), n) << counts_str(c);
  // In-flight jobs finished inside the drain: nothing had to be handed back.
  for (auto& j : list(JobState::queued)) EXPECT_EQ(j.attempts, 0) << j.id << " reason: " << j.reason;
  EXPECT_NE(w.err().find("shutdown_requested"), std::string::npos) << w.describe();
}

PF_BACKEND_SUITE(W9_SigtermBusy);

// 64 jobs in flight that outlast the drain timeout: the worker cancels them, hands their
// leases back (they are queued again at once) and exits 0.
TEST_P(W9_SigtermBusy, SixtyFourJobsInFlightAreHandedBackAndTheWorkerExitsZero) {
  const int n = 64;
  const double drain = 1;
  auto ids = enqueue_effects(n, 20000);
  auto& w = start_worker({"--concurrency", "64", "--drain-timeout", "1"});
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "running") == n; }, 30s)) << w.describe();
  auto t0 = std::chrono::steady_clock::now();
  w.signal(SIGTERM);
  auto code = w.wait_exit(std::chrono::milliseconds(int((drain + 5) * 1000)));
  double took = secs_since(t0);
  ASSERT_TRUE(code.has_value()) << "no exit within drain + 5 s\n" << w.describe();
  EXPECT_EQ(*code, 0) << w.describe();
  std::printf("[sigterm busy %s] 64 in flight, exit %d after %.3f s (drain timeout %.0f s)\n", be_.name.c_str(), *code, took,
              drain);
  EXPECT_LT(took, drain + 5);

  auto c = counts();
  EXPECT_EQ(n_of(c, "queued"), n) << counts_str(c);
  EXPECT_EQ(n_of(c, "running"), 0) << counts_str(c);
  for (auto& j : list(JobState::queued)) {
    EXPECT_EQ(j.attempts, 1) << j.id;
    EXPECT_NE(j.reason.find("shutdown"), std::string::npos) << j.id << " reason: " << j.reason;
    EXPECT_LE(j.run_at, queue::unix_now() + 0.5) << "handed back with a delay";
  }
  EXPECT_TRUE(effect_lines().empty()) << "a cancelled effect ran";
}

// ==================================================================== W3 + W6: deadline

PF_BACKEND_SUITE(W3_W6_Deadline);

// A job whose flow hangs, with deadline_s 0.5: each attempt hits the bound, its trace is
// cancelled (the node sees the cancellation), it is retried with backoff, and after
// max_attempts it goes dead with a reason naming the time bound.
TEST_P(W3_W6_Deadline, HangingJobIsCancelledAtItsDeadlineRetriedThenDead) {
  NewJob j;
  j.flow = "hang";
  j.tenant = "acme";
  j.payload = json::object{};
  j.max_attempts = 3;
  j.deadline_s = 0.5;
  auto ids = enqueue({j});
  auto& w = start_worker({"--concurrency", "4"});
  auto dead = wait_state(ids[0], JobState::dead, 30s);
  ASSERT_TRUE(dead) << w.describe();
  EXPECT_EQ(dead->attempts, 3);
  EXPECT_TRUE(dead->reason.find("time bound") != std::string::npos || dead->reason.find("deadline") != std::string::npos)
      << dead->reason;
  EXPECT_NE(dead->reason.find("after 3 attempts"), std::string::npos) << dead->reason;
  std::printf("[deadline %s] dead reason: %s\n", be_.name.c_str(), dead->reason.c_str());
  // Each attempt's node was cancelled (it writes "cancelled <id> <attempt>" when it is).
  std::map<std::string, int> lines;
  bool all_cancelled = poll_until([&] {
    lines = effect_lines();
    return lines.count("cancelled " + ids[0] + " 1") && lines.count("cancelled " + ids[0] + " 2") &&
           lines.count("cancelled " + ids[0] + " 3");
  }, 5s);
  EXPECT_TRUE(all_cancelled) << "the hanging node was not cancelled on every attempt:\n" << read_file(effect_file_);
  EXPECT_TRUE(w.running()) << w.describe();
}

// ==================================================================== W6: poison

PF_BACKEND_SUITE(W6_Poison);

// A job that always throws goes dead after max_attempts with its reason and details;
// good jobs beside it succeed.
TEST_P(W6_Poison, PoisonJobGoesDeadAfterMaxAttemptsAndGoodJobsSucceed) {
  NewJob p;
  p.flow = "poison";
  p.tenant = "acme";
  p.payload = json::object{};
  p.max_attempts = 3;
  auto pid = enqueue({p})[0];
  auto good = enqueue_effects(20, 0);
  auto& w = start_worker({"--concurrency", "8"});
  auto dead = wait_state(pid, JobState::dead, 30s);
  ASSERT_TRUE(dead) << w.describe();
  EXPECT_EQ(dead->attempts, 3);
  EXPECT_NE(dead->reason.find("poison pill"), std::string::npos) << dead->reason;
  EXPECT_NE(dead->reason.find("after 3 attempts"), std::string::npos) << dead->reason;
  ASSERT_TRUE(dead->details.is_object()) << json::serialize(dead->details);
  auto& d = dead->details.as_object();
  EXPECT_EQ(d.contains("attempts") ? d.at("attempts").to_number<int>() : -1, 3) << json::serialize(d);
  EXPECT_TRUE(d.contains("worker_id")) << json::serialize(d);
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "succeeded") == 20; }, 30s)) << w.describe();
  EXPECT_TRUE(w.running()) << w.describe();
}

// ==================================================================== Q9 / W1: bad jobs

PF_BACKEND_SUITE(W1_MalformedJob);

// A broken document written by an outside client (sqlite3 / psql / redis-cli) goes dead
// with its reason; the worker keeps processing good jobs, including one written by the
// same outside client.
TEST_P(W1_MalformedJob, OutsideClientsBrokenDocumentGoesDeadAndGoodJobsFlow) {
  if (!have_outside_client()) GTEST_SKIP() << "the outside client for " << be_.name << " is not installed";
  auto& w = start_worker({"--concurrency", "8"});
  outside_write("ext-bad", "{not json");
  outside_write("ext-good", R"({"flow":"effect","tenant":"acme","payload":{"sleep_ms":0}})");
  auto good = enqueue_effects(10, 0);
  auto dead = wait_state("ext-bad", JobState::dead, 30s);
  ASSERT_TRUE(dead) << w.describe();
  EXPECT_NE(dead->reason.find("malformed job"), std::string::npos) << dead->reason;
  EXPECT_TRUE(wait_state("ext-good", JobState::succeeded, 30s)) << w.describe();
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "succeeded") == 11; }, 30s)) << w.describe();
  EXPECT_TRUE(w.running()) << w.describe();
  std::printf("[malformed %s] dead reason: %s\n", be_.name.c_str(), dead->reason.c_str());
}

PF_BACKEND_SUITE(W11_W1_BadJobs);

// Unknown flow, a payload that fails the flow's typed input, a job without a tenant: each
// goes dead once with an actionable reason; the worker never exits and keeps working.
TEST_P(W11_W1_BadJobs, UnknownFlowBadPayloadAndMissingTenantGoDeadOnceWithAReason) {
  auto& w = start_worker({"--concurrency", "8"});
  NewJob unknown;
  unknown.flow = "no-such-flow";
  unknown.tenant = "acme";
  unknown.payload = json::object{};
  NewJob bad_payload;
  bad_payload.flow = "quickstart";
  bad_payload.tenant = "acme";
  bad_payload.payload = json::object{{"query", 42}};
  auto ids = enqueue({unknown, bad_payload});
  bool outside = have_outside_client();
  if (outside) outside_write("ext-no-tenant", R"({"flow":"effect","payload":{}})");

  auto d1 = wait_state(ids[0], JobState::dead, 30s);
  auto d2 = wait_state(ids[1], JobState::dead, 30s);
  ASSERT_TRUE(d1 && d2) << w.describe();
  EXPECT_NE(d1->reason.find("unknown flow"), std::string::npos) << d1->reason;
  EXPECT_NE(d1->reason.find("no-such-flow"), std::string::npos) << d1->reason;
  EXPECT_LE(d1->attempts, 1) << d1->reason;
  EXPECT_NE(d2->reason.find("invalid payload"), std::string::npos) << d2->reason;
  EXPECT_NE(d2->reason.find("query"), std::string::npos) << "the reason should name the field: " << d2->reason;
  EXPECT_EQ(d2->attempts, 1) << "a bad payload must not be retried: " << d2->reason;
  std::printf("[bad jobs %s] unknown flow: %s\n[bad jobs %s] bad payload: %s\n", be_.name.c_str(), d1->reason.c_str(),
              be_.name.c_str(), d2->reason.c_str());
  if (outside) {
    auto d3 = wait_state("ext-no-tenant", JobState::dead, 30s);
    ASSERT_TRUE(d3) << w.describe();
    EXPECT_NE(d3->reason.find("missing tenant"), std::string::npos) << d3->reason;
    EXPECT_LE(d3->attempts, 1);
    std::printf("[bad jobs %s] no tenant: %s\n", be_.name.c_str(), d3->reason.c_str());
  }
  // Still serving: a good job enqueued afterwards succeeds, from the same process.
  auto good = enqueue_effects(1, 0);
  EXPECT_TRUE(wait_state(good[0], JobState::succeeded, 30s)) << w.describe();
  EXPECT_TRUE(w.running()) << w.describe();
  auto c = counts();
  EXPECT_EQ(n_of(c, "dead"), outside ? 3 : 2) << counts_str(c);
}

// ==================================================================== W8: server restart

PF_SERVER_SUITE(W8_ServerRestart);

/// A PostgreSQL cluster of the test's own (requiring `password` when one is given), or
/// null with `why` it cannot run here.
std::unique_ptr<PrivatePostgres> start_private_postgres(std::string& why, const std::string& password) {
  if (!have_program("runuser") && ::geteuid() == 0) {
    why = "runuser is needed to run postgres as root";
    return nullptr;
  }
  try {
    return std::make_unique<PrivatePostgres>(password);
  } catch (const std::exception& e) {
    why = std::string("cannot start a private postgres server: ") + e.what();
    return nullptr;
  }
}

// The queue server is restarted mid-run (a private server of the test's own): the worker
// reconnects and every job ends succeeded; nothing acknowledged is lost.
TEST_P(W8_ServerRestart, WorkerReconnectsAndEveryJobEndsSucceeded) {
  std::unique_ptr<PrivatePostgres> pg;
  std::unique_ptr<PrivateRedis> redis;
  if (be_.name == "postgres") {
    std::string why;
    pg = start_private_postgres(why, "");
    if (!pg) GTEST_SKIP() << why;
  } else {
    try {
      redis = std::make_unique<PrivateRedis>();
    } catch (const std::exception& e) {
      GTEST_SKIP() << "cannot start a private redis server: " << e.what();
    }
  }
  cleanup_namespace(be_);  // the shared server's namespace is not used here
  be_.url = pg ? pg->url() : redis->url();

  const int n = 100;
  auto ids = enqueue_effects(n, 100);
  auto& w = start_worker({"--concurrency", "8"});
  ASSERT_TRUE(wait_counts([](const Counts& c) { return n_of(c, "succeeded") >= 10; }, 30s)) << w.describe();
  std::set<std::string> before;
  for (auto& j : list(JobState::succeeded)) before.insert(j.id);

  ASSERT_LT(before.size(), size_t(n)) << "every job finished before the restart: the test proved nothing";
  auto t0 = std::chrono::steady_clock::now();
  if (pg) pg->restart();
  else redis->restart();
  std::printf("[restart %s] server restarted in %.2f s with %zu jobs succeeded\n", be_.name.c_str(), secs_since(t0),
              before.size());

  Counts last;
  ASSERT_TRUE(wait_counts([&](const Counts& c) { return n_of(c, "succeeded") == n; }, 90s, &last))
      << w.describe() << (pg ? "\n" + pg->log() : "");
  EXPECT_EQ(n_of(last, "dead"), 0);
  std::set<std::string> after;
  for (auto& j : list(JobState::succeeded)) after.insert(j.id);
  EXPECT_EQ(after, std::set<std::string>(ids.begin(), ids.end()));
  for (auto& id : before) EXPECT_TRUE(after.count(id)) << "a job acknowledged as succeeded before the restart was lost: " << id;
  EXPECT_EQ(recorded_effects(ids).size(), ids.size());
  EXPECT_TRUE(w.running()) << w.describe();
  int retried = 0;
  for (auto& j : list(JobState::succeeded))
    if (j.attempts > 1) ++retried;
  std::istringstream log(w.err());
  std::string line, first_problem;
  int problems = 0;
  while (std::getline(log, line))
    if (line.find(" warn ") != std::string::npos || line.find(" error ") != std::string::npos) {
      if (!problems++) first_problem = line;
    }
  std::printf("[restart %s] all %d succeeded after the restart; %d ran more than once; worker logged %d warn/error "
              "lines%s%s\n",
              be_.name.c_str(), n, retried, problems, problems ? ", first: " : "", first_problem.c_str());
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait_exit(15s), 0) << w.describe();
  be_.url.clear();  // nothing to clean on the shared server
}

// ==================================================================== the command line

PF_BACKEND_SUITE(W11_Cli);

json::value parse_json(const CommandResult& r) {
  boost::system::error_code ec;
  auto v = json::parse(r.out, ec);
  if (ec) ADD_FAILURE() << "not JSON (" << ec.message() << "): " << r.out << r.err;
  return v;
}

std::int64_t count_in(const json::value& stats, const char* state) {
  if (!stats.is_object()) return -1;
  auto* bs = stats.as_object().if_contains("by_state");
  if (!bs || !bs->is_object()) return -1;
  auto* v = bs->as_object().if_contains(state);
  return v ? v->to_number<std::int64_t>() : 0;
}

// enqueue, jobs, stats, worker --exit-when-empty, dead, requeue, purge through the stock
// `penguiflow` binary, reading its --json output; tenant scoping of jobs (W11).
TEST_P(W11_Cli, EnqueueJobsStatsDeadRequeuePurge) {
  auto e1 = cli({"enqueue", "-f", "quickstart", "-t", "acme", "-p", R"({"query":"what is the latency dashboard"})", "--json"});
  ASSERT_EQ(e1.code, 0) << e1.err;
  auto v1 = parse_json(e1);
  ASSERT_TRUE(v1.is_array() && v1.as_array().size() == 1) << e1.out;
  std::string id1 = v1.as_array()[0].at("id").as_string().c_str();
  EXPECT_TRUE(v1.as_array()[0].at("created").as_bool());

  auto e2 = cli({"enqueue", "-f", "flaky", "-t", "acme", "-p", R"({"fail":true})", "--max-attempts", "1", "--json"});
  ASSERT_EQ(e2.code, 0) << e2.err;
  std::string id2 = parse_json(e2).as_array()[0].at("id").as_string().c_str();

  auto jobs = cli({"jobs", "--json"});
  ASSERT_EQ(jobs.code, 0) << jobs.err;
  auto jv = parse_json(jobs);
  ASSERT_TRUE(jv.is_array()) << jobs.out;
  std::set<std::string> listed;
  for (auto& j : jv.as_array()) {
    listed.insert(j.at("id").as_string().c_str());
    EXPECT_EQ(j.at("state").as_string(), "queued");
  }
  EXPECT_EQ(listed, (std::set<std::string>{id1, id2}));
  auto other = cli({"jobs", "-t", "someone-else", "--json"});
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_TRUE(parse_json(other).as_array().empty()) << "another tenant sees acme's jobs: " << other.out;

  auto st = cli({"stats", "--json"});
  ASSERT_EQ(st.code, 0) << st.err;
  auto sv = parse_json(st);
  EXPECT_EQ(count_in(sv, "queued"), 2) << st.out;
  EXPECT_EQ(sv.at("by_tenant").at("acme").at("queued").to_number<int>(), 2) << st.out;

  auto wk = cli({"worker", "--exit-when-empty", "--retry-base", "0.05", "--concurrency", "4"}, 60s);
  ASSERT_EQ(wk.code, 0) << wk.err;

  auto one = cli({"jobs", "--id", id1});
  ASSERT_EQ(one.code, 0) << one.err;
  auto ov = parse_json(one);
  EXPECT_EQ(ov.at("state").as_string(), "succeeded") << one.out;
  EXPECT_NE(json::serialize(ov.at("result")).find("metrics"), std::string::npos) << one.out;

  auto dead = cli({"dead", "--json"});
  ASSERT_EQ(dead.code, 0) << dead.err;
  auto dv = parse_json(dead);
  ASSERT_TRUE(dv.is_array() && dv.as_array().size() == 1) << dead.out;
  EXPECT_EQ(dv.as_array()[0].at("id").as_string(), id2);
  EXPECT_NE(std::string(dv.as_array()[0].at("reason").as_string().c_str()).find("flaky"), std::string::npos) << dead.out;
  auto dead_text = cli({"dead"});
  EXPECT_EQ(dead_text.code, 0);
  EXPECT_NE(dead_text.out.find(id2), std::string::npos) << dead_text.out;

  auto rq = cli({"requeue", "--all", "--json"});
  ASSERT_EQ(rq.code, 0) << rq.err;
  EXPECT_EQ(parse_json(rq).at("requeued").to_number<int>(), 1) << rq.out;
  auto rq_none = cli({"requeue"});
  EXPECT_EQ(rq_none.code, 2) << "requeue without ids or --all must be refused";

  auto st2 = parse_json(cli({"stats", "--json"}));
  EXPECT_EQ(count_in(st2, "queued"), 1);
  EXPECT_EQ(count_in(st2, "succeeded"), 1);
  EXPECT_EQ(count_in(st2, "dead"), 0);

  auto pg = cli({"purge", "--older-than", "0", "--json"});
  ASSERT_EQ(pg.code, 0) << pg.err;
  EXPECT_EQ(parse_json(pg).at("purged").to_number<int>(), 1) << pg.out;
  auto left = parse_json(cli({"jobs", "--json"}));
  ASSERT_TRUE(left.is_array());
  ASSERT_EQ(left.as_array().size(), 1u);
  EXPECT_EQ(left.as_array()[0].at("id").as_string(), id2);
}

class CliBasics : public ::testing::Test {
 protected:
  CommandResult run(std::vector<std::string> args, std::chrono::milliseconds bound = 30s) {
    std::vector<std::string> argv{kCliBin};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, dir_.path().string(), bound);
  }
  TempDir dir_{"pf-cli."};
};

TEST_F(CliBasics, BadFlagsExitTwoWithAMessage) {
  for (auto args : std::vector<std::vector<std::string>>{{"worker", "--no-such-flag"},
                                                         {"jobs", "--state", "sleeping"},
                                                         {"worker", "--concurrency", "0"},
                                                         {"worker", "--mode", "sometimes"},
                                                         {"no-such-command"},
                                                         {}}) {
    auto r = run(args);
    std::string joined;
    for (auto& a : args) joined += a + " ";
    EXPECT_EQ(r.code, 2) << joined << "\n" << r.err << r.out;
    EXPECT_FALSE((r.err + r.out).empty()) << joined << ": no message";
  }
  auto r = run({"worker", "--no-such-flag"});
  EXPECT_NE(r.err.find("no-such-flag"), std::string::npos) << r.err;
}

TEST_F(CliBasics, BadUrlExitsNonZeroNamingTheUrlWithThePasswordRedacted) {
  for (auto url : {"postgresql://u:secret@127.0.0.1:1/db", "redis://:secret@127.0.0.1:1/0"}) {
    for (auto cmd : {"stats", "worker"}) {
      auto r = run({cmd, "-q", url}, 30s);
      const std::string all = r.err + r.out;
      EXPECT_NE(r.code, 0) << cmd << " " << url << ": " << all;
      EXPECT_NE(r.code, -1) << cmd << " " << url << " did not finish";
      EXPECT_NE(all.find("127.0.0.1:1"), std::string::npos) << cmd << ": the message should name the URL: " << all;
      EXPECT_EQ(all.find("secret"), std::string::npos) << cmd << ": the password leaked: " << all;
      EXPECT_TRUE(all.find("refused") != std::string::npos || all.find("cannot connect") != std::string::npos)
          << cmd << ": the message should say why: " << all;
    }
  }
  auto r = run({"stats", "-q", "sqlite:///no/such/dir/jobs.db"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("/no/such/dir/jobs.db"), std::string::npos) << r.err;
  auto s = run({"stats", "-q", "ftp://host/x"});
  EXPECT_NE(s.code, 0);
  EXPECT_NE(s.err.find("ftp"), std::string::npos) << s.err;
}

// A PostgreSQL that wants a password: a wrong one (in the URL or in PGPASSWORD) is a
// clear error naming the URL, redacted, and the server's cause; the right one works.
TEST_F(CliBasics, WrongPostgresPasswordExitsNonZeroNamingTheCauseNotThePassword) {
  std::string why;
  auto pg = start_private_postgres(why, "right-pw-1");
  if (!pg) GTEST_SKIP() << why;
  const auto wrong = pg->url_with_password("wrong-pw-2");
  auto r = run({"stats", "-q", wrong});
  std::string all = r.err + r.out;
  EXPECT_EQ(r.code, 1) << all;
  EXPECT_NE(all.find(queue::redact_url(wrong)), std::string::npos) << all;
  EXPECT_NE(all.find("password authentication failed"), std::string::npos) << all;
  EXPECT_EQ(all.find("wrong-pw-2"), std::string::npos) << "the password leaked: " << all;

  std::vector<std::string> argv{kCliBin, "stats", "-q", pg->url_with_password("")};
  r = run_command(argv, dir_.path().string(), 30s, {{"PGPASSWORD", "wrong-pw-3"}});
  all = r.err + r.out;
  EXPECT_EQ(r.code, 1) << all;
  EXPECT_NE(all.find("password authentication failed"), std::string::npos) << all;
  EXPECT_EQ(all.find("wrong-pw-3"), std::string::npos) << "the password leaked: " << all;

  r = run({"stats", "-q", pg->url()});
  EXPECT_EQ(r.code, 0) << r.err << r.out;
}

#ifdef PF_HAVE_POSTGRES
// While its server is down, a PostgreSQL queue backs off between connection attempts (100
// ms after a failure, doubling, at most 5 s: docs/backends.md), and works again once the
// server is back, on the same queue object. Each call waits for the next attempt and fails
// with it, so the time to fail 6 calls is the backoff: a lower bound only (a slow machine
// can only stretch it), and no call may wait beyond the cap.
TEST(PostgresReconnect, AttemptsBackOffWhileTheServerIsDownThenRecover) {
  std::string why;
  auto pg = start_private_postgres(why, "");
  if (!pg) GTEST_SKIP() << why;
  std::vector<double> failed_at;
  bool recovered = false;
  run_async([&]() -> Task<void> {
    queue::QueueConfig cfg;
    cfg.namespace_ = "backoff";
    auto q = co_await queue::open_queue(co_await asio::this_coro::executor, pg->url(), cfg);
    (void)co_await q->counts();
    pg->stop();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 6; ++i) {
      try {
        (void)co_await q->counts();
        ADD_FAILURE() << "call " << i << " reached a stopped server";
      } catch (const queue::QueueError&) {
      }
      failed_at.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    pg->start();
    // The next attempt is at most one backoff (5 s) away.
    for (int i = 0; i < 3 && !recovered; ++i) {
      try {
        (void)co_await q->counts();
        recovered = true;
      } catch (const queue::QueueError&) {
      }
    }
    co_await q->close();
  }(), 60s);
  ASSERT_EQ(failed_at.size(), 6u);
  // The first call finds the connection dead and tries once; then 0.1 + 0.2 + 0.4 + 0.8 +
  // 1.6 s of backoff before the sixth fails.
  EXPECT_GE(failed_at[5], 0.9 * 3.1) << "attempts were not spaced: the server was hammered";
  for (std::size_t i = 1; i < failed_at.size(); ++i)
    EXPECT_LT(failed_at[i] - failed_at[i - 1], 5.0 + 1.5) << "a call waited beyond the 5 s cap";
  EXPECT_TRUE(recovered) << "the queue did not reconnect after the server came back";
}
#endif

TEST_F(CliBasics, HelpOnEverySubcommandExitsZero) {
  for (auto sub : {"demo", "worker", "enqueue", "jobs", "stats", "dead", "requeue", "purge", "cancel", "flows"}) {
    auto r = run({sub, "--help"});
    EXPECT_EQ(r.code, 0) << sub << ": " << r.err;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << ": " << r.out;
  }
  auto r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  auto f = run({"flows", "--json"});
  EXPECT_EQ(f.code, 0);
  EXPECT_NE(f.out.find("quickstart"), std::string::npos) << f.out;
}

// The README's main job: `penguiflow demo` on a fresh SQLite file ends with exit 0, the
// expected dead letters (the flows that fail on purpose), nothing left queued, and hints
// that name the command as it was invoked.
TEST_F(CliBasics, DemoRunsToASummaryThatAddsUp) {
  auto r = run({"demo", "--jobs", "300", "-q", "sqlite://" + dir_.str("demo.db")}, 120s);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_EQ(r.out.find("UNEXPECTED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("left in queue   0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dead letters, one reason per flow"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::string(kCliBin) + " stats --queue sqlite://"), std::string::npos) << r.out;
}

// ==================================================================== idle cost

// An idle worker at --concurrency 64 on SQLite: resident memory once it has settled
// (target < 30 MiB; asserted only against a generous bound).
TEST(IdleCost_Worker, ResidentMemoryAtConcurrency64OnSqlite) {
  TempDir dir("pf-idle.");
  const std::string url = "sqlite://" + dir.str("jobs.db");
  for (auto [bin, label] : {std::pair{kCliBin, "penguiflow"}, std::pair{kWorkerBin, "test_worker"}}) {
    Process w({bin, "worker", "-q", url, "--concurrency", "64"}, {}, dir.path().string(), label);
    ASSERT_TRUE(poll_until([&] { return std::filesystem::exists(dir.str("jobs.db")) && w.err().find("worker_started") != std::string::npos; }, 20s))
        << w.describe();
    // Settled: five samples 200 ms apart within 64 KiB of each other.
    std::vector<long> samples;
    bool settled = poll_until([&] {
      samples.push_back(rss_kib(w.pid()));
      if (samples.size() < 5) return false;
      auto [lo, hi] = std::minmax_element(samples.end() - 5, samples.end());
      return *hi - *lo <= 64;
    }, 15s, 200ms);
    long kib = samples.empty() ? -1 : samples.back();
    std::printf("[idle rss] %s worker --concurrency 64 on sqlite: VmRSS %.1f MiB (%s)\n", label, kib / 1024.0,
                settled ? "settled" : "still moving after 15 s");
    ASSERT_TRUE(w.running()) << w.describe();
    EXPECT_GT(kib, 0);
    EXPECT_LT(kib, 200 * 1024) << "idle worker uses " << kib << " KiB";
    w.signal(SIGTERM);
    EXPECT_EQ(w.wait_exit(10s), 0) << w.describe();
  }
}

}  // namespace
