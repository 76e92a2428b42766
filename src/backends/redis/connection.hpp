// A multiplexed Redis connection: a thin Asio shell (TCP connect/read/write on the
// caller's executor) around the sans-io ConnectionCore. Many coroutines may await replies
// on one connection at once; their requests are pipelined and replies matched FIFO.
// Non-template facade: every Asio template lives in connection.cpp.
#pragma once

#include "resp.hpp"

#include <penguiflow/queue/queue.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue::redis {

/// Where and how to connect, parsed from redis://[user[:password]@]host[:port][/db].
struct Endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string username;  // empty: AUTH <password> (the default user)
  std::string password;  // from the URL, else REDIS_PASSWORD; empty: no AUTH
  int db = 0;            // SELECT <db> when not 0
  std::string redacted;  // the URL with the password replaced by "***", for messages
};

/// Parses a redis:// URL. The password comes from the URL, else from the REDIS_PASSWORD
/// environment variable. Throws QueueError naming the redacted URL and the cause.
Endpoint parse_redis_url(std::string_view url);

/// One connection to one Redis server (RESP2 only; never sends HELLO 3).
///
/// Connects lazily on the first request (or explicitly with connect()), then sends AUTH /
/// SELECT / CLIENT SETNAME and a PING. When the connection is lost (server restart,
/// CLIENT KILL) every request in flight fails with QueueError; the next request
/// reconnects, after a backoff that doubles (100 ms .. 2 s) while connecting fails.
///
/// Cancellation: a cancelled request completes at once with operation_aborted; its reply
/// is still read and dropped (so a blocking command keeps the connection busy until the
/// server answers — close such a connection instead of reusing it).
/// Thread-safety: use from the executor's thread only.
class Connection {
 public:
  /// `client_name` is sent with CLIENT SETNAME (visible in CLIENT LIST) when not empty.
  Connection(boost::asio::any_io_executor ex, Endpoint ep, std::string client_name = {});
  /// Closes (see close()).
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Connects now (if not connected). Throws QueueError (refused, WRONGPASS, ...).
  Task<void> connect();
  /// Sends one command and returns its reply. A Redis error reply is returned as a
  /// RespValue of type error, not thrown. Throws QueueError on connection failure.
  Task<RespValue> exec(std::vector<std::string> args);
  /// Sends several commands in one write; returns their replies in order.
  Task<std::vector<RespValue>> exec_many(std::vector<std::vector<std::string>> cmds);
  /// Closes the socket; pending and later requests fail with QueueError. Idempotent.
  void close();
  /// True while a TCP session is established.
  bool connected() const;
  const Endpoint& endpoint() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace penguiflow::queue::redis
