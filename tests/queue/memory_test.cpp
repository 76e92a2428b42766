// memory:// backend: the conformance suite, plus what only memory does.
#include "queue/conformance.hpp"
#include "support/async_test.hpp"

#include <penguiflow/backends/memory.hpp>

#include <map>

namespace penguiflow::queue::testing {
namespace {

// Handles opened with the same namespace share one store, like two connections to the
// same database; raw writes go to that store.
std::map<std::string, std::weak_ptr<MemoryStore>>& stores() {
  static std::map<std::string, std::weak_ptr<MemoryStore>> m;
  return m;
}

std::shared_ptr<MemoryStore> store_for(const std::string& ns) {
  auto& w = stores()[ns];
  auto s = w.lock();
  if (!s) {
    s = make_memory_store();
    w = s;
  }
  return s;
}

QueueFactory make_memory_factory() {
  QueueFactory f;
  f.name = "memory";
  f.open = [](boost::asio::any_io_executor ex, QueueConfig cfg) -> Task<std::unique_ptr<JobQueue>> {
    auto store = store_for(cfg.namespace_);
    co_return make_memory_queue(ex, std::move(cfg), std::move(store));
  };
  f.write_raw = [](boost::asio::any_io_executor, const QueueConfig& cfg, std::string id,
                   std::string raw) -> Task<void> {
    auto store = stores()[cfg.namespace_].lock();
    if (!store) throw std::runtime_error("write_raw before open");
    write_raw_job(*store, std::move(id), std::move(raw));
    co_return;
  };
  return f;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Memory, QueueConformance, ::testing::Values(make_memory_factory()),
                         [](auto& i) { return i.param.name; });

TEST(MemoryQueue, OpenRejectsOtherUrls) {
  EXPECT_THROW(penguiflow::testing::run_async(
                   [] () -> Task<void> {
                     auto ex = co_await boost::asio::this_coro::executor;
                     std::string url = "memory://x:secret@host";
                     co_await open_memory_queue(ex, url);
                   }()),
               QueueError);
}

TEST(MemoryQueue, EveryOpenIsAFreshQueue) {
  penguiflow::testing::run_async([]() -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    std::string url = "memory://";
    auto a = co_await open_memory_queue(ex, url);
    auto b = co_await open_memory_queue(ex, url);
    NewJob nj;
    nj.flow = "f";
    nj.tenant = "t";
    co_await a->enqueue(nj);
    auto ca = co_await a->counts();
    auto cb = co_await b->counts();
    EXPECT_EQ(ca.by_state["queued"], 1);
    EXPECT_EQ(cb.by_state["queued"], 0);
    co_await a->close();
    co_await b->close();
  }());
}

}  // namespace penguiflow::queue::testing
