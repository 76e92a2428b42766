// open_queue(): picks the backend from the URL scheme.
#include <penguiflow/backends/memory.hpp>
#include <penguiflow/backends/sqlite.hpp>
#ifdef PENGUIFLOW_HAVE_POSTGRES
#include <penguiflow/backends/postgres.hpp>
#endif
#ifdef PENGUIFLOW_HAVE_REDIS
#include <penguiflow/backends/redis.hpp>
#endif

#include <algorithm>
#include <cctype>

namespace penguiflow::queue {

namespace {
constexpr const char* kBuilt = "memory://, sqlite://"
#ifdef PENGUIFLOW_HAVE_POSTGRES
                               ", postgresql://"
#endif
#ifdef PENGUIFLOW_HAVE_REDIS
                               ", redis://"
#endif
    ;
}  // namespace

Task<std::unique_ptr<JobQueue>> open_queue(boost::asio::any_io_executor ex, std::string url, QueueConfig config) {
  auto colon = url.find("://");
  std::string scheme = colon == std::string::npos ? std::string() : url.substr(0, colon);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // Each branch awaits a named call: no temporaries built inside co_await (g++ 12).
  if (scheme == "memory") {
    auto q = co_await open_memory_queue(std::move(ex), std::move(url), std::move(config));
    co_return q;
  }
  if (scheme == "sqlite") {
    auto q = co_await open_sqlite_queue(std::move(ex), std::move(url), std::move(config));
    co_return q;
  }
#ifdef PENGUIFLOW_HAVE_POSTGRES
  if (scheme == "postgresql" || scheme == "postgres") {
    auto q = co_await open_postgres_queue(std::move(ex), std::move(url), std::move(config));
    co_return q;
  }
#endif
#ifdef PENGUIFLOW_HAVE_REDIS
  if (scheme == "redis" || scheme == "rediss") {
    auto q = co_await open_redis_queue(std::move(ex), std::move(url), std::move(config));
    co_return q;
  }
#endif
  if (scheme.empty())
    throw QueueError("cannot open queue " + redact_url(url) + ": not a URL (expected scheme://...; this build supports " +
                     kBuilt + ")");
  throw QueueError("cannot open queue " + redact_url(url) + ": unsupported scheme '" + scheme +
                   "://' (this build supports " + kBuilt + ")");
}

Task<std::unique_ptr<JobQueue>> open_queue(boost::asio::any_io_executor ex, std::string url) {
  return open_queue(std::move(ex), std::move(url), QueueConfig{});
}

}  // namespace penguiflow::queue
