// The /metrics and /healthz endpoint on Boost.Beast, one coroutine per connection, on
// the caller's executor. Every read and write is bounded in time and size, so a slow or
// broken client costs one connection slot for at most io_timeout.
#include <penguiflow/observe/http.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>

namespace penguiflow::observe {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

[[noreturn]] void fail(const std::string& address, const std::string& why) {
  throw std::runtime_error("metrics server: cannot listen on '" + address + "': " + why);
}

/// "host:port", ":port", "[v6]:port" -> endpoint. Host names are resolved (blocking,
/// once, at start-up).
tcp::endpoint parse_address(const asio::any_io_executor& ex, const std::string& address) {
  std::string host, port;
  if (address.starts_with('[')) {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
      fail(address, "expected [ipv6]:port");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) fail(address, "expected host:port or :port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) fail(address, "put an IPv6 address in brackets: [::1]:9464");
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    fail(address, "bad port '" + port + "'");
  auto p = static_cast<unsigned short>(value);
  if (host.empty()) return tcp::endpoint(tcp::v4(), p);
  boost::system::error_code aec;
  auto ip = asio::ip::make_address(host, aec);
  if (!aec) return tcp::endpoint(ip, p);
  tcp::resolver resolver(ex);
  boost::system::error_code rec;
  auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, rec);
  if (rec || results.empty()) fail(address, "cannot resolve '" + host + "': " + (rec ? rec.message() : "no address"));
  // Prefer IPv4 ("localhost" usually means 127.0.0.1 to the scrapers that use it).
  for (auto& r : results)
    if (r.endpoint().address().is_v4()) return r.endpoint();
  return results.begin()->endpoint();
}

}  // namespace

namespace {

/// What a server does when its execution context shuts down first.
struct ContextShutdownListener {
  virtual void context_shutdown() = 0;

 protected:
  ~ContextShutdownListener() = default;
};

struct LiveServers {
  std::mutex mu;
  bool gone = false;
  std::set<ContextShutdownListener*> servers;
};

/// An execution-context service that tells live servers when their context shuts down.
/// Asio requires I/O objects to die before their context; a program that destroys the
/// io_context first (easy to do at shutdown) would otherwise have the server touch freed
/// reactor state. On shutdown each server drops its acceptor while the services still
/// exist, and never touches the context again.
class ServerTracker : public asio::execution_context::service {
 public:
  using key_type = ServerTracker;
  static inline asio::execution_context::id id;
  explicit ServerTracker(asio::execution_context& ctx)
      : asio::execution_context::service(ctx), live(std::make_shared<LiveServers>()) {}
  std::shared_ptr<LiveServers> live;

 private:
  void shutdown() override {
    std::lock_guard lock(live->mu);
    live->gone = true;
    for (auto* s : live->servers) s->context_shutdown();
    live->servers.clear();
  }
};

}  // namespace

struct MetricsServer::Impl final : ContextShutdownListener {
  asio::any_io_executor ex;
  std::string address;
  Registry& registry;
  std::function<bool()> health;
  MetricsServerOptions options;
  std::shared_ptr<LiveServers> live;
  std::optional<tcp::acceptor> acceptor;  // empty once the context has shut down
  unsigned short port = 0;
  bool started = false;
  bool stopped = false;
  std::uint64_t next_id = 0;
  std::unordered_map<std::uint64_t, beast::tcp_stream*> connections;

  Impl(asio::any_io_executor e, std::string a, Registry& r, std::function<bool()> h, MetricsServerOptions o)
      : ex(std::move(e)), address(std::move(a)), registry(r), health(std::move(h)), options(o) {
    live = asio::use_service<ServerTracker>(asio::query(ex, asio::execution::context)).live;
    acceptor.emplace(ex);
    std::lock_guard lock(live->mu);
    if (live->gone) throw std::runtime_error("metrics server: its execution context is shutting down");
    live->servers.insert(this);
  }
  ~Impl() {
    std::lock_guard lock(live->mu);
    live->servers.erase(this);
  }

  void context_shutdown() override {
    // Pending operations are being destroyed, not completed: forget, don't touch.
    stopped = true;
    acceptor.reset();
    connections.clear();
  }

  http::response<http::string_body> respond(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.set(http::field::server, "penguiflow");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    if (path != "/metrics" && path != "/healthz") {
      res.result(http::status::not_found);
      res.body() = "not found\n";
    } else if (req.method() != http::verb::get) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET");
      res.body() = "method not allowed\n";
    } else if (path == "/metrics") {
      try {
        res.body() = registry.render_prometheus();
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      } catch (const std::exception& e) {
        res.result(http::status::internal_server_error);
        res.body() = std::string("metrics rendering failed: ") + e.what() + "\n";
      }
      res.set(http::field::cache_control, "no-store");
    } else {
      bool healthy = false;
      try {
        healthy = !health || health();
      } catch (...) {
        healthy = false;  // a broken probe is an unhealthy process
      }
      res.result(healthy ? http::status::ok : http::status::service_unavailable);
      res.body() = healthy ? "ok\n" : "unhealthy\n";
      res.set(http::field::cache_control, "no-store");
    }
    res.prepare_payload();
    return res;
  }

  static asio::awaitable<void> serve_connection(std::shared_ptr<Impl> self, tcp::socket socket);
  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self);
  static asio::awaitable<void> linger(Impl& self, beast::tcp_stream& stream);
};

namespace {

/// Answers a request we could not parse, then the caller closes the connection.
http::response<http::string_body> error_response(http::status status, std::string body) {
  http::response<http::string_body> res{status, 11};
  res.set(http::field::server, "penguiflow");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.keep_alive(false);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

}  // namespace

/// Lingering close after an error answer: closing a socket with unread input makes the
/// kernel send a reset, which can destroy the answer before the client reads it. Send
/// FIN, then discard what the client still sends, bounded in bytes and time.
asio::awaitable<void> MetricsServer::Impl::linger(Impl& self, beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) co_return;
  stream.expires_after(std::min<std::chrono::milliseconds>(self.options.io_timeout, std::chrono::seconds(2)));
  std::array<char, 4096> scratch;
  std::size_t budget = 1 << 20;
  while (budget > 0 && !self.stopped) {
    auto [rec, n] = co_await stream.async_read_some(asio::buffer(scratch), kTok);
    if (rec) break;
    budget -= std::min(budget, n);
  }
}

asio::awaitable<void> MetricsServer::Impl::serve_connection(std::shared_ptr<Impl> self, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  const std::uint64_t id = self->next_id++;
  self->connections.emplace(id, &stream);
  struct Unregister {
    Impl* impl;
    std::uint64_t id;
    ~Unregister() { impl->connections.erase(id); }
  } unregister{self.get(), id};

  const std::size_t limit = self->options.max_request_bytes;
  beast::flat_buffer buffer(limit);
  while (!self->stopped) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limit, UINT32_MAX)));
    parser.body_limit(limit);
    stream.expires_after(self->options.io_timeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTok);
    if (self->stopped) break;
    if (ec) {
      // Disconnects, resets and timeouts just end the connection; a request we could not
      // parse or that is too large gets an answer first.
      if (ec.category() != http::make_error_code(http::error::bad_target).category() ||
          ec == http::error::end_of_stream || ec == http::error::partial_message)
        break;
      http::status status = http::status::bad_request;
      std::string body = "bad request: " + ec.message() + "\n";
      if (ec == http::error::body_limit || (ec == http::error::buffer_overflow && parser.is_header_done())) {
        status = http::status::payload_too_large;
        body = "request too large\n";
      } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        status = http::status::request_header_fields_too_large;
        body = "request headers too large\n";
      }
      auto res = error_response(status, std::move(body));
      stream.expires_after(self->options.io_timeout);
      auto [wec, wn] = co_await http::async_write(stream, res, kTok);
      if (!wec && !self->stopped) co_await linger(*self, stream);
      break;
    }
    auto res = self->respond(parser.get());
    res.keep_alive(parser.get().keep_alive());
    stream.expires_after(self->options.io_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, kTok);
    if (wec || !res.keep_alive()) break;
  }
  if (!self->stopped) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
}

asio::awaitable<void> MetricsServer::Impl::accept_loop(std::shared_ptr<Impl> self) {
  while (!self->stopped) {
    auto [ec, socket] = co_await self->acceptor->async_accept(kTok);
    if (self->stopped || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      asio::steady_timer pause(self->ex, std::chrono::milliseconds(50));
      co_await pause.async_wait(kTok);
      continue;
    }
    if (self->connections.size() >= self->options.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    asio::co_spawn(self->ex, serve_connection(self, std::move(socket)), asio::detached);
  }
}

MetricsServer::MetricsServer(asio::any_io_executor ex, std::string address, Registry& registry,
                             std::function<bool()> health, MetricsServerOptions options)
    : impl_(std::make_shared<Impl>(std::move(ex), std::move(address), registry, std::move(health), options)) {}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::start() {
  Impl& s = *impl_;
  if (s.started) throw std::runtime_error("metrics server on '" + s.address + "' already started");
  if (!s.acceptor) throw std::runtime_error("metrics server on '" + s.address + "': its execution context is gone");
  tcp::endpoint ep = parse_address(s.ex, s.address);
  boost::system::error_code ec;
  auto check = [&](const char* step) {
    if (ec) {
      boost::system::error_code ignored;
      s.acceptor->close(ignored);
      fail(s.address, std::string(step) + ": " + ec.message());
    }
  };
  s.acceptor->open(ep.protocol(), ec);
  check("open");
  // Lets a restarted process rebind while old connections sit in TIME_WAIT; on Linux it
  // does not let two listeners share a port, so "in use" is still reported.
  s.acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  check("set_option");
  s.acceptor->bind(ep, ec);
  check("bind");
  s.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  check("listen");
  s.port = s.acceptor->local_endpoint(ec).port();
  check("local_endpoint");
  s.started = true;
  asio::co_spawn(s.ex, Impl::accept_loop(impl_), asio::detached);
}

void MetricsServer::stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  boost::system::error_code ignored;
  if (s.acceptor) s.acceptor->close(ignored);
  // Closing aborts each connection's pending read or write; its coroutine then ends and
  // unregisters itself.
  for (auto& [id, stream] : s.connections) stream->close();
}

unsigned short MetricsServer::port() const { return impl_->port; }

}  // namespace penguiflow::observe
