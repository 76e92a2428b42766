// W10 HTTP endpoint: /metrics and /healthz served by MetricsServer on its own io thread,
// queried by a Beast client (no curl needed), plus bad and slow clients.
#include "observe/exposition.hpp"
#include "support/async_test.hpp"

#include <penguiflow/core/node.hpp>
#include <penguiflow/observe/http.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <future>
#include <thread>

using namespace penguiflow::observe;
using penguiflow::Task;
using penguiflow::testing::parse_exposition;
using penguiflow::testing::run_async;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

struct Reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  std::string allow;
};

Task<Reply> request_on(beast::tcp_stream& s, http::verb verb, std::string target, bool keep_alive = false) {
  http::request<http::string_body> req(verb, target, 11);
  req.set(http::field::host, "localhost");
  req.keep_alive(keep_alive);
  req.prepare_payload();
  co_await http::async_write(s, req, asio::use_awaitable);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  co_await http::async_read(s, buf, res, asio::use_awaitable);
  Reply r;
  r.status = res.result_int();
  r.body = res.body();
  r.content_type = std::string(res[http::field::content_type]);
  r.allow = std::string(res[http::field::allow]);
  co_return r;
}

Task<Reply> request(unsigned short port, http::verb verb, std::string target) {
  beast::tcp_stream s(co_await asio::this_coro::executor);
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  co_await s.async_connect(ep, asio::use_awaitable);
  co_return co_await request_on(s, verb, std::move(target));
}

Reply get(unsigned short port, std::string target, http::verb verb = http::verb::get) {
  return run_async(request(port, verb, std::move(target)), std::chrono::seconds(10));
}

/// Sends `data` as is, half-closes, and returns everything the server answers until it
/// closes.
std::string raw_exchange(unsigned short port, std::string data) {
  return run_async([](unsigned short port, std::string data) -> Task<std::string> {
    tcp::socket s(co_await asio::this_coro::executor);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    co_await s.async_connect(ep, asio::use_awaitable);
    // The server may answer and stop reading before all of `data` is sent.
    auto [wec, wn] = co_await asio::async_write(s, asio::buffer(data), asio::as_tuple(asio::use_awaitable));
    (void)wec;
    // Half-close: the server sees the end of the request stream instead of waiting for
    // more until its timeout.
    boost::system::error_code sec;
    s.shutdown(tcp::socket::shutdown_send, sec);
    std::string out;
    auto [ec, n] = co_await asio::async_read(s, asio::dynamic_buffer(out), asio::as_tuple(asio::use_awaitable));
    (void)ec;
    co_return out;
  }(port, std::move(data)), std::chrono::seconds(10));
}

/// The server's io_context on its own thread; `on_io` runs a call there and waits.
class ServerThread {
 public:
  ServerThread() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  template <class F>
  auto on_io(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io_, [&task] { task(); });
    return fut.get();
  }
  /// Creates and starts a server on the io thread; rethrows start()'s exception.
  unsigned short start(std::string address, Registry& registry, std::function<bool()> health,
                       MetricsServerOptions options = {}) {
    return on_io([&] {
      server_.reset();
      server_ = std::make_unique<MetricsServer>(io_.get_executor(), address, registry, health, options);
      server_->start();
      return server_->port();
    });
  }
  void stop() {
    on_io([this] { server_->stop(); });
  }
  asio::io_context& io() { return io_; }
  ~ServerThread() {
    on_io([this] { server_.reset(); });
    guard_.reset();
    thread_.join();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::unique_ptr<MetricsServer> server_;
  std::thread thread_;
};

}  // namespace

TEST(W10_MetricsServer, ServesMetricsAndHealthOnAPickedPort) {
  Registry registry;
  registry.counter("penguiflow_jobs_total", "Jobs.", {{"flow", "quickstart"}, {"outcome", "done"}}).inc(5);
  std::atomic<bool> healthy{true};
  ServerThread st;
  unsigned short port = st.start("127.0.0.1:0", registry, [&] { return healthy.load(); });
  ASSERT_NE(port, 0);

  auto m = get(port, "/metrics");
  EXPECT_EQ(m.status, 200u);
  EXPECT_NE(m.content_type.find("text/plain"), std::string::npos);
  EXPECT_NE(m.content_type.find("version=0.0.4"), std::string::npos);
  auto e = parse_exposition(m.body);
  EXPECT_EQ(e.value("penguiflow_jobs_total", {{"flow", "quickstart"}, {"outcome", "done"}}), 5);

  // A query string does not change the path.
  EXPECT_EQ(get(port, "/metrics?debug=1").status, 200u);

  auto h = get(port, "/healthz");
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(h.body, "ok\n");
  healthy = false;
  auto sick = get(port, "/healthz");
  EXPECT_EQ(sick.status, 503u);
  EXPECT_NE(sick.body, "ok\n");
  healthy = true;
  EXPECT_EQ(get(port, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, UnknownPathIs404AndOtherMethodsAre405) {
  Registry registry;
  ServerThread st;
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; });
  EXPECT_EQ(get(port, "/").status, 404u);
  EXPECT_EQ(get(port, "/metricsx").status, 404u);
  auto post = get(port, "/metrics", http::verb::post);
  EXPECT_EQ(post.status, 405u);
  EXPECT_EQ(post.allow, "GET");
  EXPECT_EQ(get(port, "/healthz", http::verb::delete_).status, 405u);
  EXPECT_EQ(get(port, "/metrics").status, 200u);
}

TEST(W10_MetricsServer, ScrapeHooksAndHealthThatThrows) {
  Registry registry;
  std::atomic<int> scrapes{0};
  registry.on_scrape([&] { registry.gauge("pf_scrapes", "Scrapes.").set(++scrapes); });
  ServerThread st;
  unsigned short port = st.start(":0", registry, []() -> bool { throw std::runtime_error("probe broke"); });
  EXPECT_EQ(parse_exposition(get(port, "/metrics").body).value("pf_scrapes"), 1);
  EXPECT_EQ(parse_exposition(get(port, "/metrics").body).value("pf_scrapes"), 2);
  EXPECT_EQ(get(port, "/healthz").status, 503u);
}

TEST(W10_MetricsServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  Registry registry;
  ServerThread st;
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; });
  auto statuses = run_async([](unsigned short port) -> Task<std::vector<unsigned>> {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    co_await s.async_connect(ep, asio::use_awaitable);
    std::vector<unsigned> out;
    out.push_back((co_await request_on(s, http::verb::get, "/healthz", true)).status);
    out.push_back((co_await request_on(s, http::verb::get, "/nope", true)).status);
    out.push_back((co_await request_on(s, http::verb::get, "/metrics", true)).status);
    co_return out;
  }(port));
  EXPECT_EQ(statuses, (std::vector<unsigned>{200, 404, 200}));
}

TEST(W10_MetricsServer, MalformedAndOversizedRequestsGetAnErrorAndTheServerKeepsServing) {
  Registry registry;
  ServerThread st;
  MetricsServerOptions opts;
  opts.max_request_bytes = 4096;
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; }, opts);

  auto garbage = raw_exchange(port, "THIS IS NOT HTTP\r\n\r\n");
  EXPECT_TRUE(garbage.starts_with("HTTP/1.1 400")) << garbage;
  auto binary = raw_exchange(port, std::string("\x00\x01\x02\xff\r\n\r\n", 8));
  EXPECT_TRUE(binary.empty() || binary.starts_with("HTTP/1.1 400")) << binary;
  EXPECT_EQ(get(port, "/metrics").status, 200u);

  std::string huge_header = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n";
  auto big = raw_exchange(port, huge_header);
  EXPECT_TRUE(big.starts_with("HTTP/1.1 431")) << big.substr(0, 100);
  std::string huge_body = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'b');
  auto body = raw_exchange(port, huge_body);
  EXPECT_TRUE(body.starts_with("HTTP/1.1 413")) << body.substr(0, 100);

  // A client that connects and goes away without a word.
  raw_exchange(port, "");
  EXPECT_EQ(get(port, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, SlowClientIsTimedOutWithoutBlockingOthers) {
  Registry registry;
  ServerThread st;
  MetricsServerOptions opts;
  opts.io_timeout = std::chrono::milliseconds(300);
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; }, opts);
  auto result = run_async([](unsigned short port) -> Task<std::pair<unsigned, std::string>> {
    auto ex = co_await asio::this_coro::executor;
    tcp::socket slow(ex);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    co_await slow.async_connect(ep, asio::use_awaitable);
    std::string partial = "GET /metr";
    co_await asio::async_write(slow, asio::buffer(partial), asio::use_awaitable);
    // While the slow client dawdles, another is served.
    auto other = co_await request(port, http::verb::get, "/healthz");
    // The server gives up on the slow one: its read ends (EOF or reset), within the bound.
    std::string rest;
    auto [ec, n] = co_await asio::async_read(slow, asio::dynamic_buffer(rest), asio::as_tuple(asio::use_awaitable));
    co_return std::make_pair(other.status, ec ? ec.message() : std::string("no error"));
  }(port), std::chrono::seconds(10));
  EXPECT_EQ(result.first, 200u);
  EXPECT_NE(result.second, "no error");
  EXPECT_EQ(get(port, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, StopClosesConnectionsAndFreesThePort) {
  Registry registry;
  ServerThread st;
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; });
  EXPECT_EQ(get(port, "/metrics").status, 200u);

  // An idle keep-alive connection is closed by stop().
  auto closed = run_async([&]() -> Task<bool> {
    tcp::socket idle(co_await asio::this_coro::executor);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    co_await idle.async_connect(ep, asio::use_awaitable);
    st.stop();
    st.stop();  // idempotent
    std::string rest;
    auto [ec, n] = co_await asio::async_read(idle, asio::dynamic_buffer(rest), asio::as_tuple(asio::use_awaitable));
    co_return bool(ec) && rest.empty();
  }(), std::chrono::seconds(10));
  EXPECT_TRUE(closed);

  // The port is free again: a new server binds exactly that port.
  unsigned short again = st.start("127.0.0.1:" + std::to_string(port), registry, [] { return true; });
  EXPECT_EQ(again, port);
  EXPECT_EQ(get(port, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, BindFailuresThrowNamingTheAddress) {
  Registry registry;
  ServerThread st;
  unsigned short port = st.start("127.0.0.1:0", registry, [] { return true; });
  auto message_of = [&](std::string address) -> std::string {
    try {
      st.on_io([&] {
        MetricsServer other(st.io().get_executor(), address, registry, [] { return true; });
        other.start();
      });
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  };
  std::string in_use = "127.0.0.1:" + std::to_string(port);
  auto m = message_of(in_use);
  EXPECT_NE(m.find(in_use), std::string::npos) << m;
  EXPECT_NE(m.find("bind"), std::string::npos) << m;
  for (std::string bad : {"nonsense", "127.0.0.1:99999", "127.0.0.1:port", "::1:80", "[::1", "no-such-host.invalid:0"}) {
    auto msg = message_of(bad);
    EXPECT_NE(msg, "no error") << bad;
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  }
  // The first server is unharmed.
  EXPECT_EQ(get(port, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, AcceptsHostNamesAndAllInterfaces) {
  Registry registry;
  ServerThread st;
  unsigned short p1 = st.start("localhost:0", registry, [] { return true; });
  EXPECT_EQ(get(p1, "/healthz").status, 200u);
  unsigned short p2 = st.start("0.0.0.0:0", registry, [] { return true; });
  EXPECT_EQ(get(p2, "/healthz").status, 200u);
}

TEST(W10_MetricsServer, ContextDestroyedBeforeTheServerIsSafe) {
  // The order a careless main() gets wrong: the io_context dies first, with a served
  // connection still open. ASan would report the server touching freed reactor state.
  Registry registry;
  auto io = std::make_unique<asio::io_context>();
  auto server = std::make_unique<MetricsServer>(io->get_executor(), "127.0.0.1:0", registry, [] { return true; });
  server->start();
  unsigned short port = server->port();
  std::thread runner([&] { io->run_for(std::chrono::seconds(5)); });
  auto closed = run_async([&]() -> Task<bool> {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    co_await s.async_connect(ep, asio::use_awaitable);
    auto r = co_await request_on(s, http::verb::get, "/healthz", true);  // stays open
    EXPECT_EQ(r.status, 200u);
    io->stop();
    runner.join();
    io.reset();      // context first...
    server->stop();  // ...then the server: inert, no crash
    server.reset();
    std::string rest;
    auto [ec, n] = co_await asio::async_read(s.socket(), asio::dynamic_buffer(rest), asio::as_tuple(asio::use_awaitable));
    co_return bool(ec);
  }(), std::chrono::seconds(10));
  EXPECT_TRUE(closed);  // the connection went away with its context
}
