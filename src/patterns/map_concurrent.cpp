// map_concurrent's engine: a fixed set of runners pulling indices (C13).
#include <penguiflow/patterns/map_concurrent.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>

namespace penguiflow::detail {

namespace asio = boost::asio;

namespace {

struct Pool {
  std::size_t n = 0;
  std::size_t next = 0;      // next index to start
  std::size_t running = 0;   // runners alive
  bool stop = false;         // an error or a cancellation: start nothing more
  std::exception_ptr first_error;
  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
  std::function<Task<void>(std::size_t)> job;
  std::optional<asio::steady_timer> done;  // cancelled when the last runner ends

  void cancel_all() {
    stop = true;
    for (auto& s : signals) s->emit(asio::cancellation_type::terminal);
  }
};

Task<void> runner(Pool& pool) {
  while (!pool.stop && pool.next < pool.n) {
    std::size_t i = pool.next++;
    co_await pool.job(i);
  }
}

}  // namespace

Task<void> run_bounded(std::size_t n, std::size_t max_concurrency, std::function<Task<void>(std::size_t)> job) {
  if (n == 0) co_return;
  auto ex = co_await asio::this_coro::executor;
  // Shared with the runners' completion handlers; every runner ends before we return,
  // so the references the jobs hold into the caller's frame stay valid.
  auto pool = std::make_shared<Pool>();
  pool->n = n;
  pool->job = std::move(job);
  pool->done.emplace(ex, asio::steady_timer::time_point::max());
  const std::size_t m = std::min(n, max_concurrency);
  for (std::size_t r = 0; r < m; ++r) pool->signals.push_back(std::make_unique<asio::cancellation_signal>());
  pool->running = m;
  for (std::size_t r = 0; r < m; ++r) {
    asio::co_spawn(ex, runner(*pool),
                   asio::bind_cancellation_slot(pool->signals[r]->slot(), [pool](std::exception_ptr e) {
                     if (e && !pool->first_error) {
                       pool->first_error = e;
                       pool->cancel_all();
                     }
                     if (--pool->running == 0) pool->done->cancel();
                   }));
  }
  bool caller_cancelled = false;
  while (pool->running > 0) {
    co_await pool->done->async_wait(asio::as_tuple(asio::use_awaitable));
    if (pool->running > 0) {
      // Woken while runners are alive: our caller was cancelled. Cancel them and wait.
      caller_cancelled = true;
      pool->cancel_all();
      co_await asio::this_coro::reset_cancellation_state();
    }
  }
  if (pool->first_error && !caller_cancelled) std::rethrow_exception(pool->first_error);
  if (caller_cancelled) throw boost::system::system_error(asio::error::operation_aborted, "map_concurrent cancelled");
}

}  // namespace penguiflow::detail
