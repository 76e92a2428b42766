// Backend implementation helper (not for users): fetchers that wait for work on one
// executor, woken by notify_all() or by their own deadline. Include only from .cpp files
// (it pulls in Asio timers).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

namespace penguiflow::queue::detail {

/// Not thread-safe: every call on the executor the waiters run on.
class WaitSet {
 public:
  /// Suspends until notify_all() or `until`. Throws boost::system::system_error
  /// (operation_aborted) when the awaiting operation is cancelled.
  Task<void> wait_until(std::chrono::steady_clock::time_point until) {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    timer.expires_at(until);
    timers_.push_back(&timer);
    struct Remove {
      std::vector<boost::asio::steady_timer*>& v;
      boost::asio::steady_timer* t;
      ~Remove() { v.erase(std::remove(v.begin(), v.end(), t), v.end()); }
    } remove{timers_, &timer};
    boost::system::error_code ec;
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    auto cs = co_await boost::asio::this_coro::cancellation_state;
    if (cs.cancelled() != boost::asio::cancellation_type::none)
      throw boost::system::system_error(boost::asio::error::operation_aborted);
  }

  /// Wakes every current waiter.
  void notify_all() {
    for (auto* t : timers_) t->cancel();
  }

  bool empty() const { return timers_.empty(); }

 private:
  std::vector<boost::asio::steady_timer*> timers_;
};

/// steady_clock time point `seconds` (wall-clock difference) from now, clamped to >= now.
inline std::chrono::steady_clock::time_point steady_after(double seconds) {
  auto now = std::chrono::steady_clock::now();
  if (!(seconds > 0)) return now;
  if (seconds > 86400) seconds = 86400;
  return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace penguiflow::queue::detail
