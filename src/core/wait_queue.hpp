// A FIFO of suspended coroutines on one executor: the one suspension primitive the
// runtime's queues are built from. Single-threaded (the flow's thread); waits honour
// per-operation cancellation (a cancelled wait throws system_error(operation_aborted)).
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <list>

namespace penguiflow::detail {

class WaitQueue {
 public:
  WaitQueue() = default;
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;
  ~WaitQueue();

  /// Suspends until notified or cancelled. Resumption is posted (never inline).
  boost::asio::awaitable<void> wait();
  /// Like wait(), but a cancelled wait sets `ec` (operation_aborted) instead of throwing:
  /// for waits that are cancelled routinely (node workers at stop()), where unwinding an
  /// exception through the awaitable frames costs microseconds.
  boost::asio::awaitable<void> wait(boost::system::error_code& ec);
  /// Like wait(ec), cancelled through `slot` instead of the awaiting coroutine's own
  /// cancellation state (a bounded wait forwards both its timer and its caller to it).
  boost::asio::awaitable<void> wait(boost::system::error_code& ec, boost::asio::cancellation_slot slot);
  void notify_one();
  void notify_all();
  bool empty() const { return waiters_.empty(); }

 private:
  struct Waiter {
    boost::asio::any_completion_handler<void(boost::system::error_code)> handler;
    boost::asio::any_io_executor executor;  // where the waiter resumes
    boost::asio::cancellation_slot slot;    // cleared before completion
  };
  static void complete(Waiter w, boost::system::error_code ec);
  template <class Handler>
  void enqueue(Handler handler);
  std::list<Waiter> waiters_;
};

}  // namespace penguiflow::detail
