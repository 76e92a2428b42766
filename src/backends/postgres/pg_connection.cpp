#include "pg_connection.hpp"

#include <libpq-fe.h>

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <cstdlib>

namespace penguiflow::queue::pg {
namespace asio = boost::asio;

PgResult& PgResult::operator=(PgResult&& o) noexcept {
  if (this != &o) {
    if (r_) PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}
PgResult::~PgResult() {
  if (r_) PQclear(r_);
}
int PgResult::rows() const { return r_ ? PQntuples(r_) : 0; }
bool PgResult::is_null(int row, int col) const { return !r_ || PQgetisnull(r_, row, col); }
std::string_view PgResult::text(int row, int col) const {
  if (is_null(row, col)) return {};
  return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
}
std::optional<std::string> PgResult::opt(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return std::string(text(row, col));
}
double PgResult::number(int row, int col, double fallback) const {
  if (is_null(row, col)) return fallback;
  return std::strtod(PQgetvalue(r_, row, col), nullptr);
}
std::int64_t PgResult::integer(int row, int col, std::int64_t fallback) const {
  if (is_null(row, col)) return fallback;
  return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
}
bool PgResult::boolean(int row, int col) const { return !is_null(row, col) && text(row, col) == "t"; }
std::int64_t PgResult::affected() const {
  if (!r_) return 0;
  const char* n = PQcmdTuples(r_);
  return (n && *n) ? std::strtoll(n, nullptr, 10) : 0;
}

PgConnection::PgConnection(asio::any_io_executor ex, std::string label) : ex_(std::move(ex)), label_(std::move(label)) {}

PgConnection::~PgConnection() { close(); }

void PgConnection::close() {
  if (sd_) {
    boost::system::error_code ec;
    sd_->cancel(ec);
    sd_->release();  // libpq owns the socket; PQfinish closes it
    sd_.reset();
  }
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  prepared_.clear();
}

void PgConnection::cancel() {
  if (sd_) {
    boost::system::error_code ec;
    sd_->cancel(ec);
  }
}

std::string PgConnection::libpq_error() const {
  std::string m = conn_ ? PQerrorMessage(conn_) : "no connection";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  // libpq may echo parts of a malformed connection string; never let a password through.
  for (const auto& secret : secrets_)
    for (auto p = m.find(secret); p != std::string::npos; p = m.find(secret, p + 3))
      m.replace(p, secret.size(), "***");  // (p + 3: a secret like "**" must not match its own mask)
  return m;
}

void PgConnection::fail_lost(const std::string& what) {
  std::string msg = label_ + ": " + what + ": " + libpq_error();
  close();
  throw PgError(msg, {}, true);
}

void PgConnection::assign_socket() {
  // The socket may change while connecting (several hosts, SSL fallback) and a new one can
  // reuse the old number, so re-register it every time.
  if (sd_) {
    sd_->release();
    sd_.reset();
  }
  int fd = PQsocket(conn_);
  if (fd < 0) fail_lost("connection failed");
  sd_ = std::make_unique<asio::posix::stream_descriptor>(ex_, fd);
}

Task<void> PgConnection::wait(bool write) {
  co_await sd_->async_wait(write ? asio::posix::descriptor_base::wait_write : asio::posix::descriptor_base::wait_read,
                           asio::use_awaitable);
}

Task<void> PgConnection::wait_readable() {
  if (!sd_) throw PgError(label_ + ": not connected", {}, true);
  co_await wait(false);
}

Task<void> PgConnection::connect(const std::string& url, const std::string& app_name,
                                 std::chrono::milliseconds timeout, const std::vector<std::string>& secrets) {
  close();
  secrets_ = secrets;
  const char* keys[] = {"dbname", "fallback_application_name", nullptr};
  const char* vals[] = {url.c_str(), app_name.c_str(), nullptr};
  conn_ = PQconnectStartParams(keys, vals, 1);
  if (!conn_) throw PgError(label_ + ": cannot connect: out of memory", {}, true);
  if (PQstatus(conn_) == CONNECTION_BAD) fail_lost("cannot connect");
  // Server notices ("schema already exists, skipping") are not ours to print.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);

  // Bound the whole handshake: a timer cancels the socket wait when it fires.
  auto alive = std::make_shared<bool>(true);
  struct Disarm {
    std::shared_ptr<bool>& a;
    asio::steady_timer& t;
    ~Disarm() {
      *a = false;
      t.cancel();
    }
  };
  asio::steady_timer timer(ex_, timeout);
  Disarm disarm{alive, timer};
  bool timed_out = false;
  timer.async_wait([this, weak = std::weak_ptr<bool>(alive), &timed_out](boost::system::error_code ec) {
    auto a = weak.lock();
    if (ec || !a || !*a) return;
    timed_out = true;
    cancel();
  });

  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (true) {
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) fail_lost("cannot connect");
    assign_socket();
    try {
      co_await wait(st == PGRES_POLLING_WRITING);
    } catch (const boost::system::system_error&) {
      if (!timed_out) throw;
    }
    if (timed_out) {
      close();
      throw PgError(label_ + ": cannot connect: timed out after " + std::to_string(timeout.count()) + " ms", {}, true);
    }
    st = PQconnectPoll(conn_);
  }
  if (PQsetnonblocking(conn_, 1) != 0) fail_lost("cannot connect");
  assign_socket();
}

bool PgConnection::still_alive() {
  if (!conn_) return false;
  // Twice: a terminated backend sends an error and then closes; one read may return the
  // error without seeing the end of the stream, and the next statement would then fail.
  if (PQconsumeInput(conn_) == 0 || PQconsumeInput(conn_) == 0 || PQstatus(conn_) == CONNECTION_BAD) {
    close();
    return false;
  }
  // Drop anything unsolicited (e.g. an error announcing termination) so it cannot be
  // mistaken for the next query's result.
  while (PGnotify* n = PQnotifies(conn_)) PQfreemem(n);
  return true;
}

int PgConnection::take_notifications() {
  if (!conn_) throw PgError(label_ + ": not connected", {}, true);
  if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) == CONNECTION_BAD) fail_lost("connection lost");
  int n = 0;
  while (PGnotify* p = PQnotifies(conn_)) {
    PQfreemem(p);
    ++n;
  }
  return n;
}

Task<PgResult> PgConnection::exec(const Statement& st, const Params& params) {
  if (!conn_) throw PgError(label_ + ": not connected", {}, true);
  if (!prepared_.count(st.name)) {
    const Params none;
    co_await run(Send::prepare, st.name, none, &st.sql);
    prepared_.insert(st.name);
  }
  co_return co_await run(Send::prepared, st.name, params);
}

Task<PgResult> PgConnection::exec_params(const std::string& sql, const Params& params) {
  if (!conn_) throw PgError(label_ + ": not connected", {}, true);
  co_return co_await run(Send::params, sql, params);
}

Task<PgResult> PgConnection::exec_script(const std::string& sql) {
  if (!conn_) throw PgError(label_ + ": not connected", {}, true);
  const Params none;
  co_return co_await run(Send::script, sql, none);
}

Task<PgResult> PgConnection::run(Send kind, const std::string& text, const Params& params,
                                 const std::string* prepare_sql) {
  // If anything escapes while the query is in flight (lost connection, cancellation), the
  // protocol state is unknown: close, and let the next call reconnect.
  struct InFlight {
    PgConnection* c;
    bool done = false;
    ~InFlight() {
      if (!done) c->close();
    }
  } guard{this};

  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  int ok = 0;
  if (kind == Send::prepared) {
    ok = PQsendQueryPrepared(conn_, text.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0);
  } else if (kind == Send::params) {
    ok = PQsendQueryParams(conn_, text.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                           nullptr, 0);
  } else if (kind == Send::prepare) {
    ok = PQsendPrepare(conn_, text.c_str(), prepare_sql->c_str(), 0, nullptr);
  } else {
    ok = PQsendQuery(conn_, text.c_str());
  }
  if (!ok) fail_lost("cannot send query");

  while (true) {
    int f = PQflush(conn_);
    if (f == 0) break;
    if (f < 0) fail_lost("connection lost while sending");
    co_await wait(true);
    if (PQconsumeInput(conn_) == 0) fail_lost("connection lost while sending");
  }

  PgResult last;
  std::optional<PgError> error;
  while (true) {
    if (PQconsumeInput(conn_) == 0) fail_lost("connection lost");
    bool finished = false;
    while (!PQisBusy(conn_)) {
      PGresult* r = PQgetResult(conn_);
      if (!r) {
        finished = true;
        break;
      }
      auto status = PQresultStatus(r);
      if (status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE || status == PGRES_NONFATAL_ERROR) {
        if (!error) {
          const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
          std::string m = PQresultErrorMessage(r);
          while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
          error.emplace(label_ + ": " + m, state ? state : "", false);
        }
        PQclear(r);
      } else {
        last = PgResult(r);
      }
    }
    if (finished) break;
    co_await wait(false);
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    std::string m = error ? std::string(error->what()) : label_ + ": connection lost: " + libpq_error();
    close();
    guard.done = true;
    throw PgError(m, error ? error->sqlstate() : "", true);
  }
  guard.done = true;
  if (error) throw *error;
  co_return last;
}

}  // namespace penguiflow::queue::pg
