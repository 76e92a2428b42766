// sqlite:// — the embedded, durable default backend (docs/backends.md#sqlite).
//
// One database file in WAL mode; several worker processes on one machine may share it
// (claims run in BEGIN IMMEDIATE transactions under a busy timeout). The blocking SQLite
// library runs on a thread owned by each queue; results come back on the queue's
// executor. Tables are prefixed with QueueConfig::namespace_ ("penguiflow_jobs", ...).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <string>

namespace penguiflow::queue {

/// Where and how a SQLite queue is opened.
struct SqliteOptions {
  std::string path;                                  // file path ("./penguiflow.db")
  std::chrono::milliseconds busy_timeout{5000};      // wait for another writer this long
  /// A fetch with nothing ready wakes at once for writes through the same queue object
  /// and, on Linux, for other connections' commits (inotify on the -wal file). It also
  /// re-checks the file every poll_interval (a cheap PRAGMA data_version; a claim only runs
  /// when something changed or a delayed job / lease came due): the only way to see other
  /// processes' writes where the file cannot be watched, and a safety net (at least 1 s
  /// apart) where it can.
  std::chrono::milliseconds poll_interval{25};
};

/// Parses "sqlite:///abs/path.db" (absolute) or "sqlite://./rel.db" / "sqlite://rel.db"
/// (relative to the working directory). Query parameters: busy_timeout_ms, poll_ms.
/// Throws QueueError naming the URL on anything else.
SqliteOptions parse_sqlite_url(std::string_view url);

/// The schema version this build writes and reads. A file with a newer version is refused.
inline constexpr int kSqliteSchemaVersion = 2;

/// Opens (creating when missing) the database and its tables. Throws QueueError naming the
/// URL and the cause (cannot open, not a database, newer schema version, bad namespace).
/// Cancellation: opening is not interruptible (it is short).
/// (Overloads, not a default argument: see open_queue.)
Task<std::unique_ptr<JobQueue>> open_sqlite_queue(boost::asio::any_io_executor ex, std::string url, QueueConfig config);
Task<std::unique_ptr<JobQueue>> open_sqlite_queue(boost::asio::any_io_executor ex, std::string url);

}  // namespace penguiflow::queue
