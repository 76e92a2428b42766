#include "wait_queue.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace penguiflow::detail {

namespace asio = boost::asio;
using boost::system::error_code;

void WaitQueue::complete(Waiter w, error_code ec) {
  if (w.slot.is_connected()) w.slot.clear();
  // Posted with the waiter's own executor: any_completion_handler's associated executor
  // cannot take blocking.never in Asio 1.81.
  asio::post(w.executor, [h = std::move(w.handler), ec]() mutable { std::move(h)(ec); });
}

WaitQueue::~WaitQueue() {
  // Owners wake every waiter before destruction; anything left is completed with an
  // error so no coroutine is left suspended forever.
  notify_all();
}

template <class Handler>
void WaitQueue::enqueue(Handler handler) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  auto ex = asio::get_associated_executor(handler);
  auto it = waiters_.emplace(waiters_.end(), Waiter{std::move(handler), std::move(ex), slot});
  if (slot.is_connected()) {
    slot.assign([this, it](asio::cancellation_type) {
      Waiter w = std::move(*it);
      waiters_.erase(it);
      complete(std::move(w), asio::error::operation_aborted);
    });
  }
}

asio::awaitable<void> WaitQueue::wait() {
  return asio::async_initiate<const asio::use_awaitable_t<>, void(error_code)>(
      [this](auto handler) { enqueue(std::move(handler)); }, asio::use_awaitable);
}

asio::awaitable<void> WaitQueue::wait(error_code& ec) {
  ec = {};
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  return asio::async_initiate<decltype(token), void(error_code)>(
      [this](auto handler) { enqueue(std::move(handler)); }, token);
}

asio::awaitable<void> WaitQueue::wait(error_code& ec, asio::cancellation_slot slot) {
  ec = {};
  auto token = asio::bind_cancellation_slot(slot, asio::redirect_error(asio::use_awaitable, ec));
  return asio::async_initiate<decltype(token), void(error_code)>(
      [this](auto handler) { enqueue(std::move(handler)); }, token);
}

void WaitQueue::notify_one() {
  if (waiters_.empty()) return;
  Waiter w = std::move(waiters_.front());
  waiters_.pop_front();
  complete(std::move(w), {});
}

void WaitQueue::notify_all() {
  while (!waiters_.empty()) notify_one();
}

}  // namespace penguiflow::detail
