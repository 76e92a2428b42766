// postgresql:// — a JobQueue on PostgreSQL (libpq, non-blocking, on the Asio event loop).
//
// Each queue instance keeps up to three connections: one for claims, enqueues, inspection
// and effects, one for settles (complete / retry / fail / heartbeat, opened on the first
// settle, so a batch of completions commits while the next claim runs), each used by one
// statement at a time in call order, and one that LISTENs for enqueue notifications, so an
// idle fetch sleeps without querying. `QueueConfig::namespace_` is the PostgreSQL schema holding the
// tables; it is created and migrated on open (docs/backends.md, docs/wire-format.md).
//
//   auto q = co_await open_postgres_queue(ex, "postgresql://app@db/jobs", {.namespace_ = "penguiflow"});
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue {

/// The schema version this build creates and understands. open refuses a database whose
/// schema_version is newer.
inline constexpr int kPostgresSchemaVersion = 3;

/// Connects, applies the schema migrations (under an advisory lock, so workers starting
/// together are safe), starts listening for notifications and returns the queue, bound to
/// `ex`. The password may be in the URL or come from PGPASSWORD / ~/.pgpass (libpq).
/// Throws QueueError naming the redacted URL and the cause: a URL that is not
/// postgres(ql)://, a namespace that is not a valid schema name (1-63 of [A-Za-z0-9_]),
/// unreachable server, failed authentication, a newer schema version. Cancellable.
Task<std::unique_ptr<JobQueue>> open_postgres_queue(boost::asio::any_io_executor ex, std::string url,
                                                    QueueConfig config = {});

/// One SQL statement with its text parameters ($1, $2, ...; nullopt is NULL).
struct PostgresStatement {
  std::string sql;
  std::vector<std::optional<std::string>> params;
};

/// The statement that enqueues `job` into the queue in `schema` through the SQL function
/// `<schema>.enqueue(...)`; run it on your own connection inside your own transaction, so
/// the job exists exactly when your transaction commits (docs/wire-format.md). It returns
/// one row with the job id (the existing id when the idempotency key is already present).
/// Pure; throws QueueError for an invalid schema name.
PostgresStatement postgres_enqueue_statement(std::string_view schema, const NewJob& job);

}  // namespace penguiflow::queue
