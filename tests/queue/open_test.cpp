// open_queue(): dispatch by scheme and clear errors for what it cannot open.
#include "support/async_test.hpp"

#include <penguiflow/queue/queue.hpp>

#include <filesystem>

namespace penguiflow::queue {
namespace {

std::string open_error(std::string url) {
  try {
    penguiflow::testing::run_async([](std::string u) -> Task<void> {
      auto ex = co_await boost::asio::this_coro::executor;
      auto q = co_await open_queue(ex, u);
      co_await q->close();
    }(url));
  } catch (const QueueError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OpenQueue, OpensMemoryAndSqlite) {
  auto path = (std::filesystem::temp_directory_path() / ("pf-open-test-" + std::to_string(::getpid()) + ".db")).string();
  penguiflow::testing::run_async([](std::string p) -> Task<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    std::string mem = "memory://";
    auto m = co_await open_queue(ex, mem);
    EXPECT_EQ(m->describe(), "memory://");
    co_await m->close();
    std::string url = "sqlite://" + p;
    auto s = co_await open_queue(ex, url);
    EXPECT_EQ(s->describe(), url);
    co_await s->close();
  }(path));
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
}

TEST(OpenQueue, UnknownSchemeNamesTheRedactedUrl) {
  auto msg = open_error("ftp://bob:hunter2@host/q");
  EXPECT_NE(msg.find("ftp://bob:***@host/q"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("hunter2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported scheme"), std::string::npos) << msg;
  EXPECT_NE(open_error("just-a-path.db").find("not a URL"), std::string::npos);
}

}  // namespace penguiflow::queue
