#include "connection.hpp"

#include "connection_core.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>

#include <array>
#include <charconv>
#include <cstdlib>
#include <unordered_map>

namespace penguiflow::queue::redis {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

Endpoint parse_redis_url(std::string_view url) {
  Endpoint ep;
  ep.redacted = redact_url(url);
  auto fail = [&](const std::string& why) { return QueueError("redis queue " + ep.redacted + ": " + why); };
  auto r = boost::urls::parse_uri(url);
  if (!r) throw fail("invalid URL (" + r.error().message() + ")");
  auto u = *r;
  if (u.scheme() != "redis") {
    if (u.scheme() == "rediss") throw fail("TLS (rediss://) is not supported");
    throw fail("not a redis:// URL");
  }
  if (!u.has_authority() || u.host().empty()) throw fail("missing host");
  ep.host = u.host_address();
  if (u.has_port()) {
    std::string_view ps = u.port();
    unsigned port = 0;
    auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
    if (ec != std::errc() || p != ps.data() + ps.size() || port == 0 || port > 65535)
      throw fail("invalid port '" + std::string(ps) + "'");
    ep.port = static_cast<std::uint16_t>(port);
  }
  if (u.has_userinfo()) {
    ep.username = u.user();
    if (u.has_password()) ep.password = u.password();
  }
  if (ep.password.empty())
    if (const char* p = std::getenv("REDIS_PASSWORD"); p && *p) ep.password = p;
  std::string path = u.path();
  while (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (!path.empty()) {
    int db = -1;
    auto [p, ec] = std::from_chars(path.data(), path.data() + path.size(), db);
    if (ec != std::errc() || p != path.data() + path.size() || db < 0)
      throw fail("invalid database '" + path + "' (expected redis://host:port/<number>)");
    ep.db = db;
  }
  return ep;
}

using Handler = asio::any_completion_handler<void(std::exception_ptr, std::vector<RespValue>)>;

struct Connection::Impl : std::enable_shared_from_this<Connection::Impl> {
  enum class State { idle, connecting, connected, closed };

  Impl(asio::any_io_executor ex, Endpoint ep, std::string name)
      : ex_(ex), ep_(std::move(ep)), name_(std::move(name)), sock_(ex), write_signal_(ex), backoff_timer_(ex),
        connect_timer_(ex) {}

  asio::any_io_executor ex_;
  Endpoint ep_;
  std::string name_;
  tcp::socket sock_;
  asio::steady_timer write_signal_;
  asio::steady_timer backoff_timer_;
  asio::steady_timer connect_timer_;
  ConnectionCore core_;
  struct Pending {
    Handler handler;
    asio::cancellation_slot slot;
  };
  std::unordered_map<ConnectionCore::RequestId, Pending> handlers_;
  State state_ = State::idle;
  std::uint64_t gen_ = 0;
  std::chrono::milliseconds backoff_{0};
  Clock::time_point next_attempt_{};

  std::string prefix() const { return "redis queue " + ep_.redacted + ": "; }

  void complete(Handler h, std::exception_ptr e, std::vector<RespValue> v) {
    // Everything runs on ex_ (one thread); posting keeps completions out of our own call
    // stack (no re-entrancy while the core is being iterated).
    asio::post(ex_, [h = std::move(h), e, v = std::move(v)]() mutable { std::move(h)(e, std::move(v)); });
  }

  void start(std::string bytes, std::size_t n, Handler h) {
    if (state_ == State::closed) {
      complete(std::move(h), std::make_exception_ptr(QueueError(prefix() + "connection closed")), {});
      return;
    }
    auto id = core_.push(bytes, n);
    auto slot = asio::get_associated_cancellation_slot(h);
    if (slot.is_connected()) {
      std::weak_ptr<Impl> w = weak_from_this();
      slot.assign([w, id](asio::cancellation_type) {
        if (auto s = w.lock()) s->cancel(id);
      });
    }
    handlers_.emplace(id, Pending{std::move(h), slot});
    kick();
  }

  void cancel(ConnectionCore::RequestId id) {
    auto it = handlers_.find(id);
    if (it == handlers_.end()) return;
    core_.abandon(id);
    auto h = std::move(it->second.handler);
    handlers_.erase(it);
    // The slot still holds the handler running right now: leave it, it is inert.
    complete(std::move(h), std::make_exception_ptr(boost::system::system_error(asio::error::operation_aborted)), {});
  }

  void deliver(ConnectionCore::Completion c) {
    auto it = handlers_.find(c.id);
    if (it == handlers_.end()) return;  // cancelled earlier: drop the reply
    auto p = std::move(it->second);
    handlers_.erase(it);
    if (p.slot.is_connected()) p.slot.clear();
    complete(std::move(p.handler), nullptr, std::move(c.replies));
  }

  void fail_all(const std::string& why) {
    core_.reset();
    auto hs = std::move(handlers_);
    handlers_.clear();
    for (auto& [id, p] : hs) {
      if (p.slot.is_connected()) p.slot.clear();
      complete(std::move(p.handler), std::make_exception_ptr(QueueError(why)), {});
    }
  }

  void kick() {
    if (state_ == State::connected) {
      if (core_.has_output()) write_signal_.cancel();
    } else if (state_ == State::idle) {
      state_ = State::connecting;
      asio::co_spawn(ex_, run(shared_from_this()), asio::detached);
    }
  }

  void lost(std::uint64_t gen, const std::string& why) {
    if (gen != gen_ || state_ != State::connected) return;
    state_ = State::idle;
    boost::system::error_code ig;
    sock_.close(ig);
    write_signal_.cancel();
    next_attempt_ = Clock::now();  // the first reconnect is immediate; backoff if it fails
    fail_all(prefix() + "connection lost (" + why + ")");
  }

  void close() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    ++gen_;
    boost::system::error_code ig;
    sock_.close(ig);
    write_signal_.cancel();
    backoff_timer_.cancel();
    connect_timer_.cancel();
    fail_all(prefix() + "connection closed");
  }

  // Connects, authenticates, selects the database. Throws std::exception with the cause.
  asio::awaitable<void> connect_and_handshake() {
    tcp::resolver resolver(ex_);
    std::weak_ptr<Impl> w = weak_from_this();
    connect_timer_.expires_after(std::chrono::seconds(5));
    connect_timer_.async_wait([w](boost::system::error_code ec) {
      if (ec) return;
      if (auto s = w.lock(); s && s->state_ == State::connecting) {
        boost::system::error_code ig;
        s->sock_.close(ig);
      }
    });
    auto [rec, results] =
        co_await resolver.async_resolve(ep_.host, std::to_string(ep_.port), asio::as_tuple(asio::use_awaitable));
    if (rec) throw std::runtime_error("cannot resolve " + ep_.host + " (" + rec.message() + ")");
    if (state_ != State::connecting) throw std::runtime_error("connection closed");
    auto [cec, endpoint] = co_await asio::async_connect(sock_, results, asio::as_tuple(asio::use_awaitable));
    if (cec) {
      if (cec == asio::error::operation_aborted) throw std::runtime_error("connect timed out or closed");
      throw std::runtime_error("cannot connect (" + cec.message() + ")");
    }
    sock_.set_option(tcp::no_delay(true));

    std::vector<std::vector<std::string>> cmds;
    if (!ep_.password.empty()) {
      if (ep_.username.empty())
        cmds.push_back({"AUTH", ep_.password});
      else
        cmds.push_back({"AUTH", ep_.username, ep_.password});
    }
    if (ep_.db != 0) cmds.push_back({"SELECT", std::to_string(ep_.db)});
    if (!name_.empty()) cmds.push_back({"CLIENT", "SETNAME", name_});
    cmds.push_back({"PING"});
    std::string out;
    for (auto& c : cmds) out += format_command(c);
    auto [wec, wn] = co_await asio::async_write(sock_, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
    if (wec) throw std::runtime_error("cannot write (" + wec.message() + ")");
    RespReader reader;
    std::array<char, 4096> buf;
    std::size_t got = 0;
    std::string first_error;
    while (got < cmds.size()) {
      auto [ec, n] = co_await sock_.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) throw std::runtime_error("connection closed during handshake (" + ec.message() + ")");
      reader.feed({buf.data(), n});
      while (auto v = reader.next()) {
        if (v->is_error() && first_error.empty()) first_error = v->str;
        ++got;
      }
    }
    connect_timer_.cancel();
    if (!first_error.empty()) throw std::runtime_error(first_error);
  }

  static asio::awaitable<void> run(std::shared_ptr<Impl> self) { co_await self->run_impl(); }

  asio::awaitable<void> run_impl() {
    auto keep = shared_from_this();
    if (Clock::now() < next_attempt_) {
      backoff_timer_.expires_at(next_attempt_);
      co_await backoff_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (state_ != State::connecting) co_return;
    std::string err;
    try {
      co_await connect_and_handshake();
    } catch (const std::exception& e) {
      err = e.what();
    }
    if (state_ != State::connecting) {  // closed meanwhile
      boost::system::error_code ig;
      sock_.close(ig);
      co_return;
    }
    if (!err.empty()) {
      connect_timer_.cancel();
      boost::system::error_code ig;
      sock_.close(ig);
      state_ = State::idle;
      backoff_ = backoff_.count() == 0 ? std::chrono::milliseconds(100)
                                       : std::min(backoff_ * 2, std::chrono::milliseconds(2000));
      next_attempt_ = Clock::now() + backoff_;
      fail_all(prefix() + err);
      co_return;
    }
    state_ = State::connected;
    backoff_ = std::chrono::milliseconds(0);
    auto gen = ++gen_;
    asio::co_spawn(ex_, reader(keep, gen), asio::detached);
    co_await writer(gen);
  }

  static asio::awaitable<void> reader(std::shared_ptr<Impl> self, std::uint64_t gen) {
    std::array<char, 16384> buf;
    while (self->gen_ == gen && self->state_ == State::connected) {
      auto [ec, n] = co_await self->sock_.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) {
        self->lost(gen, ec == asio::error::eof ? std::string("closed by server") : ec.message());
        co_return;
      }
      if (self->gen_ != gen) co_return;
      try {
        self->core_.feed({buf.data(), n});
      } catch (const std::exception& e) {
        self->lost(gen, e.what());
        co_return;
      }
      while (auto c = self->core_.pop_completion()) self->deliver(std::move(*c));
    }
  }

  asio::awaitable<void> writer(std::uint64_t gen) {
    while (gen_ == gen && state_ == State::connected) {
      if (core_.has_output()) {
        auto out = core_.take_output();
        auto [ec, n] = co_await asio::async_write(sock_, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
        if (ec) {
          lost(gen, ec.message());
          co_return;
        }
      } else {
        write_signal_.expires_at(Clock::time_point::max());
        co_await write_signal_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    }
  }

  struct Initiate {
    std::shared_ptr<Impl> self;
    std::size_t n;
    template <class H>
    void operator()(H&& handler, std::string bytes) const {
      self->start(std::move(bytes), n, Handler(std::forward<H>(handler)));
    }
  };

  // Not a coroutine itself: returns the operation's awaitable directly (g++ 12 frees a
  // coroutine frame early around `co_return co_await async_initiate(...)`).
  asio::awaitable<std::vector<RespValue>> submit(std::string bytes, std::size_t n) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, std::vector<RespValue>)>(
        Initiate{shared_from_this(), n}, asio::use_awaitable, std::move(bytes));
  }
};

Connection::Connection(asio::any_io_executor ex, Endpoint ep, std::string client_name)
    : impl_(std::make_shared<Impl>(ex, std::move(ep), std::move(client_name))) {}

Connection::~Connection() { impl_->close(); }

Task<void> Connection::connect() {
  if (impl_->state_ == Impl::State::connected) co_return;
  std::vector<std::string> ping{"PING"};
  auto bytes = format_command(ping);
  auto r = co_await impl_->submit(std::move(bytes), 1);
  (void)r;
}

Task<RespValue> Connection::exec(std::vector<std::string> args) {
  auto r = co_await impl_->submit(format_command(args), 1);
  co_return std::move(r.front());
}

Task<std::vector<RespValue>> Connection::exec_many(std::vector<std::vector<std::string>> cmds) {
  if (cmds.empty()) co_return std::vector<RespValue>{};
  std::string out;
  for (auto& c : cmds) out += format_command(c);
  co_return co_await impl_->submit(std::move(out), cmds.size());
}

void Connection::close() { impl_->close(); }
bool Connection::connected() const { return impl_->state_ == Impl::State::connected; }
const Endpoint& Connection::endpoint() const { return impl_->ep_; }

}  // namespace penguiflow::queue::redis
