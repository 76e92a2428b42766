// sqlite:// backend: the conformance suite (a temp file per test) plus what only SQLite
// does: URL parsing, schema versioning, refusing what it cannot open.
#include "queue/conformance.hpp"
#include "support/async_test.hpp"

#include <penguiflow/backends/sqlite.hpp>

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>

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
  EXPECT_THROW(parse_sqlite_url("sqlite://"), QueueError);
  EXPECT_THROW(parse_sqlite_url("postgresql://x"), QueueError);
  EXPECT_THROW(parse_sqlite_url("sqlite:///x.db?nope=1"), QueueError);
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
  EXPECT_EQ(open_error("sqlite://" + path), "");  // creates version 1
  sql_exec(path, "UPDATE penguiflow_schema_version SET version = 99");
  auto msg = open_error("sqlite://" + path);
  EXPECT_NE(msg.find("schema version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
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

}  // namespace penguiflow::queue::testing
