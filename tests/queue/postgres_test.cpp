// PostgreSQL backend: the shared conformance suite plus what only this backend has
// (migrations, LISTEN/NOTIFY wake-ups, enqueue inside the caller's transaction, psql
// interop, reconnects). Needs PENGUIFLOW_TEST_PG_URL; skips without it.
//
// Test helpers talk to the server with blocking libpq or the psql program: they play the
// outside client, not the library.
#include "queue/conformance.hpp"
#include "support/async_test.hpp"

#include <penguiflow/backends/postgres.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <unistd.h>

namespace penguiflow::queue::testing {
namespace {
namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string pg_url() {
  const char* u = std::getenv("PENGUIFLOW_TEST_PG_URL");
  return u ? u : "";
}

using Rows = std::vector<std::vector<std::string>>;

// Blocking libpq, as any outside client would use it.
Rows sql(const std::string& text, const std::vector<std::optional<std::string>>& params = {}) {
  PGconn* c = PQconnectdb(pg_url().c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string m = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("test connection failed: " + m);
  }
  std::vector<const char*> vals;
  for (auto& p : params) vals.push_back(p ? p->c_str() : nullptr);
  PGresult* r = PQexecParams(c, text.c_str(), static_cast<int>(vals.size()), nullptr, vals.data(), nullptr, nullptr, 0);
  auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string m = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    throw std::runtime_error("test statement failed: " + m + " in: " + text);
  }
  Rows rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    rows.emplace_back();
    for (int k = 0; k < PQnfields(r); ++k) rows.back().push_back(PQgetvalue(r, i, k));
  }
  PQclear(r);
  PQfinish(c);
  return rows;
}

// Runs the psql program (a separate process, no project code) with `script`; returns its
// unaligned, tuples-only output. Throws on a non-zero exit.
std::string psql(const std::string& script) {
  char path[] = "/tmp/pf_psql_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  {
    std::ofstream f(path);
    f << script;
  }
  std::string cmd = "psql -X -q -A -t -v ON_ERROR_STOP=1 -d '" + pg_url() + "' -f " + path + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = pclose(p);
  std::remove(path);
  if (rc != 0) throw std::runtime_error("psql failed (" + std::to_string(rc) + "): " + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

QueueFactory make_postgres_factory() {
  QueueFactory f;
  f.name = "postgres";
  f.available = !pg_url().empty();
  f.skip_reason = "PENGUIFLOW_TEST_PG_URL is not set (scripts/test-servers.sh starts a server)";
  f.open = [](asio::any_io_executor ex, QueueConfig cfg) { return open_postgres_queue(ex, pg_url(), std::move(cfg)); };
  // An outside producer that only has a JSON serializer inserts the whole document into
  // `raw` (docs/wire-format.md).
  f.write_raw = [](asio::any_io_executor, const QueueConfig& cfg, std::string id, std::string raw) -> Task<void> {
    sql("INSERT INTO \"" + cfg.namespace_ + "\".jobs (id, raw) VALUES ($1, $2)", {id, raw});
    co_return;
  };
  return f;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Postgres, QueueConformance, ::testing::Values(make_postgres_factory()),
                         [](auto& i) { return i.param.name; });

namespace {

#define SKIP_WITHOUT_PG() \
  if (pg_url().empty()) GTEST_SKIP() << "PENGUIFLOW_TEST_PG_URL is not set"

QueueConfig fresh_config() {
  QueueConfig c;
  c.namespace_ = unique_namespace();
  return c;
}

NewJob job_for(std::string tenant = "acme") {
  NewJob j;
  j.flow = "quickstart";
  j.tenant = std::move(tenant);
  j.payload = json::object{{"n", 1}};
  return j;
}

FetchRequest req(std::chrono::milliseconds wait, int max_jobs = 1) {
  FetchRequest r;
  r.wait = wait;
  r.max_jobs = max_jobs;
  r.owner = "pg-test";
  return r;
}

Task<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// Opens, runs body, closes (also when body throws).
template <class Body>
void with_queue(QueueConfig cfg, Body body, std::chrono::milliseconds bound = 40s) {
  penguiflow::testing::run_async(
      [](QueueConfig cfg, Body body) -> Task<void> {
        auto ex = co_await asio::this_coro::executor;
        auto q = co_await open_postgres_queue(ex, pg_url(), cfg);
        std::exception_ptr ep;
        try {
          co_await body(*q);
        } catch (...) {
          ep = std::current_exception();
        }
        co_await q->close();
        if (ep) std::rethrow_exception(ep);
      }(std::move(cfg), std::move(body)),
      bound);
}

std::string open_error(std::string url, QueueConfig cfg = fresh_config()) {
  try {
    penguiflow::testing::run_async(
        [](std::string url, QueueConfig cfg) -> Task<void> {
          auto q = co_await open_postgres_queue(co_await asio::this_coro::executor, url, cfg);
          co_await q->close();
        }(std::move(url), std::move(cfg)),
        30s);
  } catch (const QueueError& e) {
    return e.what();
  }
  return "";
}

TEST(PostgresQueue, MigrationsAreIdempotentAndSafeConcurrently) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  // Two workers starting at once on a fresh schema, then a third later.
  penguiflow::testing::run_async(
      [](QueueConfig cfg) -> Task<void> {
        auto ex = co_await asio::this_coro::executor;
        std::unique_ptr<JobQueue> a, b;
        int done = 0;
        std::exception_ptr ep;
        auto open_into = [&](std::unique_ptr<JobQueue>& dst) -> Task<void> {
          try {
            dst = co_await open_postgres_queue(ex, pg_url(), cfg);
          } catch (...) {
            ep = std::current_exception();
          }
          ++done;
        };
        asio::co_spawn(ex, open_into(a), asio::detached);
        asio::co_spawn(ex, open_into(b), asio::detached);
        co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return done == 2; }, 20s);
        if (a) co_await a->close();
        if (b) co_await b->close();
        if (ep) std::rethrow_exception(ep);
        auto c = co_await open_postgres_queue(ex, pg_url(), cfg);
        co_await c->close();
      }(cfg));
  auto rows = sql("SELECT version FROM \"" + cfg.namespace_ + "\".schema_version ORDER BY version");
  ASSERT_EQ(rows.size(), static_cast<std::size_t>(kPostgresSchemaVersion));  // one row per migration, once
  EXPECT_EQ(rows.back()[0], std::to_string(kPostgresSchemaVersion));
}

// Turns a current schema back into what version 2 created: the idempotency key's unique
// constraint over every row, and enqueue() inferring it by ON CONFLICT (idempotency_key).
void downgrade_to_v2(const std::string& qs) {
  auto def = sql("SELECT pg_get_functiondef('" + qs + ".enqueue'::regproc)").at(0).at(0);
  const std::string v3 = "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";
  auto at = def.find(v3);
  if (at == std::string::npos) throw std::runtime_error("enqueue() is not the v3 one: " + def);
  def.replace(at, v3.size(), "ON CONFLICT (idempotency_key) DO NOTHING");
  sql("ALTER TABLE " + qs + ".jobs ADD CONSTRAINT jobs_idempotency_key_key UNIQUE (idempotency_key)");
  sql("DROP INDEX " + qs + ".jobs_idempotency_key");
  sql(def);
  sql("DELETE FROM " + qs + ".schema_version WHERE version > 2");
}

// A schema at version 1 (no jobs_dead index) is migrated on open and keeps its jobs.
TEST(PostgresQueue, Version1SchemaIsMigratedOnOpen) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [](JobQueue& q) -> Task<void> {
    NewJob nj;
    nj.flow = "f";
    nj.tenant = "t";
    co_await q.enqueue(nj);
  });
  const std::string qs = "\"" + cfg.namespace_ + "\"";
  downgrade_to_v2(qs);
  sql("DROP INDEX " + qs + ".jobs_dead");
  sql("DELETE FROM " + qs + ".schema_version WHERE version = 2");
  with_queue(cfg, [](JobQueue& q) -> Task<void> {
    auto d = co_await q.depth();
    EXPECT_EQ(d.by_state["queued"], 1);
  });
  auto versions = sql("SELECT version FROM " + qs + ".schema_version ORDER BY version");
  ASSERT_EQ(versions.size(), 3u);
  EXPECT_EQ(versions[1][0], "2");
  EXPECT_EQ(versions[2][0], "3");
  auto idx = sql("SELECT indexname FROM pg_indexes WHERE schemaname = '" + cfg.namespace_ + "' AND indexname = 'jobs_dead'");
  EXPECT_EQ(idx.size(), 1u);
}

// A version 2 schema (a unique constraint over every row's idempotency key) is migrated on
// open to the partial unique index; keys already present still deduplicate, through the
// library and through the SQL function outside producers call.
TEST(PostgresQueue, Version2SchemaIsMigratedOnOpen) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  std::string first_id;
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    NewJob nj = job_for();
    nj.idempotency_key = "order-1";
    first_id = (co_await q.enqueue(nj)).id;
    co_await q.enqueue(job_for());  // no key
  });
  const std::string qs = "\"" + cfg.namespace_ + "\"";
  downgrade_to_v2(qs);
  auto old_fn = sql("SELECT " + qs + ".enqueue('quickstart', 'acme', '{}', idempotency_key => 'order-1')");
  EXPECT_EQ(old_fn.at(0).at(0), first_id);  // the v2 schema works as v2
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    NewJob again = job_for();
    again.idempotency_key = "order-1";
    auto r = co_await q.enqueue(again);
    EXPECT_FALSE(r.created);
    EXPECT_EQ(r.id, first_id);
    auto d = co_await q.depth();
    EXPECT_EQ(d.by_state["queued"], 2);
  });
  auto versions = sql("SELECT version FROM " + qs + ".schema_version ORDER BY version");
  ASSERT_EQ(versions.size(), 3u);
  EXPECT_EQ(versions.back()[0], "3");
  auto idx = sql("SELECT indexdef FROM pg_indexes WHERE schemaname = '" + cfg.namespace_ +
                 "' AND indexdef LIKE '%(idempotency_key)%'");
  ASSERT_EQ(idx.size(), 1u);  // the full constraint's index is gone
  EXPECT_NE(idx[0][0].find("WHERE (idempotency_key IS NOT NULL)"), std::string::npos) << idx[0][0];
  auto fn = sql("SELECT " + qs + ".enqueue('quickstart', 'acme', '{}', idempotency_key => 'order-1')");
  EXPECT_EQ(fn.at(0).at(0), first_id);
  auto fresh = sql("SELECT " + qs + ".enqueue('quickstart', 'acme', '{}', idempotency_key => 'order-2')");
  EXPECT_NE(fresh.at(0).at(0), first_id);
  // What docs/wire-format.md tells an outside producer to write.
  auto outside = psql("INSERT INTO " + qs + ".jobs (flow, tenant, payload, idempotency_key) "
                      "VALUES ('quickstart', 'acme', '{}', 'order-1') "
                      "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id;\n");
  EXPECT_EQ(outside, "");
}

TEST(PostgresQueue, NewerSchemaVersionIsRefused) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [](JobQueue&) -> Task<void> { co_return; });
  sql("INSERT INTO \"" + cfg.namespace_ + "\".schema_version (version) VALUES (99)");
  auto msg = open_error(pg_url(), cfg);
  EXPECT_NE(msg.find("version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("127.0.0.1"), std::string::npos) << msg;
}

TEST(PostgresQueue, ConnectionErrorsNameTheRedactedUrlAndCause) {
  // Needs no server: port 1 on loopback refuses.
  auto msg = open_error("postgresql://bob:s3cr3t-pw@127.0.0.1:1/nowhere");
  EXPECT_EQ(msg.find("s3cr3t-pw"), std::string::npos) << msg;
  EXPECT_NE(msg.find("postgresql://bob:***@127.0.0.1:1/nowhere"), std::string::npos) << msg;
  EXPECT_NE(msg.find("refused"), std::string::npos) << msg;

  msg = open_error("postgresql://bob:s3cr3t-pw@127.0.0.1:notaport/db");
  EXPECT_NE(msg.find("postgresql://bob:***@127.0.0.1:notaport/db"), std::string::npos) << msg;
  EXPECT_NE(msg.find("notaport"), std::string::npos) << msg;  // libpq: invalid port value
  EXPECT_EQ(msg.find("s3cr3t-pw"), std::string::npos) << msg;

  // Passwords libpq takes as they are but a strict URL parser refuses (an unencoded '?' or
  // '#'), and libpq's sslpassword: none may reach a message.
  for (std::string url : {"postgresql://bob:pw?s3cr3t@127.0.0.1:1/db", "postgresql://bob:pw#s3cr3t@127.0.0.1:1/db",
                          "postgresql://bob@127.0.0.1:1/db?sslpassword=s3cr3t-k"}) {
    msg = open_error(url);
    EXPECT_EQ(msg.find("s3cr3t"), std::string::npos) << msg;
    EXPECT_NE(msg.find(redact_url(url)), std::string::npos) << msg;
    EXPECT_NE(msg.find("refused"), std::string::npos) << msg;
  }

  msg = open_error("mysql://bob:s3cr3t-pw@127.0.0.1/db");
  EXPECT_NE(msg.find("not a postgresql"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("s3cr3t-pw"), std::string::npos) << msg;

  QueueConfig bad;
  bad.namespace_ = "no spaces; drop table";
  msg = open_error("postgresql://127.0.0.1:1/db", bad);
  EXPECT_NE(msg.find("namespace"), std::string::npos) << msg;
}

TEST(PostgresQueue, NotifyWakesAnIdleFetchLongBeforeItsWaitBound) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [cfg](JobQueue& q) -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto producer = co_await open_postgres_queue(ex, pg_url(), cfg);
    bool fetched = false;
    std::vector<LeasedJob> got;
    auto start = Clock::now();
    asio::co_spawn(ex, [&]() -> Task<void> {
      got = co_await q.fetch(req(10s));
      fetched = true;
    }, asio::detached);
    co_await sleep_for(200ms);  // let the fetch go idle; not an ordering proof
    EXPECT_FALSE(fetched);
    co_await producer->enqueue(job_for());
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetched; }, 9s));
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(got.size(), 1u);
    co_await producer->close();
  });
}

TEST(PostgresQueue, EnqueueJoinsTheCallersTransaction) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  const std::string s = "\"" + cfg.namespace_ + "\"";
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    // Rolled back: the job never existed.
    psql("BEGIN;\nSELECT " + s + ".enqueue('quickstart', 'acme', '{\"order\": 1}');\nROLLBACK;\n");
    EXPECT_TRUE((co_await q.fetch(req(300ms))).empty());
    // Committed together with the caller's own write.
    psql("BEGIN;\nCREATE TABLE " + s + ".orders (n int);\nINSERT INTO " + s + ".orders VALUES (2);\n" + "SELECT " + s +
         ".enqueue('quickstart', 'acme', '{\"order\": 2}', priority => 5, idempotency_key => 'order-2');\nCOMMIT;\n");
    auto got = co_await q.fetch(req(5s));
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) co_return;
    EXPECT_EQ(got[0].job.payload, json::value(json::object{{"order", 2}}));
    EXPECT_EQ(got[0].job.priority, 5);
    EXPECT_EQ(co_await q.complete(got[0].lease, nullptr, 0.1), Settle::ok);
    // The C++ helper: the same statement with parameters, on the caller's connection.
    NewJob nj = job_for("globex");
    nj.idempotency_key = "order-2";  // already present: returns the existing id
    auto st = postgres_enqueue_statement(cfg.namespace_, nj);
    auto rows = sql(st.sql, st.params);
    EXPECT_EQ(rows.at(0).at(0), got[0].job.id);
  });
}

TEST(PostgresQueue, JobInsertedWithPsqlIsFetchedAndCompleted) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  const std::string s = "\"" + cfg.namespace_ + "\"";
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    auto id = psql("INSERT INTO " + s + ".jobs (flow, tenant, payload, max_attempts) "
                   "VALUES ('quickstart', 'acme', '{\"text\": \"from psql\"}', 3) RETURNING id;\n");
    auto got = co_await q.fetch(req(5s));
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) co_return;
    EXPECT_EQ(got[0].job.id, id);
    EXPECT_EQ(got[0].job.payload, json::value(json::object{{"text", "from psql"}}));
    EXPECT_EQ(got[0].job.max_attempts, 3);
    json::value result = json::object{{"ok", true}};
    EXPECT_EQ(co_await q.complete(got[0].lease, result, 0.25), Settle::ok);
    EXPECT_EQ(psql("SELECT state || ' ' || result FROM " + s + ".jobs WHERE id = '" + id + "';\n"),
              "succeeded {\"ok\":true}");
    // A row with a payload that is not JSON goes dead once with a reason.
    auto bad = psql("INSERT INTO " + s + ".jobs (flow, tenant, payload) VALUES ('quickstart', 'acme', '{oops') "
                    "RETURNING id;\n");
    EXPECT_TRUE((co_await q.fetch(req(500ms))).empty());
    EXPECT_EQ(psql("SELECT state FROM " + s + ".jobs WHERE id = '" + bad + "';\n"), "dead");
    auto j = co_await q.get(bad, std::nullopt);
    EXPECT_TRUE(j && j->reason.find("JSON") != std::string::npos) << (j ? j->reason : "");
  });
}

// Q9 through the documented plain-column INSERT (the conformance suite writes whole raw
// documents): a row with no tenant, one whose payload is over the limit and one naming a
// flow the worker does not know each go dead once with the codec's reason, and a good row
// inserted among them is fetched.
TEST(PostgresQueue, BadRowsInsertedWithPsqlGoDeadOnceWhileAGoodOneIsFetched) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  cfg.max_payload_bytes = 64;
  cfg.flow_known = [](std::string_view f) { return f == "quickstart"; };
  const std::string s = "\"" + cfg.namespace_ + "\"";
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    auto insert = [&](const std::string& flow, const std::string& tenant, const std::string& payload) {
      return psql("INSERT INTO " + s + ".jobs (flow, tenant, payload) VALUES (" + flow + ", " + tenant + ", '" +
                  payload + "') RETURNING id;\n");
    };
    const std::string big = "{\"text\": \"" + std::string(100, 'x') + "\"}";
    auto no_tenant = insert("'quickstart'", "NULL", "{}");
    auto too_big = insert("'quickstart'", "'acme'", big);
    auto unknown = insert("'no-such-flow'", "'acme'", "{}");
    auto good = insert("'quickstart'", "'acme'", "{\"n\": 1}");
    auto got = co_await q.fetch(req(5s, 10));
    EXPECT_EQ(got.size(), 1u);
    if (got.size() != 1) co_return;
    EXPECT_EQ(got[0].job.id, good);
    EXPECT_EQ(co_await q.complete(got[0].lease, nullptr, 0.1), Settle::ok);
    for (auto [id, reason] : {std::pair{no_tenant, std::string("malformed job: missing tenant")},
                              std::pair{too_big, std::string("payload too large: ")},
                              std::pair{unknown, std::string("unknown flow: no-such-flow")}}) {
      auto j = co_await q.get(id, std::nullopt);
      EXPECT_TRUE(j && j->state == JobState::dead) << id;
      EXPECT_TRUE(j && j->reason.rfind(reason, 0) == 0) << (j ? j->reason : "missing");
      EXPECT_EQ(psql("SELECT attempts FROM " + s + ".jobs WHERE id = '" + id + "';\n"), "1") << id;
    }
    EXPECT_TRUE((co_await q.fetch(req(300ms, 10))).empty());  // dead once: nothing comes back
  });
}

// Completes address rows by the tuple id their claim returned; a row that moved since
// (any update writes a new version) is still completed, by id, and a row whose lease was
// taken over is not.
TEST(PostgresQueue, CompleteFindsARowThatMovedSinceItsClaim) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  const std::string s = "\"" + cfg.namespace_ + "\"";
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    std::vector<NewJob> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back(job_for());
    co_await q.enqueue_bulk(jobs);
    auto got = co_await q.fetch(req(5s, 4));
    EXPECT_EQ(got.size(), 4u);
    if (got.size() != 4u) co_return;
    // Job 0 and 1 move (a new row version); job 2's lease is taken over by someone else.
    sql("UPDATE " + s + ".jobs SET updated_at = updated_at WHERE id = $1 OR id = $2", {got[0].job.id, got[1].job.id});
    sql("UPDATE " + s + ".jobs SET lease_token = 'someone-else' WHERE id = $1", {got[2].job.id});
    std::vector<Settle> settles(4);
    int done = 0;
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < 4; ++i) {
      // One event-loop turn: the four completes go as one batch.
      auto one = [](JobQueue& q, Lease lease, Settle& out, int& done) -> Task<void> {
        // Quotes, backslashes, braces and commas: the batch travels as array literals.
        json::value result = json::object{{"ok", true}, {"s", "a\"b\\c,{x} NULL"}};
        out = co_await q.complete(lease, std::move(result), 0.01);
        ++done;
      };
      asio::co_spawn(ex, one(q, got[static_cast<std::size_t>(i)].lease, settles[static_cast<std::size_t>(i)], done),
                     asio::detached);
    }
    co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return done == 4; }, 10s);
    EXPECT_EQ(settles[0], Settle::ok);
    EXPECT_EQ(settles[1], Settle::ok);
    EXPECT_EQ(settles[2], Settle::stale);
    EXPECT_EQ(settles[3], Settle::ok);
    auto states = sql("SELECT id, state, coalesce(result, '') FROM " + s + ".jobs ORDER BY seq");
    EXPECT_EQ(states.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
      auto it = std::find_if(states.begin(), states.end(), [&](auto& r) { return r[0] == got[i].job.id; });
      EXPECT_NE(it, states.end()) << i;
      if (it == states.end()) continue;
      EXPECT_EQ((*it)[1], i == 2 ? "running" : "succeeded") << i;
      if (i != 2) {
        EXPECT_EQ(json::parse((*it)[2]), json::parse(R"({"ok":true,"s":"a\"b\\c,{x} NULL"})")) << i;
      }
    }
    // A second complete of a settled job is stale.
    EXPECT_EQ(co_await q.complete(got[3].lease, nullptr, 0.01), Settle::stale);
  });
}

std::string terminate_backends(const QueueConfig& cfg) {
  auto rows = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                  {"penguiflow " + cfg.namespace_});
  return rows.at(0).at(0);
}

// Settles run on their own connection, opened by the first settle; it reconnects like the
// statement connection, and completions sent in one event-loop turn are all settled.
TEST(PostgresQueue, SettleConnectionOpensOnFirstSettleAndReconnects) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    std::vector<NewJob> jobs;
    for (int i = 0; i < 12; ++i) jobs.push_back(job_for());
    co_await q.enqueue_bulk(std::move(jobs));
    auto got = co_await q.fetch(req(5s, 12));
    EXPECT_EQ(got.size(), 12u);
    if (got.size() != 12u) co_return;
    auto backends = [&]() {
      return sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {"penguiflow " + cfg.namespace_})
          .at(0)
          .at(0);
    };
    auto only_listen_left = [&]() -> Task<bool> { co_return backends() == "1"; };
    EXPECT_EQ(terminate_backends(cfg), "2");  // statement + LISTEN: no settle yet
    // Wait until both are gone and the LISTEN connection is back (it reconnects by itself).
    EXPECT_TRUE(co_await penguiflow::testing::eventually(only_listen_left, 10s, 20ms));
    // Ten completions started in one turn (one batch) on the fresh settle connection.
    auto ex = co_await asio::this_coro::executor;
    int settled = 0, ok = 0;
    for (int i = 0; i < 10; ++i) {
      Lease lease = got[static_cast<std::size_t>(i)].lease;
      auto one = [](JobQueue& q, Lease lease, int& settled, int& ok) -> Task<void> {
        json::value none;
        auto s = co_await q.complete(lease, std::move(none), 0.01);
        if (s == Settle::ok) ++ok;
        ++settled;
      };
      asio::co_spawn(ex, one(q, std::move(lease), settled, ok), asio::detached);
    }
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return settled == 10; }, 9s));
    EXPECT_EQ(ok, 10);
    // LISTEN + the settle connection. Eventually: a terminated backend may still be listed
    // for a moment, and the LISTEN connection comes back on its own schedule.
    auto listen_and_settle = [&]() -> Task<bool> { co_return backends() == "2"; };
    EXPECT_TRUE(co_await penguiflow::testing::eventually(listen_and_settle, 10s, 20ms)) << backends();
    EXPECT_EQ(terminate_backends(cfg), "2");  // (the statement connection died above)
    EXPECT_TRUE(co_await penguiflow::testing::eventually(only_listen_left, 10s, 20ms));
    int errors = 0;
    std::optional<Settle> s;
    for (int i = 0; i < 5 && !s; ++i) {
      try {
        s = co_await q.heartbeat(got[10].lease, 30000ms);
      } catch (const QueueError&) {
        ++errors;
      }
    }
    EXPECT_TRUE(s && *s == Settle::ok);
    EXPECT_LE(errors, 1);
    json::value none;
    EXPECT_EQ(co_await q.complete(got[10].lease, std::move(none), 0.01), Settle::ok);
    json::value details = json::object();
    EXPECT_EQ(co_await q.fail(got[11].lease, "bad", std::move(details)), Settle::ok);
    auto c = co_await q.counts();
    EXPECT_EQ(c.by_state["succeeded"], 11);
    EXPECT_EQ(c.by_state["dead"], 1);
  });
}

TEST(PostgresQueue, ReconnectsAfterTheBackendIsTerminated) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    co_await q.enqueue(job_for());
    EXPECT_EQ(terminate_backends(cfg), "2");  // statement + LISTEN connections
    // The first call may still find the dead connection; within a few calls it reconnects.
    int errors = 0;
    std::optional<Counts> c;
    for (int i = 0; i < 20 && !c; ++i) {
      try {
        c = co_await q.counts();
      } catch (const QueueError&) {
        ++errors;
      }
    }
    EXPECT_TRUE(c.has_value());
    EXPECT_LE(errors, 1);
    if (c) {
      EXPECT_EQ(c->by_state["queued"], 1);
    }
    auto got = co_await q.fetch(req(5s));
    EXPECT_EQ(got.size(), 1u);
    // The LISTEN connection came back too: a notification wakes a long fetch again.
    auto ex = co_await asio::this_coro::executor;
    auto producer = co_await open_postgres_queue(ex, pg_url(), cfg);
    EXPECT_TRUE(co_await penguiflow::testing::eventually(
        [&]() -> Task<bool> { co_return sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                                            "AND query LIKE 'LISTEN%'", {"penguiflow " + cfg.namespace_})[0][0] == "2"; },
        10s, 50ms));
    bool fetched = false;
    auto start = Clock::now();
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto more = co_await q.fetch(req(10s));
      fetched = !more.empty();
    }, asio::detached);
    co_await sleep_for(100ms);
    co_await producer->enqueue(job_for());
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetched; }, 9s));
    EXPECT_LT(Clock::now() - start, 5s);
    co_await producer->close();
  });
}

TEST(PostgresQueue, QueryInFlightWhenTheConnectionDropsThrowsThenReconnects) {
  SKIP_WITHOUT_PG();
  auto cfg = fresh_config();
  with_queue(cfg, [&](JobQueue& q) -> Task<void> {
    // Hold a lock that blocks our next statement, then kill our backend under it.
    PGconn* locker = PQconnectdb(pg_url().c_str());
    PQclear(PQexec(locker, "BEGIN"));
    PQclear(PQexec(locker, ("LOCK TABLE \"" + cfg.namespace_ + "\".jobs IN ACCESS EXCLUSIVE MODE").c_str()));
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, [&]() -> Task<void> {
      co_await sleep_for(300ms);
      sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = "
          "'Lock'", {"penguiflow " + cfg.namespace_});
    }, asio::detached);
    std::string error;
    try {
      co_await q.counts();
    } catch (const QueueError& e) {
      error = e.what();
    }
    PQclear(PQexec(locker, "ROLLBACK"));
    PQfinish(locker);
    EXPECT_NE(error.find("terminat"), std::string::npos) << error;
    EXPECT_NE(error.find("127.0.0.1"), std::string::npos) << error;
    auto c = co_await q.counts();  // reconnects
    EXPECT_EQ(c.by_state["queued"], 0);
  });
}

}  // namespace
}  // namespace penguiflow::queue::testing
