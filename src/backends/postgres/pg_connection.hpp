// A libpq connection driven by the Asio event loop (private to the postgres backend).
//
// Every libpq call made here is non-blocking: connecting uses PQconnectStartParams +
// PQconnectPoll, queries use PQsendQueryParams / PQsendQueryPrepared with the connection
// in non-blocking mode, and the coroutine suspends on PQsocket through a
// posix::stream_descriptor (released before PQfinish, which closes the socket itself).
// Not thread-safe; one query at a time (the caller serializes).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

struct pg_conn;
struct pg_result;

namespace penguiflow::queue::pg {

/// A failure reported by libpq or the server. `connection_lost` is true when the
/// connection is unusable afterwards (it has been closed); `sqlstate` is set for server
/// errors.
class PgError : public QueueError {
 public:
  PgError(const std::string& what, std::string sqlstate, bool connection_lost)
      : QueueError(what), sqlstate_(std::move(sqlstate)), connection_lost_(connection_lost) {}
  const std::string& sqlstate() const { return sqlstate_; }
  bool connection_lost() const { return connection_lost_; }

 private:
  std::string sqlstate_;
  bool connection_lost_;
};

/// An owned PGresult with text accessors.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* r) : r_(r) {}
  PgResult(PgResult&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  PgResult& operator=(PgResult&& o) noexcept;
  ~PgResult();

  int rows() const;
  bool is_null(int row, int col) const;
  std::string_view text(int row, int col) const;  // "" when NULL
  std::optional<std::string> opt(int row, int col) const;
  double number(int row, int col, double fallback = 0) const;
  std::int64_t integer(int row, int col, std::int64_t fallback = 0) const;
  bool boolean(int row, int col) const;
  /// Rows changed by an INSERT / UPDATE / DELETE.
  std::int64_t affected() const;

 private:
  pg_result* r_ = nullptr;
};

/// A named statement, prepared once per connection on first use.
struct Statement {
  std::string name;
  std::string sql;
  /// Run with the queue's pinned planner settings (postgres_queue.cpp, kPinPlans).
  bool pinned = false;
  /// Commit without waiting for the WAL flush (postgres_queue.cpp, kLazyCommit).
  bool lazy_commit = false;
};

using Params = std::vector<std::optional<std::string>>;

class PgConnection {
 public:
  /// `label` prefixes every error message (e.g. "postgresql://u:***@h/db").
  PgConnection(boost::asio::any_io_executor ex, std::string label);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  /// Connects (closing any previous connection). Throws PgError naming the label and
  /// libpq's cause; `secrets` (the URL's passwords: url_secrets()) are scrubbed from the message.
  /// Cancellable (cancel() or the awaiting operation's slot).
  Task<void> connect(const std::string& url, const std::string& app_name, std::chrono::milliseconds timeout,
                     const std::vector<std::string>& secrets);

  bool connected() const { return conn_ != nullptr; }

  /// Reads what the server sent while idle; false (and closed) when the connection died.
  /// Never blocks.
  bool still_alive();

  /// Runs one parameterized statement (prepared on first use on this connection). Throws
  /// PgError; when the connection is lost or the operation is cancelled mid-flight, the
  /// connection is closed (a query in flight cannot be resumed).
  Task<PgResult> exec(const Statement& st, const Params& params);
  /// Runs a parameterized statement without preparing it.
  Task<PgResult> exec_params(const std::string& sql, const Params& params);
  /// Runs a (possibly multi-statement) script without parameters.
  Task<PgResult> exec_script(const std::string& sql);

  /// Suspends until the socket is readable. Throws system_error when cancelled.
  Task<void> wait_readable();
  /// Consumes input and counts pending notifications. Throws PgError (connection lost).
  int take_notifications();

  /// Cancels pending waits (the awaiting coroutine gets operation_aborted).
  void cancel();
  /// Closes the connection (releases the descriptor first). Idempotent.
  void close();

 private:
  enum class Send { prepare, prepared, params, script };
  Task<PgResult> run(Send kind, const std::string& name_or_sql, const Params& params,
                     const std::string* prepare_sql = nullptr);
  Task<void> wait(bool write);
  void assign_socket();
  [[noreturn]] void fail_lost(const std::string& what);
  std::string libpq_error() const;

  boost::asio::any_io_executor ex_;
  std::string label_;
  std::vector<std::string> secrets_;
  pg_conn* conn_ = nullptr;
  std::unique_ptr<boost::asio::posix::stream_descriptor> sd_;
  std::unordered_set<std::string> prepared_;
};

}  // namespace penguiflow::queue::pg
