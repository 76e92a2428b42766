// Runs a coroutine to completion on a fresh io_context under a hard time bound, so a
// broken test fails instead of hanging CI. Exceptions from the coroutine are rethrown.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <stdexcept>

namespace penguiflow::testing {

template <class T>
T run_async(boost::asio::awaitable<T> work, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
  boost::asio::io_context io;
  auto fut = boost::asio::co_spawn(io, std::move(work), boost::asio::use_future);
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
         std::chrono::steady_clock::now() < deadline) {
    if (io.run_one_until(deadline) == 0) break;
  }
  if (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    // Cancel what is left and drain, so sanitizers see no leak, then fail loudly.
    io.stop();
    throw std::runtime_error("async test exceeded its time bound");
  }
  return fut.get();
}

/// Polls `pred` (cheaply, on the loop) until true or the bound passes. For waiting on a
/// condition another process or thread produces; never to prove ordering.
template <class Pred>
boost::asio::awaitable<bool> eventually(Pred pred, std::chrono::milliseconds bound = std::chrono::seconds(10),
                                        std::chrono::milliseconds step = std::chrono::milliseconds(5));

}  // namespace penguiflow::testing

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

template <class Pred>
boost::asio::awaitable<bool> penguiflow::testing::eventually(Pred pred, std::chrono::milliseconds bound,
                                                             std::chrono::milliseconds step) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  while (true) {
    if (co_await pred()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer.expires_after(step);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}
