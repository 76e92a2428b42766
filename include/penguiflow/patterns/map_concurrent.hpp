// map_concurrent (C13): apply an async function to every item with bounded concurrency.
//
//   std::vector<std::string> urls = ...;
//   std::vector<Page> pages = co_await map_concurrent(urls, [&](const std::string& u) -> Task<Page> {
//     co_return co_await fetch_page(u);
//   }, 4);
#pragma once

#include <penguiflow/core/errors.hpp>
#include <penguiflow/core/node.hpp>

#include <cstddef>
#include <functional>
#include <optional>
#include <ranges>
#include <type_traits>
#include <vector>

namespace penguiflow {

namespace detail {

/// Runs job(0) .. job(n-1) on the caller's executor, at most `max_concurrency` at a time,
/// in index order of start. The first exception cancels the jobs still running (they
/// finish or are cancelled first) and is rethrown. Cancelling the caller cancels them all.
Task<void> run_bounded(std::size_t n, std::size_t max_concurrency, std::function<Task<void>(std::size_t)> job);

template <class R, class Fn, class Item>
Task<void> map_one(Fn& fn, Item& item, std::optional<R>& slot) {
  slot.emplace(co_await fn(item));
}

}  // namespace detail

/// Applies `fn` (an async function of one item: `Task<R> fn(Item&)` or `(const Item&)`)
/// to every item, never more than `max_concurrency` in flight, and returns the results
/// in input order. Runs on the caller's executor, which must be single-threaded (a
/// flow's is). If one call throws, the calls still running are cancelled and awaited,
/// then that first exception is rethrown; cancelling the caller cancels every call.
/// Throws FlowUsageError when max_concurrency < 1.
template <std::ranges::random_access_range Items, class Fn>
auto map_concurrent(Items items, Fn fn, std::size_t max_concurrency)
    -> Task<std::vector<typename detail::awaitable_result<std::invoke_result_t<Fn&, std::ranges::range_reference_t<Items>>>::type>> {
  using R = typename detail::awaitable_result<std::invoke_result_t<Fn&, std::ranges::range_reference_t<Items>>>::type;
  static_assert(!std::is_void_v<R>, "map_concurrent: fn must return Task<R> with a non-void R");
  if (max_concurrency < 1) throw FlowUsageError("map_concurrent: max_concurrency must be >= 1");
  const std::size_t n = std::ranges::size(items);
  std::vector<std::optional<R>> slots(n);
  std::function<Task<void>(std::size_t)> job = [&](std::size_t i) {
    return detail::map_one<R>(fn, items[i], slots[i]);
  };
  co_await detail::run_bounded(n, max_concurrency, std::move(job));
  std::vector<R> out;
  out.reserve(n);
  for (auto& s : slots) out.push_back(std::move(*s));
  co_return out;
}

}  // namespace penguiflow
