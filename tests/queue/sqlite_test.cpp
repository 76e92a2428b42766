// sqlite:// backend: the conformance suite (a temp file per test) plus what only SQLite
// does: URL parsing, schema versioning, refusing what it cannot open.
#include "queue/conformance.hpp"
#include "support/async_test.hpp"

#include <penguiflow/backends/sqlite.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sqlite3.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

namespace penguiflow::queue::testing {
namespace {

namespace fs = std::filesystem;

// One temp directory per test process, removed at exit.
class TempDir : public ::testing::Environment {
 public:
  static fs::path& path() {
    static fs::path p;
    return p;
  }
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "pf-sqlite-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path() = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(path(), ec);
  }
};
[[maybe_unused]] auto* const kTempDir = ::testing::AddGlobalTestEnvironment(new TempDir);

std::string db_path(const QueueConfig& cfg) { return (TempDir::path() / (cfg.namespace_ + ".db")).string(); }

// The raw SQL an outside producer runs (docs/wire-format.md, "SQLite").
void sql_exec(const std::string& path, const std::string& sql, const std::vector<std::string>& args = {}) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("open " + path);
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    std::string m = sqlite3_errmsg(db);
    sqlite3_close(db);
    throw std::runtime_error("prepare: " + m);
  }
  for (std::size_t i = 0; i < args.size(); ++i)
    sqlite3_bind_text(st, static_cast<int>(i + 1), args[i].c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  std::string m = sqlite3_errmsg(db);
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) throw std::runtime_error("step: " + m);
}

// The first column of every row `sql` returns.
std::vector<std::string> sql_column(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("open " + path);
  sqlite3_stmt* st = nullptr;
  std::vector<std::string> out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto p = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      out.emplace_back(p ? p : "");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

QueueFactory make_sqlite_factory() {
  QueueFactory f;
  f.name = "sqlite";
  f.open = [](boost::asio::any_io_executor ex, QueueConfig cfg) -> Task<std::unique_ptr<JobQueue>> {
    std::string url = "sqlite://" + db_path(cfg);
    co_return co_await open_sqlite_queue(ex, url, std::move(cfg));
  };
  f.write_raw = [](boost::asio::any_io_executor, const QueueConfig& cfg, std::string id,
                   std::string raw) -> Task<void> {
    sql_exec(db_path(cfg), "INSERT INTO " + cfg.namespace_ + "_jobs (id, doc) VALUES (?1, ?2)", {id, raw});
    co_return;
  };
  return f;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Sqlite, QueueConformance, ::testing::Values(make_sqlite_factory()),
                         [](auto& i) { return i.param.name; });

TEST(SqliteUrl, ParsesAbsoluteAndRelativePaths) {
  EXPECT_EQ(parse_sqlite_url("sqlite:///var/lib/pf/jobs.db").path, "/var/lib/pf/jobs.db");
  EXPECT_EQ(parse_sqlite_url("sqlite://./penguiflow.db").path, "./penguiflow.db");
  EXPECT_EQ(parse_sqlite_url("sqlite://jobs.db").path, "jobs.db");
  auto o = parse_sqlite_url("sqlite:///x.db?busy_timeout_ms=100&poll_ms=7");
  EXPECT_EQ(o.path, "/x.db");
  EXPECT_EQ(o.busy_timeout.count(), 100);
  EXPECT_EQ(o.poll_interval.count(), 7);
  // Each refusal names the URL and what is wrong with it.
  auto error_of = [](const std::string& url) -> std::string {
    try {
      parse_sqlite_url(url);
    } catch (const QueueError& e) {
      return e.what();
    }
    return "accepted";
  };
  for (auto [url, cause] : {std::pair<std::string, std::string>{"sqlite://", "path"},
                            {"postgresql://x", "sqlite"},
                            {"sqlite:///x.db?nope=1", "nope"},
                            {"sqlite:///x.db?busy_timeout_ms=soon", "busy_timeout_ms"}}) {
    auto msg = error_of(url);
    EXPECT_NE(msg.find(url), std::string::npos) << msg;
    EXPECT_NE(msg.find(cause), std::string::npos) << url << ": " << msg;
  }
}

namespace {
std::string open_error(std::string url, QueueConfig cfg = {}) {
  try {
    penguiflow::testing::run_async([](std::string u, QueueConfig c) -> Task<void> {
      auto ex = co_await boost::asio::this_coro::executor;
      auto q = co_await open_sqlite_queue(ex, u, c);
      co_await q->close();
    }(url, cfg));
  } catch (const QueueError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(SqliteQueue, UnopenableFileIsAClearError) {
  auto msg = open_error("sqlite:///nonexistent-dir-pf/sub/jobs.db");
  EXPECT_NE(msg.find("sqlite:///nonexistent-dir-pf/sub/jobs.db"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unable to open"), std::string::npos) << msg;
}

TEST(SqliteQueue, BadNamespaceIsRefused) {
  QueueConfig cfg;
  cfg.namespace_ = "x; DROP TABLE y";
  auto msg = open_error("sqlite://" + (TempDir::path() / "ns.db").string(), cfg);
  EXPECT_NE(msg.find("namespace"), std::string::npos) << msg;
}

TEST(SqliteQueue, NewerSchemaVersionIsRefused) {
  auto path = (TempDir::path() / "newer.db").string();
  EXPECT_EQ(open_error("sqlite://" + path), "");  // creates the current version (kSqliteSchemaVersion)
  sql_exec(path, "UPDATE penguiflow_schema_version SET version = 99");
  auto msg = open_error("sqlite://" + path);
  EXPECT_NE(msg.find("schema version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

// A file written by schema version 1 (four indexes) is migrated in place on open: its jobs
// stay, the indexes are the current ones, the version is the current one.
TEST(SqliteQueue, Version1FileIsMigratedOnOpen) {
  auto path = (TempDir::path() / "v1.db").string();
  std::string url = "sqlite://" + path;
  EXPECT_EQ(open_error(url), "");
  // Turn the fresh file back into what version 1 wrote, with one job in it.
  sql_exec(path, "DROP INDEX penguiflow_jobs_claim");
  sql_exec(path, "DROP INDEX penguiflow_jobs_settled");
  sql_exec(path,
           "CREATE INDEX penguiflow_jobs_claim ON penguiflow_jobs (priority DESC, ready_at, seq) WHERE ready_at IS NOT NULL");
  sql_exec(path, "CREATE INDEX penguiflow_jobs_due ON penguiflow_jobs (ready_at) WHERE ready_at IS NOT NULL");
  sql_exec(path, "CREATE INDEX penguiflow_jobs_state ON penguiflow_jobs (state, updated_at)");
  sql_exec(path, "CREATE INDEX penguiflow_jobs_tenant ON penguiflow_jobs (tenant, state)");
  sql_exec(path, "UPDATE penguiflow_schema_version SET version = 1");
  sql_exec(path, "INSERT INTO penguiflow_jobs (id, doc) VALUES ('old', ?1)", {R"({"flow":"f","tenant":"t"})"});

  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_tenant["t"]["queued"], 1);
    FetchRequest req;
    req.wait = std::chrono::milliseconds(2000);
    auto got = co_await q->fetch(req);
    EXPECT_EQ(got.size(), 1u);
    if (!got.empty()) {
      EXPECT_EQ(got.front().job.id, "old");
    }
    co_await q->close();
  }(url));
  EXPECT_EQ(sql_column(path, "SELECT version FROM penguiflow_schema_version"),
            std::vector<std::string>{std::to_string(kSqliteSchemaVersion)});
  auto indexes = sql_column(path,
                            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'penguiflow_jobs'"
                            " AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name");
  std::vector<std::string> want{"penguiflow_jobs_claim", "penguiflow_jobs_idem", "penguiflow_jobs_settled"};
  EXPECT_EQ(indexes, want);
}

// Version 2 as first written kept succeeded rows in `_settled`; opening such a file
// replaces that index with the one that leaves them out (same version: the queries work
// with either), and counts, depth and purge still see every row.
TEST(SqliteQueue, Version2SettledIndexIsReplacedOnOpen) {
  auto path = (TempDir::path() / "v2settled.db").string();
  std::string url = "sqlite://" + path;
  EXPECT_EQ(open_error(url), "");
  sql_exec(path, "DROP INDEX penguiflow_jobs_settled");
  sql_exec(path,
           "CREATE INDEX penguiflow_jobs_settled ON penguiflow_jobs (state, tenant, updated_at) WHERE ready_at IS NULL");
  sql_exec(path, "INSERT INTO penguiflow_jobs (id, doc) VALUES ('a', ?1)", {R"({"flow":"f","tenant":"t"})"});
  sql_exec(path, "INSERT INTO penguiflow_jobs (id, doc) VALUES ('b', ?1)", {R"({"flow":"f","tenant":"t"})"});
  sql_exec(path, "INSERT INTO penguiflow_jobs (id, doc) VALUES ('c', ?1)", {R"({"flow":"f","tenant":"u"})"});
  sql_exec(path, "UPDATE penguiflow_jobs SET state = 'succeeded', ready_at = NULL, updated_at = 1 WHERE id = 'a'");
  sql_exec(path, "UPDATE penguiflow_jobs SET state = 'dead', ready_at = NULL, updated_at = 1 WHERE id = 'b'");

  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_tenant["t"]["succeeded"], 1);
    EXPECT_EQ(c.by_tenant["t"]["dead"], 1);
    EXPECT_EQ(c.by_tenant["u"]["queued"], 1);
    EXPECT_EQ(c.by_state["succeeded"], 1);
    auto d = co_await q->depth();
    EXPECT_EQ(d.by_state["dead"], 1);
    EXPECT_EQ(d.by_state["queued"], 1);
    EXPECT_EQ(d.by_state.count("succeeded") ? d.by_state["succeeded"] : 0, 0);
    FetchRequest req;
    req.wait = std::chrono::milliseconds(2000);
    auto got = co_await q->fetch(req);
    EXPECT_EQ(got.size(), 1u);
    for (auto& lj : got) {
      boost::json::value result;
      auto settled = co_await q->complete(lj.lease, std::move(result), 0.0);
      EXPECT_EQ(settled, Settle::ok);
    }
    c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 2);
    EXPECT_EQ(c.by_state["queued"], 0);
    auto purged = co_await q->purge(0.0);
    EXPECT_EQ(purged, 3);
    c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"] + c.by_state["dead"], 0);
    co_await q->close();
  }(url));
  auto sql = sql_column(path, "SELECT sql FROM sqlite_master WHERE name = 'penguiflow_jobs_settled'");
  ASSERT_EQ(sql.size(), 1u);
  EXPECT_NE(sql.front().find("state <> 'succeeded'"), std::string::npos) << sql.front();
  EXPECT_EQ(sql_column(path, "SELECT version FROM penguiflow_schema_version"),
            std::vector<std::string>{std::to_string(kSqliteSchemaVersion)});
}

// The idle fetcher sleeps until the earliest due job of ANY priority: a low-priority job
// due soon is fetched although a higher priority holds a job due much later (the earliest
// due time is read per priority from the claim index).
// purge() deletes in transactions of 5,000 rows (a long history must not hold the write
// lock for one whole scan); the total is every settled row older than the cutoff, and
// nothing younger or live is touched.
TEST(SqliteQueue, PurgeOfMoreRowsThanOneChunkRemovesThemAll) {
  auto path = (TempDir::path() / "purge.db").string();
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    constexpr int kN = 12000;
    std::vector<NewJob> jobs;
    for (int i = 0; i < kN + 1; ++i) {
      NewJob nj;
      nj.flow = "f";
      nj.tenant = "t";
      jobs.push_back(std::move(nj));
    }
    co_await q->enqueue_bulk(std::move(jobs));
    int settled = 0;
    while (settled < kN) {
      FetchRequest req;
      req.max_jobs = std::min(500, kN - settled);
      auto got = co_await q->fetch(req);
      if (got.empty()) break;
      for (auto& lj : got) {
        if (settled % 2) {
          co_await q->complete(lj.lease, nullptr, 0.0);
        } else {
          co_await q->fail(lj.lease, "broken", nullptr);
        }
        ++settled;
      }
    }
    EXPECT_EQ(settled, kN);
    EXPECT_EQ(co_await q->purge(3600), 0);  // nothing is an hour old yet
    EXPECT_EQ(co_await q->purge(-1), kN);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 0);
    EXPECT_EQ(c.by_state["dead"], 0);
    EXPECT_EQ(c.by_state["queued"], 1);  // the live job stays
    co_await q->close();
  }("sqlite://" + path), std::chrono::seconds(60));
}

TEST(SqliteQueue, Q5_EarliestDueAcrossPrioritiesWakesTheFetcher) {
  auto path = (TempDir::path() / "due.db").string();
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    NewJob late;
    late.flow = "f";
    late.tenant = "t";
    late.priority = 5;
    late.delay_s = 60;
    co_await q->enqueue(late);
    NewJob soon = late;
    soon.priority = 0;
    soon.delay_s = 0.3;
    auto id = (co_await q->enqueue(soon)).id;
    FetchRequest req;
    req.wait = std::chrono::milliseconds(10000);
    auto got = co_await q->fetch(req);
    EXPECT_EQ(got.size(), 1u);
    if (!got.empty()) {
      EXPECT_EQ(got.front().job.id, id);
    }
    co_await q->close();
  }("sqlite://" + path + "?poll_ms=60000"), std::chrono::seconds(20));
}

// Starts a fetch on `consumer` that finds the queue empty and sleeps, then enqueues a job
// through `producer` (another connection, as another process would be) and expects the
// fetch to return it well before the one-minute poll the tests set.
Task<void> expect_waiting_fetch_wakes_on_commit(JobQueue& consumer, JobQueue& producer) {
  auto ex = co_await boost::asio::this_coro::executor;
  auto fetched = std::make_shared<int>(-1);  // -1: still waiting; else jobs fetched
  auto fetch_one = [](JobQueue& q, std::shared_ptr<int> fetched) -> Task<void> {
    FetchRequest req;
    req.wait = std::chrono::milliseconds(20000);
    auto got = co_await q.fetch(req);
    *fetched = static_cast<int>(got.size());
  };
  boost::asio::co_spawn(ex, fetch_one(consumer, fetched), boost::asio::detached);
  // Give the fetcher time to find the queue empty and sleep (were it slower, the test
  // would pass without exercising the wake-up, never fail by it).
  boost::asio::steady_timer t(ex, std::chrono::milliseconds(100));
  co_await t.async_wait(boost::asio::use_awaitable);
  EXPECT_EQ(*fetched, -1);
  NewJob nj;
  nj.flow = "f";
  nj.tenant = "t";
  co_await producer.enqueue(nj);
  // Generous for a loaded machine, far below the one-minute poll and the fetch's wait.
  auto check = [fetched]() -> Task<bool> { co_return *fetched != -1; };
  EXPECT_TRUE(co_await penguiflow::testing::eventually(check, std::chrono::seconds(10)));
  EXPECT_EQ(*fetched, 1);
}

// A fetcher waiting on an empty queue wakes when ANOTHER connection commits (here a second
// queue object on the same file, as another process would be): the -wal file is watched,
// so the pick-up does not wait for the poll (set to a minute here).
TEST(SqliteQueue, Q1_FetcherWakesOnAnotherConnectionsCommit) {
  auto path = (TempDir::path() / "wake.db").string();
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto consumer = co_await open_sqlite_queue(ex, u);
    auto producer = co_await open_sqlite_queue(ex, u);
    co_await expect_waiting_fetch_wakes_on_commit(*consumer, *producer);
    co_await producer->close();
    co_await consumer->close();
  }("sqlite://" + path + "?poll_ms=60000"), std::chrono::seconds(40));
}

// The -wal watch is off while fetches keep finding work (it costs every write an inotify
// event); a fetcher that then has to wait must put it back and still wake on another
// connection's commit, not at the poll.
TEST(SqliteQueue, Q1_FetcherWakesOnAnotherConnectionsCommitAfterABusyStreak) {
  auto path = (TempDir::path() / "wake_busy.db").string();
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto consumer = co_await open_sqlite_queue(ex, u);
    auto producer = co_await open_sqlite_queue(ex, u);
    std::vector<NewJob> batch(40);
    for (auto& nj : batch) {
      nj.flow = "f";
      nj.tenant = "t";
    }
    co_await producer->enqueue_bulk(std::move(batch));
    for (int i = 0; i < 40; ++i) {  // 40 claims in a row that get a row
      FetchRequest one;
      one.max_jobs = 1;
      one.wait = std::chrono::milliseconds(0);
      auto got = co_await consumer->fetch(one);
      EXPECT_EQ(got.size(), 1u);
      for (auto& lj : got) {
        boost::json::value result;
        auto settled = co_await consumer->complete(lj.lease, std::move(result), 0.0);
        EXPECT_EQ(settled, Settle::ok);
      }
    }
    co_await expect_waiting_fetch_wakes_on_commit(*consumer, *producer);
    co_await producer->close();
    co_await consumer->close();
  }("sqlite://" + path + "?poll_ms=60000"), std::chrono::seconds(40));
}

TEST(SqliteQueue, NotADatabaseIsAClearError) {
  auto path = (TempDir::path() / "garbage.db").string();
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("this is not a database, just text that is long enough to have a header......\n", f);
    std::fclose(f);
  }
  auto msg = open_error("sqlite://" + path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a database"), std::string::npos) << msg;
}

TEST(SqliteQueue, Q9_RawRunAtOfTheWrongTypeGoesDeadInsteadOfHanging) {
  auto path = (TempDir::path() / "runat.db").string();
  std::string url = "sqlite://" + path;
  EXPECT_EQ(open_error(url), "");
  sql_exec(path, "INSERT INTO penguiflow_jobs (id, doc) VALUES ('x', ?1)",
           {R"({"flow":"f","tenant":"t","run_at":"tomorrow"})"});
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    FetchRequest req;
    req.wait = std::chrono::milliseconds(300);
    auto got = co_await q->fetch(req);
    EXPECT_TRUE(got.empty());
    auto j = co_await q->get(std::string("x"), std::nullopt);
    EXPECT_TRUE(j && j->state == JobState::dead);
    if (j) {
      EXPECT_NE(j->reason.find("run_at"), std::string::npos) << j->reason;
    }
    co_await q->close();
  }(url));
}

// Q1 across processes: two forked worker processes claim from one file; every job is
// delivered exactly once.
TEST(SqliteQueue, Q1_TwoProcessesShareOneFile) {
  auto path = (TempDir::path() / "procs.db").string();
  std::string url = "sqlite://" + path;
  constexpr int kJobs = 300;
  penguiflow::testing::run_async([](std::string u) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    auto q = co_await open_sqlite_queue(ex, u);
    std::vector<NewJob> jobs;
    for (int i = 0; i < kJobs; ++i) {
      NewJob nj;
      nj.flow = "f";
      nj.tenant = "t";
      nj.payload = i;
      jobs.push_back(nj);
    }
    co_await q->enqueue_bulk(jobs);
    co_await q->close();
  }(url));

  std::vector<pid_t> kids;
  for (int w = 0; w < 2; ++w) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        std::ofstream out(path + ".worker" + std::to_string(w));
        penguiflow::testing::run_async([](std::string u, std::ofstream& out) -> Task<void> {
          auto ex = co_await boost::asio::this_coro::executor;
          auto q = co_await open_sqlite_queue(ex, u);
          for (;;) {
            FetchRequest req;
            req.max_jobs = 7;
            req.wait = std::chrono::milliseconds(300);
            auto got = co_await q->fetch(req);
            if (got.empty()) break;
            for (auto& lj : got) {
              out << lj.job.id << "\n";
              if (co_await q->complete(lj.lease, nullptr, 0.0) != Settle::ok) out << "STALE\n";
            }
          }
          co_await q->close();
        }(url, out), std::chrono::seconds(60));
      } catch (...) {
        rc = 1;
      }
      _exit(rc);
    }
    kids.push_back(pid);
  }
  for (auto pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::multiset<std::string> seen;
  int per_worker[2] = {0, 0};
  for (int w = 0; w < 2; ++w) {
    std::ifstream in(path + ".worker" + std::to_string(w));
    for (std::string line; std::getline(in, line);) {
      EXPECT_NE(line, "STALE");
      seen.insert(line);
      ++per_worker[w];
    }
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kJobs));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), static_cast<std::size_t>(kJobs));
  EXPECT_GT(per_worker[0] + per_worker[1], 0);
}

}  // namespace penguiflow::queue::testing
