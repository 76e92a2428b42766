// The operator's HTTP endpoint (W10): GET /metrics (Prometheus text) and GET /healthz.
// A non-template facade: Boost.Beast stays in src/observe/metrics_server.cpp.
//
//   boost::asio::io_context io;
//   penguiflow::observe::MetricsServer server(io.get_executor(), "127.0.0.1:9464", registry,
//                                            [&] { return !shutting_down.load(); });
//   server.start();   // throws when the address cannot be bound
//   io.run();
#pragma once

#include <penguiflow/observe/metrics.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace penguiflow::observe {

/// Limits that keep a slow or hostile client from hurting the server. Aggregate.
struct MetricsServerOptions {
  /// Reading one whole request (headers and body) and writing one response each get
  /// this long; a keep-alive connection idle this long is closed.
  std::chrono::milliseconds io_timeout{10'000};
  /// Largest accepted request (headers + body); larger ones get 431 / 413 and a close.
  std::size_t max_request_bytes = 16 * 1024;
  /// Connections served at once; further ones are accepted and closed at once.
  std::size_t max_connections = 64;
};

/// Serves GET /metrics (200, `text/plain; version=0.0.4; charset=utf-8`, the registry's
/// render_prometheus()) and GET /healthz (200 "ok\n" while health() is true, 503
/// "unhealthy\n" when it is false or throws; an empty `health` counts as healthy) on `address`: "127.0.0.1:9464", ":9464"
/// (all IPv4 interfaces), "[::1]:9464", "localhost:9464"; port 0 picks a free port (see
/// port()). Other paths get 404, other methods 405; a malformed request gets 400 and its
/// connection is closed; the server keeps serving. Keep-alive is supported.
///
/// Runs on `ex`; give it a single-threaded executor (an io_context run by one thread, or
/// a strand). health() and the registry's scrape hooks run there. start(), stop(),
/// port() and the destructor must be called on that executor's thread or while nothing
/// runs it. Destroy the server before its execution context if you can; if the context
/// goes first, the server releases its sockets with it and is inert (safe to destroy).
class MetricsServer {
 public:
  MetricsServer(boost::asio::any_io_executor ex, std::string address, Registry& registry,
                std::function<bool()> health, MetricsServerOptions options = {});
  /// Calls stop().
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  /// Binds, listens and starts accepting. Throws std::runtime_error naming the address
  /// when it is malformed, cannot be resolved or bound (in use, not local), or when the
  /// server already started.
  void start();
  /// Closes the acceptor (the port is free when this returns) and every open connection;
  /// their pending operations end with operation_aborted. Idempotent.
  void stop();
  /// The bound port (the one picked for port 0); 0 before start().
  unsigned short port() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace penguiflow::observe
