// sqlite:// backend. Layout and durability: docs/backends.md#sqlite, docs/wire-format.md.
//
// Threading: each queue owns one connection and one thread running an io_context. Every
// database call is a closure posted to that thread; its result (or exception) is posted
// back to the awaiting coroutine's executor, with a work guard keeping that executor's
// loop alive meanwhile. Waiting fetchers sleep on the caller's executor (WaitSet), woken
// by this object's own writes, by inotify on the -wal file (other connections' commits),
// and by a poll that first checks PRAGMA data_version (the only way when the file cannot
// be watched; a slow safety net when it can).
#include <penguiflow/backends/sqlite.hpp>
#include <penguiflow/queue/detail/wait_set.hpp>
#include <penguiflow/queue/ids.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <sqlite3.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <cctype>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace penguiflow::queue {
namespace asio = boost::asio;
namespace json = boost::json;

SqliteOptions parse_sqlite_url(std::string_view url) {
  auto bad = [&](const std::string& why) -> QueueError {
    return QueueError("cannot open queue " + redact_url(url) + ": " + why);
  };
  constexpr std::string_view scheme = "sqlite://";
  if (url.substr(0, scheme.size()) != scheme) throw bad("not a sqlite:// URL");
  std::string_view rest = url.substr(scheme.size());
  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (rest.empty() || rest == "/") throw bad("no database path (use sqlite:///abs/path.db or sqlite://./rel.db)");
  SqliteOptions o;
  o.path = std::string(rest);
  while (!query.empty()) {
    auto amp = query.find('&');
    auto kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = kv.find('=');
    auto key = kv.substr(0, eq);
    auto val = eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1);
    long n = 0;
    try {
      n = std::stol(std::string(val));
    } catch (...) {
      throw bad("query parameter " + std::string(key) + " needs an integer");
    }
    if (n < 0) throw bad("query parameter " + std::string(key) + " must be >= 0");
    if (key == "busy_timeout_ms") o.busy_timeout = std::chrono::milliseconds(n);
    else if (key == "poll_ms") o.poll_interval = std::chrono::milliseconds(std::max(1L, n));
    else throw bad("unknown query parameter " + std::string(key));
  }
  return o;
}

namespace {

// ---- a thin, private SQLite wrapper (used only on the database thread) ----------------

class Db;

class Stmt {
 public:
  /// `clear`: unbind the parameters when done (not needed where every use binds them all).
  Stmt(Db& db, sqlite3_stmt* s, bool clear = true) : db_(db), s_(s), clear_(clear) {}
  Stmt(const Stmt&) = delete;
  ~Stmt() {
    sqlite3_reset(s_);
    if (clear_) sqlite3_clear_bindings(s_);
  }
  Stmt& bind(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  /// Binds without a copy: `v` must outlive this Stmt (its destructor clears the bindings).
  Stmt& bind_static(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, double v) {
    sqlite3_bind_double(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind_null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  Stmt& bind_opt(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bind_null(i); }
  /// true: a row is ready; false: done. Throws QueueError on failure.
  bool step();
  void run() {
    while (step()) {
    }
  }
  bool null(int i) { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
  std::string text(int i) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i))) : std::string();
  }
  double real(int i) { return sqlite3_column_double(s_, i); }
  std::int64_t integer(int i) { return sqlite3_column_int64(s_, i); }

 private:
  Db& db_;
  sqlite3_stmt* s_;
  bool clear_;
};

class Db {
 public:
  Db(std::string where) : where_(std::move(where)) {}
  Db(const Db&) = delete;
  ~Db() { close(); }

  void open(const SqliteOptions& o) {
    int rc = sqlite3_open_v2(o.path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) fail("cannot open database file", rc);
    sqlite3_busy_timeout(db_, static_cast<int>(o.busy_timeout.count()));
    sqlite3_extended_result_codes(db_, 1);
  }
  void close() {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    cache_.clear();
    begin_ = commit_ = rollback_ = nullptr;
    for (auto* slot : slots_) *slot = nullptr;
    slots_.clear();
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
  }
  void exec(const std::string& sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
    if (rc != SQLITE_OK) {
      std::string m = msg ? msg : sqlite3_errstr(rc);
      sqlite3_free(msg);
      throw QueueError(where_ + ": " + m);
    }
  }
  Stmt prepare(const std::string& sql) { return Stmt(*this, raw(sql)); }
  /// The hot paths' statements, prepared once (no SQL text built and hashed per call).
  /// `sql()` builds the text; it runs only the first time. Every use must bind every
  /// parameter (the previous use's values are not cleared: ~800 instructions a call).
  template <class F>
  Stmt prepare(sqlite3_stmt*& slot, F&& sql) {
    if (!slot) {
      slot = raw(std::string(sql()));
      slots_.push_back(&slot);  // nulled by close(), which finalizes it
    }
    return Stmt(*this, slot, false);
  }
  // BEGIN IMMEDIATE / COMMIT / ROLLBACK as prepared statements (sqlite3_exec parses its
  // text on every call).
  void begin_immediate() { once(begin_, "BEGIN IMMEDIATE"); }
  void commit() { once(commit_, "COMMIT"); }
  void rollback() { once(rollback_, "ROLLBACK"); }
  std::int64_t changes() { return sqlite3_changes64(db_); }
  std::int64_t total_changes() { return sqlite3_total_changes64(db_); }
  [[noreturn]] void fail(const std::string& what, int rc) {
    std::string m = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    throw QueueError(where_ + ": " + what + ": " + m);
  }

 private:
  sqlite3_stmt* raw(const std::string& sql) {
    if (!db_) throw QueueError(where_ + ": database is closed");
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      sqlite3_stmt* s = nullptr;
      int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &s,
                                  nullptr);
      if (rc != SQLITE_OK) fail("cannot prepare statement", rc);
      it = cache_.emplace(sql, s).first;
    }
    return it->second;
  }
  void once(sqlite3_stmt*& slot, const char* sql) {
    if (!slot) slot = raw(sql);
    int rc = sqlite3_step(slot);
    sqlite3_reset(slot);
    if (rc != SQLITE_DONE) fail(std::string("statement failed: ") + sql, rc);
  }

  sqlite3* db_ = nullptr;
  std::string where_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  std::vector<sqlite3_stmt**> slots_;
};

bool Stmt::step() {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail("statement failed", rc);
}

/// BEGIN IMMEDIATE ... COMMIT; rolls back when left without commit().
class WriteTxn {
 public:
  explicit WriteTxn(Db& db) : db_(db) { db_.begin_immediate(); }
  ~WriteTxn() {
    if (!done_) {
      try {
        db_.rollback();
      } catch (...) {
      }
    }
  }
  void commit() {
    db_.commit();
    done_ = true;
  }

 private:
  Db& db_;
  bool done_ = false;
};

// SQL text of "now" in unix seconds, for triggers and defaults (3.40 has no 'subsec').
constexpr const char* kSqlNow = "((julianday('now') - 2440587.5) * 86400.0)";

// ---- the queue ------------------------------------------------------------------------

/// One settle waiting for the next group commit (database thread).
struct BatchItem {
  virtual ~BatchItem() = default;
  virtual void run(Db& db, double now) = 0;
  virtual void fail(std::exception_ptr e) = 0;
  virtual asio::any_io_executor executor() const = 0;  // the caller's
  virtual void deliver() = 0;  // on the caller's executor: resumes the caller with the result
};

/// A claimed row, still undecoded (decoding runs on the caller's thread).
struct ClaimedRow {
  std::int64_t seq;
  std::string id, doc, token;
  int attempts, priority;
  double run_at, created_at;
  std::string reason;  // the last retry's, as every backend hands it to the next attempt
};

struct ClaimResult {
  std::vector<ClaimedRow> rows;  // in claim order
  double now = 0, expires = 0;
  std::optional<double> next_due;
};

class SqliteQueue final : public JobQueue {
 public:
  SqliteQueue(asio::any_io_executor ex, std::string url, SqliteOptions opts, QueueConfig config)
      : ex_(std::move(ex)),
        url_(redact_url(url)),
        opts_(std::move(opts)),
        config_(std::move(config)),
        db_("sqlite queue " + url_),
        work_(asio::make_work_guard(db_ctx_)),
        thread_([this] { db_ctx_.run(); }) {
    auto& ns = config_.namespace_;
    jobs_ = ns + "_jobs";
    effects_ = ns + "_effects";
    version_ = ns + "_schema_version";
  }

  ~SqliteQueue() override { shutdown_now(); }

  /// Stops the database thread synchronously (used when open fails, or when the owner
  /// forgot close()).
  void shutdown_now() {
    if (!thread_.joinable()) return;
    asio::post(db_ctx_, [this] { db_.close(); });
    work_.reset();
    thread_.join();
  }

  Task<void> open() {
    auto fn0 = [this](Db& db) {
      db.open(opts_);
      db.exec("PRAGMA journal_mode=WAL");
      db.exec("PRAGMA synchronous=NORMAL");
      // A claim is one multi-row UPDATE, so SQLite keeps a statement journal for it (the
      // pages' contents before the statement, to undo just this statement on an error).
      // Past 64 KiB (SQLITE_STMTJRNL_SPILL) that journal spills to a temporary file in
      // /var/tmp, created, written and unlinked per statement: a claim of ~100 rows did
      // that every time (strace: 198 temp files in a 20,000-job run at c=200). In memory
      // it stays (and so do temporary b-trees of ORDER BY / GROUP BY: small here).
      db.exec("PRAGMA temp_store=MEMORY");
      create_schema(db);
      return true;
    };
    co_await on_db(std::move(fn0));
    watch_wal();
  }

  Task<EnqueueResult> enqueue(NewJob job) override {
    std::vector<NewJob> one;
    one.push_back(std::move(job));
    auto r = co_await enqueue_bulk(std::move(one));
    co_return std::move(r.front());
  }

  Task<std::vector<EnqueueResult>> enqueue_bulk(std::vector<NewJob> jobs) override {
    if (jobs.empty()) co_return std::vector<EnqueueResult>{};
    auto fn1 = [this, jobs = std::move(jobs)](Db& db) { return insert_jobs(db, jobs); };
    auto out = co_await on_db(std::move(fn1));
    waiters_.notify_all();
    co_return out;
  }

  Task<std::vector<LeasedJob>> fetch(FetchRequest req) override {
    auto deadline = std::chrono::steady_clock::now() + req.wait;
    bool force = true;
    bool recheck = false;  // woken by the -wal watch: look again shortly if nothing showed
    for (;;) {
      auto fn2 = [this, req, force](Db& db) { return claim(db, req, force); };
      auto r = co_await on_db(std::move(fn2));
      if (!r.rows.empty()) {
        if (++busy_claims_ >= kBusyClaims && waiters_.empty()) disarm_wal_watch();
        auto jobs = co_await decode_claimed(r, req.owner);
        if (!jobs.empty()) co_return jobs;
        continue;  // only bad rows were claimed (Q9): look again now
      }
      busy_claims_ = 0;
      if (req.max_jobs <= 0) co_return std::vector<LeasedJob>{};
      if (std::chrono::steady_clock::now() >= deadline) co_return std::vector<LeasedJob>{};
      // About to wait with the watch off (it is off while fetches find work): put it back,
      // then look once more (PRAGMA data_version only, no write lock) for a commit made
      // between our claim and the watch.
      if (!wal_armed() && arm_wal_watch()) {
        force = false;
        recheck = false;
        continue;
      }
      auto poll = wal_armed() ? std::max(opts_.poll_interval, kWatchedPoll) : opts_.poll_interval;
      // A -wal write seen by inotify may belong to a commit still in progress (its frames
      // are written before the wal-index publishes them), so PRAGMA data_version can still
      // read the old snapshot: after such a wake-up, look again shortly. (Claiming at once
      // instead would queue behind that writer's lock in SQLite's busy handler, which
      // sleeps in steps of 1 ms and more.)
      if (recheck) poll = std::min(poll, kRecheck);
      auto wake = std::min(deadline, std::chrono::steady_clock::now() + poll);
      if (r.next_due) wake = std::min(wake, detail::steady_after(*r.next_due - unix_now()));
      auto events = wal_events_;
      bool rechecking = recheck;
      co_await waiters_.wait_until(wake);
      recheck = wal_events_ != events;
      // The re-look found nothing either, and no write since: claim for real (a writer
      // still publishing holds the lock, and BEGIN IMMEDIATE waits for it).
      force = rechecking && !recheck;
    }
  }

  // Settles find the row by its rowid, which the lease token ends with (claim() makes it
  // `<random>.<seq>`): one B-tree seek instead of two (the `id` index, then the row). The
  // id, token and state are still checked; a token without a seq matches no row (stale).
  Task<Settle> complete(const Lease& lease, json::value result, double latency_s) override {
    auto text = json::serialize(result);
    auto fn3 = [this, text = std::move(text), latency_s](Db& db, double now, const Lease& l) {
      auto s = db.prepare(complete_stmt_, [&] { return std::string("UPDATE " + jobs_ +
                          " SET state='succeeded', result=?1, latency_s=?2, ready_at=NULL, lease_token=NULL,"
                          " updated_at=?3 WHERE seq=?4 AND id=?5 AND lease_token=?6 AND state='running'"); });
      s.bind_static(1, text).bind(2, latency_s).bind(3, now);
      return settle_where(db, s, 4, l);
    };
    co_return co_await settle(lease, std::move(fn3));
  }

  Task<Settle> retry(const Lease& lease, double delay_s, std::string reason) override {
    auto fn4 = [this, reason = std::move(reason), delay_s](Db& db, double now, const Lease& l) {
      auto s = db.prepare(retry_stmt_, [&] { return std::string("UPDATE " + jobs_ +
                          " SET state='queued', reason=?1, run_at=?2, ready_at=?2, lease_token=NULL,"
                          " lease_owner=NULL, updated_at=?3 WHERE seq=?4 AND id=?5 AND lease_token=?6"
                          " AND state='running'"); });
      s.bind_static(1, reason).bind(2, now + delay_s).bind(3, now);
      return settle_where(db, s, 4, l);
    };
    auto r = co_await settle(lease, std::move(fn4));
    if (r == Settle::ok) waiters_.notify_all();
    co_return r;
  }

  Task<Settle> fail(const Lease& lease, std::string reason, json::value details) override {
    auto text = json::serialize(details);
    auto fn5 = [this, reason = std::move(reason), text = std::move(text)](Db& db, double now, const Lease& l) {
      auto s = db.prepare(fail_stmt_, [&] { return std::string("UPDATE " + jobs_ +
                          " SET state='dead', reason=?1, details=?2, ready_at=NULL, lease_token=NULL,"
                          " updated_at=?3 WHERE seq=?4 AND id=?5 AND lease_token=?6 AND state='running'"); });
      s.bind_static(1, reason).bind_static(2, text).bind(3, now);
      return settle_where(db, s, 4, l);
    };
    co_return co_await settle(lease, std::move(fn5));
  }

  Task<Settle> heartbeat(Lease& lease, std::chrono::milliseconds extend) override {
    double expires = 0;
    auto fn6 = [this, extend, &expires](Db& db, double now, const Lease& l) {
      expires = now + extend.count() / 1000.0;
      auto s = db.prepare(heartbeat_stmt_, [&] { return std::string("UPDATE " + jobs_ +
                          " SET ready_at=?1, updated_at=?2 WHERE seq=?3 AND id=?4 AND lease_token=?5"
                          " AND state='running'"); });
      s.bind(1, expires).bind(2, now);
      return settle_where(db, s, 3, l);
    };
    auto r = co_await settle(lease, std::move(fn6));
    if (r == Settle::ok) lease.expires_at = expires;
    co_return r;
  }

  Task<Counts> counts() override {
    // Live rows and the settled ones that are not succeeded, each a scan of its covering
    // partial index; succeeded rows (in no index, see create_indexes) by a table scan.
    auto fn7 = [this](Db& db) {
      return count_rows(db, {JobState::queued, JobState::running, JobState::succeeded, JobState::dead},
                        {"ready_at IS NOT NULL", "ready_at IS NULL AND state <> 'succeeded'",
                         "ready_at IS NULL AND state = 'succeeded'"});
    };
    co_return co_await on_db(std::move(fn7));
  }

  Task<Counts> depth() override {
    // Live rows from `_claim`, the others from `_settled`, which holds no succeeded row:
    // never the succeeded history.
    auto fn = [this](Db& db) {
      return count_rows(db, {JobState::queued, JobState::running, JobState::dead},
                        {"ready_at IS NOT NULL", "ready_at IS NULL AND state <> 'succeeded'"});
    };
    co_return co_await on_db(std::move(fn));
  }

  // Counts per (tenant, state) of the rows matching each WHERE clause; `states` start at 0.
  Counts count_rows(Db& db, std::initializer_list<JobState> states, std::initializer_list<const char*> wheres) {
    Counts c;
    for (auto st : states) c.by_state[std::string(to_string(st))] = 0;
    for (const char* where : wheres) {
      auto s = db.prepare("SELECT coalesce(tenant, ''), state, count(*) FROM " + jobs_ + " WHERE " + where +
                          " GROUP BY 1, 2");
      while (s.step()) {
        auto n = s.integer(2);
        auto st = s.text(1);
        c.by_state[st] += n;
        c.by_tenant[s.text(0)][st] += n;
      }
    }
    return c;
  }

  Task<std::vector<Job>> list(ListFilter f) override {
    auto fn8 = [this, f](Db& db) {
      std::vector<Job> out;
      // Queued and running jobs are found through the two indexes (live rows in `_claim`;
      // a row an outside producer left without ready_at in `_settled`: the `<>` term is
      // that index's own, so that SQLite sees it applies), never by walking
      // the table from its oldest, long-finished rows. Other filters walk it in seq order.
      bool live = f.state && (*f.state == JobState::queued || *f.state == JobState::running);
      std::string cols = std::string(kJobColumns) + ", seq";
      std::string match = " state=?1 AND (?2 IS NULL OR tenant=?2)";
      auto s = live ? db.prepare("SELECT " + cols + " FROM " + jobs_ + " WHERE ready_at IS NOT NULL AND" + match +
                                 " UNION ALL SELECT " + cols + " FROM " + jobs_ +
                                 " WHERE ready_at IS NULL AND state <> 'succeeded' AND" +
                                 match + " ORDER BY seq LIMIT ?3")
                    : db.prepare("SELECT " + cols + " FROM " + jobs_ +
                                 " WHERE (?1 IS NULL OR state=?1) AND (?2 IS NULL OR tenant=?2) ORDER BY seq LIMIT ?3");
      if (f.state) s.bind(1, to_string(*f.state));
      s.bind_opt(2, f.tenant).bind(3, f.limit);
      while (s.step()) out.push_back(row_to_job(s));
      return out;
    };
    co_return co_await on_db(std::move(fn8));
  }

  Task<std::optional<Job>> get(std::string id, std::optional<std::string> tenant) override {
    auto fn9 = [this, id = std::move(id), tenant = std::move(tenant)](Db& db) {
      std::optional<Job> out;
      auto s = db.prepare("SELECT " + std::string(kJobColumns) + " FROM " + jobs_ +
                          " WHERE id=?1 AND (?2 IS NULL OR tenant=?2)");
      s.bind(1, id).bind_opt(2, tenant);
      if (s.step()) out = row_to_job(s);
      return out;
    };
    co_return co_await on_db(std::move(fn9));
  }

  Task<std::int64_t> requeue_dead(std::vector<std::string> ids, std::optional<std::string> tenant) override {
    auto fn10 = [this, ids = std::move(ids), tenant = std::move(tenant)](Db& db) {
      WriteTxn txn(db);
      double now = unix_now();
      std::string sql = "UPDATE " + jobs_ +
                        " SET state='queued', attempts=0, run_at=?1, ready_at=?1, lease_token=NULL, lease_owner=NULL,"
                        " updated_at=?1 WHERE state='dead' AND (?2 IS NULL OR tenant=?2)";
      std::int64_t n = 0;
      if (ids.empty()) {
        auto s = db.prepare(sql);
        s.bind(1, now).bind_opt(2, tenant).run();
        n = db.changes();
      } else {
        for (auto& id : ids) {
          auto s = db.prepare(sql + " AND id=?3");
          s.bind(1, now).bind_opt(2, tenant).bind(3, id).run();
          n += db.changes();
        }
      }
      txn.commit();
      return n;
    };
    auto n = co_await on_db(std::move(fn10));
    if (n) waiters_.notify_all();
    co_return n;
  }

  Task<bool> cancel(std::string id, std::optional<std::string> tenant) override {
    auto fn11 = [this, id = std::move(id), tenant = std::move(tenant)](Db& db) {
      WriteTxn txn(db);
      auto s = db.prepare("UPDATE " + jobs_ +
                          " SET state='dead', reason='cancelled', ready_at=NULL, lease_token=NULL, updated_at=?1"
                          " WHERE id=?2 AND (?3 IS NULL OR tenant=?3) AND state IN ('queued', 'running')");
      s.bind(1, unix_now()).bind(2, id).bind_opt(3, tenant).run();
      bool ok = db.changes() == 1;
      txn.commit();
      return ok;
    };
    co_return co_await on_db(std::move(fn11));
  }

  /// In transactions of at most kPurgeChunk rows: succeeded rows are in no index, so the
  /// delete scans the table, and one transaction over a large history would hold the write
  /// lock (every claim and settle, of every process on the file) for the whole scan.
  Task<std::int64_t> purge(double older_than_s) override {
    const double cutoff = unix_now() - older_than_s;
    std::int64_t total = 0;
    for (;;) {
      auto fn12 = [this, cutoff](Db& db) {
        WriteTxn txn(db);
        auto s = db.prepare("DELETE FROM " + jobs_ + " WHERE rowid IN (SELECT rowid FROM " + jobs_ +
                            " WHERE ready_at IS NULL AND state IN ('succeeded', 'dead') AND updated_at < ?1 LIMIT " +
                            std::to_string(kPurgeChunk) + ")");
        s.bind(1, cutoff).run();
        auto n = db.changes();
        txn.commit();
        return n;
      };
      const std::int64_t n = co_await on_db(std::move(fn12));
      total += n;
      if (n < kPurgeChunk) break;
    }
    co_return total;
  }

  Task<json::value> record_effect(std::string key, json::value value) override {
    auto text = json::serialize(value);
    auto fn13 = [this, key = std::move(key), text = std::move(text)](Db& db) {
      WriteTxn txn(db);
      db.prepare("INSERT INTO " + effects_ + " (key, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO NOTHING")
          .bind(1, key)
          .bind(2, text)
          .bind(3, unix_now())
          .run();
      json::value out;
      {
        auto s = db.prepare("SELECT value FROM " + effects_ + " WHERE key=?1");
        s.bind(1, key);
        if (s.step()) out = json::parse(s.text(0));
      }
      txn.commit();
      return out;
    };
    co_return co_await on_db(std::move(fn13));
  }

  Task<std::optional<json::value>> lookup_effect(std::string key) override {
    auto fn14 = [this, key = std::move(key)](Db& db) {
      std::optional<json::value> out;
      auto s = db.prepare("SELECT value FROM " + effects_ + " WHERE key=?1");
      s.bind(1, key);
      if (s.step()) out = json::parse(s.text(0));
      return out;
    };
    co_return co_await on_db(std::move(fn14));
  }

  Task<void> close() override {
    if (closed_) co_return;
    closed_ = true;
    wal_watch_.reset();  // the watch loop wakes with operation_aborted and ends
    auto fn15 = [](Db& db) {
      db.close();
      return true;
    };
    co_await on_db(std::move(fn15));
    work_.reset();
    thread_.join();  // the thread has nothing left to run: returns at once
  }

  std::string describe() const override { return url_; }

 private:
  /// With the -wal file watched, the poll is only a safety net.
  static constexpr std::chrono::milliseconds kWatchedPoll{1000};
  /// After a wake-up by the watch that found nothing new: the next look.
  static constexpr std::chrono::milliseconds kRecheck{2};
  /// Claims in a row that got rows before the -wal watch goes off (wal_armed()).
  static constexpr int kBusyClaims = 8;
  /// Rows purge() deletes per write transaction.
  static constexpr std::int64_t kPurgeChunk = 5000;

  // Fetchers waiting on an empty queue wake when another connection (another process,
  // another queue object) commits: every commit writes the -wal file, and inotify reports
  // it (the kernel folds repeated unread events into one, so a busy file costs one read
  // per batch of commits). Our own connection holds the -wal file open, so it is not
  // deleted and recreated under the watch. Where inotify is unavailable (not Linux, a
  // network file system, no watches left) the poll_ms poll does the job alone.
  void watch_wal() {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return;
    wal_watch_.emplace(ex_, fd);
    if (!arm_wal_watch()) {
      wal_watch_.reset();
      return;
    }
    asio::co_spawn(ex_, wal_events(), asio::detached);
  }

  // The watch is on only while fetches may wait: every write to a watched file costs the
  // writer an inotify event (and this loop a wake-up), and while fetches find work, our own
  // connection is the one writing the -wal file most of the time (~5% of the CPU of a busy
  // queue_bench run). Off after kBusyClaims claims in a row got rows, when no fetcher
  // waits; on again (then one more look, a thread round trip) before a fetcher waits. (Off
  // at the first claim with rows cost a queue that empties after every job, one at a time,
  // ~40 us of pick-up latency per job.)
  bool wal_armed() const { return wal_watch_ && wal_wd_ >= 0; }
  bool arm_wal_watch() {
    if (!wal_watch_ || wal_watch_broken_) return false;
    wal_wd_ = inotify_add_watch(wal_watch_->native_handle(), (opts_.path + "-wal").c_str(), IN_MODIFY);
    if (wal_wd_ < 0) wal_watch_broken_ = true;  // from now on the poll_ms poll alone
    return wal_wd_ >= 0;
  }
  void disarm_wal_watch() {
    if (!wal_armed()) return;
    inotify_rm_watch(wal_watch_->native_handle(), wal_wd_);
    wal_wd_ = -1;
  }

  // (Outside the coroutine: an inotify_event, with its flexible array, cannot live in a
  // coroutine frame.)
  static bool any_modify(const char* buf, std::size_t n) {
    for (std::size_t off = 0; off + sizeof(inotify_event) <= n;) {
      inotify_event ev;
      std::memcpy(&ev, buf + off, sizeof ev);
      if (ev.mask & IN_MODIFY) return true;
      off += sizeof(inotify_event) + ev.len;
    }
    return false;
  }

  Task<void> wal_events() {
    std::array<char, 4096> buf;
    for (;;) {
      boost::system::error_code ec;
      auto n = co_await wal_watch_->async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;  // closed by close() or the destructor: touch nothing of `this`
      if (!any_modify(buf.data(), n)) continue;  // only the IN_IGNORED of a removed watch
      ++wal_events_;
      waiters_.notify_all();
    }
  }

  /// The row a lease token names: the seq after its last '.', if any.
  static std::optional<std::int64_t> token_seq(std::string_view token) {
    auto dot = token.rfind('.');
    if (dot == std::string_view::npos) return std::nullopt;
    std::int64_t seq = 0;
    auto [p, ec] = std::from_chars(token.data() + dot + 1, token.data() + token.size(), seq);
    if (ec != std::errc() || p != token.data() + token.size()) return std::nullopt;
    return seq;
  }

  /// Binds (seq, id, token) of the lease at `first`..`first + 2`, runs the settle's
  /// UPDATE; true when it changed the row.
  static bool settle_where(Db& db, Stmt& s, int first, const Lease& l) {
    auto seq = token_seq(l.token);
    if (seq) s.bind(first, *seq);
    else s.bind_null(first);  // matches no row: stale
    s.bind_static(first + 1, l.job_id).bind_static(first + 2, l.token).run();
    return db.changes() == 1;
  }

  static constexpr const char* kJobColumns =
      "id, doc, tenant, flow, priority, run_at, ready_at, state, attempts, idempotency_key, lease_owner, reason,"
      " details, result, latency_s, created_at, updated_at";

  // (Callers build the closure as a named local first: g++ 12 double-destroys a lambda
  // temporary with captures created inside a co_await expression.)
  // Runs f(db_) on the database thread; resumes the caller on its own executor with the
  // result or the exception.
  template <class F>
  Task<std::invoke_result_t<F&, Db&>> on_db(F f) {
    using R = std::invoke_result_t<F&, Db&>;
    if (closed_ && !thread_.joinable()) throw QueueError(url_ + ": queue is closed");
    auto initiation = [this](auto handler, F fn) {
          auto work = asio::make_work_guard(asio::get_associated_executor(handler, ex_));
          asio::post(db_ctx_, [this, fn = std::move(fn), handler = std::move(handler), work = std::move(work)]() mutable {
            std::exception_ptr ep;
            std::optional<R> result;
            try {
              result.emplace(fn(db_));
            } catch (...) {
              ep = std::current_exception();
            }
            auto caller = work.get_executor();
            asio::post(caller, [handler = std::move(handler), ep, result = std::move(result)]() mutable {
              std::move(handler)(ep, std::move(result));
            });
            work.reset();
          });
        };
    auto r = co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, std::optional<R>)>(
        std::move(initiation), asio::use_awaitable, std::move(f));
    co_return std::move(*r);
  }

  // Settles are group-committed: every settle that reaches the database thread while
  // another batch runs is applied in the next single BEGIN IMMEDIATE ... COMMIT, so a
  // worker with many jobs in flight pays one commit per batch, not per job. Each settle
  // is still atomic (one UPDATE with the lease check) and gets its own result.
  template <class F>
  Task<Settle> settle(const Lease& lease, F f) {
    auto initiation = [this](auto handler, Lease lease, F fn) {
      using H = decltype(handler);
      using W = asio::executor_work_guard<asio::associated_executor_t<H, asio::any_io_executor>>;
      W work(asio::get_associated_executor(handler, ex_));
      struct Item final : BatchItem {
        H handler;
        W guard;
        Lease lease;
        F fn;
        std::exception_ptr ep;
        bool ok = false;
        Item(H h, W w, Lease l, F f) : handler(std::move(h)), guard(std::move(w)), lease(std::move(l)), fn(std::move(f)) {}
        void run(Db& db, double now) override { ok = fn(db, now, lease); }
        void fail(std::exception_ptr e) override { ep = e; }
        asio::any_io_executor executor() const override { return guard.get_executor(); }
        void deliver() override {
          std::move(handler)(ep, ok ? Settle::ok : Settle::stale);
          guard.reset();
        }
      };
      auto caller = work.get_executor();
      auto item = std::make_shared<Item>(std::move(handler), std::move(work), std::move(lease), std::move(fn));
      bool first = false;
      {
        std::lock_guard lock(batch_mu_);
        first = batch_.empty();
        batch_.push_back(std::move(item));
      }
      // The first settle of a batch hands the batch to the database thread one turn of the
      // caller's loop later, so the settles of jobs finishing together (a fetched batch of
      // no-op jobs settles in one burst) share one commit instead of the first going alone.
      if (first) asio::post(caller, [this] { asio::post(db_ctx_, [this] { drain_settles(); }); });
    };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, Settle)>(
        std::move(initiation), asio::use_awaitable, lease, std::move(f));
  }

  void drain_settles() {  // database thread
    std::vector<std::shared_ptr<BatchItem>> items;
    {
      std::lock_guard lock(batch_mu_);
      items.swap(batch_);
    }
    if (items.empty()) return;
    try {
      WriteTxn txn(db_);
      double now = unix_now();
      for (auto& it : items) it->run(db_, now);
      txn.commit();
    } catch (...) {
      for (auto& it : items) it->fail(std::current_exception());
    }
    // One hand-off per caller executor, not one per settle: each post to another thread's
    // loop takes its lock and may wake it.
    std::size_t i = 0;
    while (i < items.size()) {
      auto ex = items[i]->executor();
      std::vector<std::shared_ptr<BatchItem>> group;
      std::size_t k = i;
      for (; k < items.size(); ++k) {
        if (items[k] && items[k]->executor() == ex) group.push_back(std::move(items[k]));
      }
      asio::post(ex, [group = std::move(group)] {
        for (auto& it : group) it->deliver();
      });
      while (i < items.size() && !items[i]) ++i;
    }
  }

  void create_schema(Db& db) {
    WriteTxn txn(db);
    db.exec("CREATE TABLE IF NOT EXISTS " + version_ + " (version INTEGER NOT NULL)");
    std::optional<std::int64_t> have;
    {
      auto s = db.prepare("SELECT max(version) FROM " + version_);
      if (s.step() && !s.null(0)) have = s.integer(0);
    }
    if (have && *have > kSqliteSchemaVersion)
      throw QueueError("cannot open queue " + url_ + ": schema version " + std::to_string(*have) +
                       " (table " + version_ + ") is newer than this build supports (" +
                       std::to_string(kSqliteSchemaVersion) + "); upgrade penguiflow");
    if (!have) {
      const auto& j = jobs_;
      db.exec("CREATE TABLE " + j + R"( (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        doc TEXT NOT NULL,
        tenant TEXT,
        flow TEXT,
        priority INTEGER NOT NULL DEFAULT 0,
        run_at REAL,
        ready_at REAL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT,
        lease_owner TEXT,
        lease_token TEXT,
        reason TEXT,
        details TEXT,
        result TEXT,
        latency_s REAL,
        created_at REAL,
        updated_at REAL))");
      create_indexes(db);
      db.exec("CREATE UNIQUE INDEX " + j + "_idem ON " + j +
              " (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL");
      // An outside producer may insert just (id, doc): fill the columns from the document
      // (when it is valid JSON; a broken one goes dead at fetch, Q9).
      // Numbers are taken only when they are numbers: a string run_at would sort after
      // every number and leave the row never claimable (it must reach fetch and go dead
      // there instead, Q9).
      auto num = [](const char* field) {
        return std::string("CASE WHEN json_valid(NEW.doc) AND json_type(NEW.doc, '$.") + field +
               "') IN ('integer', 'real') THEN json_extract(NEW.doc, '$." + field + "') END";
      };
      auto text = [](const char* field) {
        return std::string("CASE WHEN json_valid(NEW.doc) AND json_type(NEW.doc, '$.") + field +
               "') = 'text' THEN json_extract(NEW.doc, '$." + field + "') END";
      };
      db.exec("CREATE TRIGGER " + j + "_fill AFTER INSERT ON " + j + " WHEN NEW.run_at IS NULL BEGIN UPDATE " + j +
              " SET tenant = " + text("tenant") + ", flow = " + text("flow") + ", priority = coalesce(" +
              num("priority") + ", 0), idempotency_key = " + text("idempotency_key") + ", attempts = coalesce(" +
              num("attempts") + ", 0), run_at = coalesce(" + num("run_at") + ", " + kSqlNow +
              "), ready_at = coalesce(" + num("run_at") + ", " + kSqlNow + "), created_at = " + kSqlNow +
              ", updated_at = " + kSqlNow + " WHERE seq = NEW.seq; END");
      db.exec("CREATE TABLE " + effects_ + " (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL)");
      db.exec("INSERT INTO " + version_ + " (version) VALUES (" + std::to_string(kSqliteSchemaVersion) + ")");
    } else if (*have < 2) {  // v1 -> v2: four indexes per transition down to one or two
      for (auto* name : {"_claim", "_due", "_state", "_tenant"}) db.exec("DROP INDEX IF EXISTS " + jobs_ + name);
      create_indexes(db);
      db.exec("UPDATE " + version_ + " SET version = 2");
    } else if (settled_index_holds_succeeded(db)) {  // v2 as first written: see create_indexes
      db.exec("DROP INDEX " + jobs_ + "_settled");
      create_settled_index(db);
    }
    txn.commit();
  }

  // A claim or settle rewrites the row and its entries in every index it is in, and each
  // index more is pages more written to the WAL per commit (schema v1 had four indexes,
  // each touched by every transition: ~25% more CPU per job). So: live rows (queued,
  // running: ready_at set) are in `_claim` only, settled rows (ready_at NULL) in
  // `_settled` only. A claim moves an entry within `_claim`; a settle moves it to
  // `_settled`. `_claim` carries state and tenant so that counts read both indexes alone.
  void create_indexes(Db& db) {
    const auto& j = jobs_;
    db.exec("CREATE INDEX " + j + "_claim ON " + j +
            " (priority DESC, ready_at, seq, state, tenant) WHERE ready_at IS NOT NULL");
    create_settled_index(db);
  }

  // Succeeded rows are in no index: a complete, the most common settle by far, then only
  // removes the row's `_claim` entry instead of also inserting one into `_settled`
  // (callgrind: 28.0k -> 22.0k instructions per complete, and fewer index pages per
  // commit). What needed them there: counts() of succeeded jobs and purge() scan the
  // table instead (inspection and maintenance; the worker's gauges use depth(), which
  // never counts succeeded rows). Files written before this layout (same schema version:
  // queries and results are the same with either index, so older builds keep working on
  // the new layout, only slower counts of dead jobs) get the index replaced on open.
  void create_settled_index(Db& db) {
    db.exec("CREATE INDEX " + jobs_ + "_settled ON " + jobs_ +
            " (state, tenant, updated_at) WHERE ready_at IS NULL AND state <> 'succeeded'");
  }

  bool settled_index_holds_succeeded(Db& db) {
    auto s = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1");
    s.bind(1, jobs_ + "_settled");
    return s.step() && s.text(0).find("succeeded") == std::string::npos;
  }

  std::vector<EnqueueResult> insert_jobs(Db& db, const std::vector<NewJob>& jobs) {
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    WriteTxn txn(db);
    double now = unix_now();
    for (auto& nj : jobs) {
      if (!nj.idempotency_key.empty()) {
        auto s = db.prepare("SELECT id FROM " + jobs_ + " WHERE tenant=?1 AND idempotency_key=?2");
        s.bind(1, nj.tenant).bind(2, nj.idempotency_key);
        if (s.step()) {
          out.push_back({s.text(0), false});
          continue;
        }
      }
      Job j = make_job(nj, new_job_id(), now);
      auto s = db.prepare("INSERT INTO " + jobs_ +
                          " (id, doc, tenant, flow, priority, run_at, ready_at, state, attempts, idempotency_key,"
                          " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'queued', 0, ?7, ?8, ?8)");
      s.bind(1, j.id).bind(2, encode_job_document(j)).bind(3, j.tenant).bind(4, j.flow).bind(5, j.priority);
      s.bind(6, j.run_at);
      if (j.idempotency_key.empty()) s.bind_null(7);
      else s.bind(7, j.idempotency_key);
      s.bind(8, now).run();
      out.push_back({j.id, true});
    }
    txn.commit();
    ++local_writes_;
    return out;
  }

  // Database thread only. `force` false: skip the claim (no write lock taken) when nothing
  // changed since the last empty claim and nothing came due.
  ClaimResult claim(Db& db, const FetchRequest& req, bool force) {
    ClaimResult r;
    double now = unix_now();
    std::int64_t version = 0;
    {
      auto s = db.prepare(data_version_stmt_, [&] { return std::string("PRAGMA data_version"); });
      if (s.step()) version = s.integer(0);
    }
    auto seen = std::make_pair(version, local_writes_);
    if (!force && seen == last_empty_ && (!next_due_ || now < *next_due_)) {
      r.next_due = next_due_;
      return r;
    }
    WriteTxn txn(db);
    r.now = now = unix_now();
    r.expires = now + req.lease.count() / 1000.0;
    // The next rows, read first, then leased by one UPDATE of the same rows (same total
    // order, and no other writer between the two under BEGIN IMMEDIATE). One UPDATE ...
    // RETURNING did both, but SQLite buffers RETURNING rows in an ephemeral table (a
    // B-tree insert per row, documents included): callgrind, 3,000 jobs at c=200: 86.2M
    // -> 69.0M instructions for the claims.
    auto token = new_lease_token();
    int limit = std::max(0, req.max_jobs);
    {
      auto q = db.prepare(claim_select_stmt_, [&] {
        return "SELECT seq, id, doc, attempts, priority, run_at, created_at, reason FROM " + jobs_ +
               " WHERE ready_at IS NOT NULL AND ready_at <= ?1 ORDER BY priority DESC, ready_at, seq LIMIT ?2";
      });
      q.bind(1, now).bind(2, limit);
      while (q.step()) {
        auto seq = q.integer(0);
        r.rows.push_back(ClaimedRow{seq, q.text(1), q.text(2), token + '.' + std::to_string(seq),
                                    static_cast<int>(q.integer(3)) + 1, static_cast<int>(q.integer(4)), q.real(5),
                                    q.real(6), q.text(7)});
      }
    }
    if (!r.rows.empty()) {
      auto s = db.prepare(claim_stmt_, [&] {
        return "UPDATE " + jobs_ +
               " SET state='running', attempts=attempts+1, lease_owner=?1, lease_token=?2 || '.' || seq,"
               " ready_at=?3, updated_at=?4 WHERE seq IN (SELECT seq FROM " + jobs_ +
               " WHERE ready_at IS NOT NULL AND ready_at <= ?4 ORDER BY priority DESC, ready_at, seq LIMIT ?5)";
      });
      s.bind_static(1, req.owner).bind_static(2, token).bind(3, r.expires).bind(4, now).bind(5, limit).run();
      if (db.changes() != static_cast<std::int64_t>(r.rows.size()))  // cannot happen; never lease blindly
        throw QueueError("sqlite queue " + url_ + ": claim updated " + std::to_string(db.changes()) + " rows for " +
                         std::to_string(r.rows.size()) + " selected");
    }
    if (r.rows.empty()) {
      next_due_ = earliest_ready(db);
      r.next_due = next_due_;
    }
    txn.commit();
    if (r.rows.empty()) last_empty_ = seen;
    else last_empty_ = {-1, -1};
    return r;
  }

  // Caller's thread: decodes the claimed rows into leased jobs (JSON parsing is most of a
  // claim's CPU, and the database thread is the one every claim and settle waits for).
  // Rows whose document cannot run go dead once, each under its own new lease (Q9); a
  // crash before that leaves them leased, and the next claim after the lease finds them
  // bad again.
  Task<std::vector<LeasedJob>> decode_claimed(ClaimResult& r, const std::string& owner) {
    // Q4 order (priority, run_at, FIFO); the claim took them by ready_at, which is the
    // lease expiry of a re-leased row.
    std::sort(r.rows.begin(), r.rows.end(), [](const ClaimedRow& a, const ClaimedRow& b) {
      return std::tie(b.priority, a.run_at, a.seq) < std::tie(a.priority, b.run_at, b.seq);
    });
    std::vector<LeasedJob> jobs;
    jobs.reserve(r.rows.size());
    std::vector<std::pair<Lease, DecodedJob>> bad;
    for (auto& row : r.rows) {
      auto d = decode_job_document(row.doc, config_, row.id);
      if (!d) {
        Lease lease{std::move(row.id), owner, std::move(row.token), r.expires};
        bad.emplace_back(std::move(lease), std::move(d));
        continue;
      }
      Job& j = *d.job;
      j.id = row.id;
      j.attempts = row.attempts;
      j.priority = row.priority;
      j.run_at = row.run_at;
      j.state = JobState::running;
      j.created_at = row.created_at;
      j.reason = std::move(row.reason);
      j.updated_at = r.now;
      j.lease_owner = owner;
      j.lease_expires_at = r.expires;
      Lease lease{std::move(row.id), owner, std::move(row.token), r.expires};
      jobs.push_back(LeasedJob{std::move(j), std::move(lease)});
    }
    for (auto& [lease, d] : bad) {  // Q9: dead once, through the ordinary fail() (named locals: g++ 12)
      std::string reason = d.error->reason;
      json::value details = d.error->details();
      co_await fail(lease, std::move(reason), std::move(details));
    }
    co_return jobs;
  }

  // The earliest ready_at of any row (delayed, or leased until then), read from `_claim`
  // one priority at a time: the first entry of each priority is that priority's earliest,
  // so this costs one index seek per distinct priority, not a scan of every waiting row.
  std::optional<double> earliest_ready(Db& db) {
    std::optional<double> best;
    std::optional<std::int64_t> below;  // next priority strictly below this one
    for (;;) {
      // (Two texts: "?1 IS NULL OR priority < ?1" would not seek.)
      auto s = db.prepare("SELECT priority, ready_at FROM " + jobs_ + " INDEXED BY " + jobs_ +
                          "_claim WHERE ready_at IS NOT NULL" + (below ? " AND priority < ?1" : "") +
                          " ORDER BY priority DESC, ready_at LIMIT 1");
      if (below) s.bind(1, *below);
      if (!s.step()) return best;
      below = s.integer(0);
      double at = s.real(1);
      if (!best || at < *best) best = at;
    }
  }

  Job row_to_job(Stmt& s) {
    Job j;
    QueueConfig lenient;
    lenient.max_payload_bytes = static_cast<std::size_t>(-1);
    auto doc = s.text(1);
    if (auto d = decode_job_document(doc, lenient)) j = std::move(*d.job);
    j.id = s.text(0);
    j.tenant = s.text(2);
    j.flow = s.text(3);
    j.priority = static_cast<int>(s.integer(4));
    j.run_at = s.real(5);
    j.state = parse_job_state(s.text(7)).value_or(JobState::queued);
    if (j.state == JobState::running) j.lease_expires_at = s.real(6);
    j.attempts = static_cast<int>(s.integer(8));
    j.idempotency_key = s.text(9);
    j.lease_owner = j.state == JobState::running ? s.text(10) : std::string();
    j.reason = s.text(11);
    std::error_code ec;
    if (!s.null(12)) j.details = json::parse(s.text(12), ec);
    if (!s.null(13)) j.result = json::parse(s.text(13), ec);
    if (!s.null(14)) j.latency_s = s.real(14);
    j.created_at = s.real(15);
    j.updated_at = s.real(16);
    return j;
  }

  asio::any_io_executor ex_;
  std::string url_;
  SqliteOptions opts_;
  QueueConfig config_;
  std::string jobs_, effects_, version_;
  detail::WaitSet waiters_;  // caller's executor
  std::optional<asio::posix::stream_descriptor> wal_watch_;  // caller's executor; empty: poll only
  std::uint64_t wal_events_ = 0;                             // reads of wal_watch_ so far
  int wal_wd_ = -1;                                          // the watch; -1: off
  int busy_claims_ = 0;                                      // claims in a row that got rows
  bool wal_watch_broken_ = false;                            // re-adding it failed
  bool closed_ = false;

  std::mutex batch_mu_;
  std::vector<std::shared_ptr<BatchItem>> batch_;  // settles waiting for the next commit

  // Database thread only.
  Db db_;
  sqlite3_stmt* complete_stmt_ = nullptr;
  sqlite3_stmt* retry_stmt_ = nullptr;
  sqlite3_stmt* fail_stmt_ = nullptr;
  sqlite3_stmt* heartbeat_stmt_ = nullptr;
  sqlite3_stmt* claim_stmt_ = nullptr;
  sqlite3_stmt* claim_select_stmt_ = nullptr;
  sqlite3_stmt* data_version_stmt_ = nullptr;
  std::int64_t local_writes_ = 0;
  std::pair<std::int64_t, std::int64_t> last_empty_{-1, -1};
  std::optional<double> next_due_;

  asio::io_context db_ctx_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

bool valid_namespace(const std::string& ns) {
  if (ns.empty() || ns.size() > 48) return false;
  if (!(std::isalpha(static_cast<unsigned char>(ns[0])) || ns[0] == '_')) return false;
  return std::all_of(ns.begin(), ns.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

}  // namespace

Task<std::unique_ptr<JobQueue>> open_sqlite_queue(asio::any_io_executor ex, std::string url, QueueConfig config) {
  // SQLite's memory statistics (on by default in this build) take a process-wide mutex
  // and update counters on every allocation: ~10% of the instructions of a settle on the
  // database thread (callgrind). SQLite's own list of recommended options turns them off
  // (SQLITE_DEFAULT_MEMSTATUS=0). Process-wide, and only possible before SQLite is
  // initialised: an application that wants sqlite3_memory_used() or a soft heap limit
  // calls sqlite3_initialize() before opening its first queue (this call then does
  // nothing). docs/backends.md#sqlite.
  static std::once_flag memstatus_off;
  std::call_once(memstatus_off, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  auto opts = parse_sqlite_url(url);
  if (!valid_namespace(config.namespace_))
    throw QueueError("cannot open queue " + redact_url(url) + ": namespace '" + config.namespace_ +
                     "' must be letters, digits and '_' (it prefixes table names)");
  auto q = std::make_unique<SqliteQueue>(ex, url, std::move(opts), std::move(config));
  std::exception_ptr ep;
  try {
    co_await q->open();
  } catch (const QueueError&) {
    ep = std::current_exception();
  } catch (const std::exception& e) {
    ep = std::make_exception_ptr(QueueError("cannot open queue " + redact_url(url) + ": " + e.what()));
  }
  if (ep) {
    q->shutdown_now();
    std::rethrow_exception(ep);
  }
  co_return q;
}

}  // namespace penguiflow::queue

namespace penguiflow::queue {
Task<std::unique_ptr<JobQueue>> open_sqlite_queue(boost::asio::any_io_executor ex, std::string url) {
  return open_sqlite_queue(std::move(ex), std::move(url), QueueConfig{});
}
}  // namespace penguiflow::queue
