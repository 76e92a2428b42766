// redis:// backend against a real server (PENGUIFLOW_TEST_REDIS_URL): the shared
// conformance suite, plus what only Redis has — NOSCRIPT reload, hash-tagged keys,
// redis-cli interop (Q10), connection errors, WRONGPASS and idle cost on a private
// redis-server this test starts itself, reconnect after CLIENT KILL, pipelining.
#include "queue/conformance.hpp"
#include "support/async_test.hpp"

#include <penguiflow/backends/redis.hpp>

#include "connection.hpp"
#include "scripts.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace penguiflow::queue::testing {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using redis::Connection;
using redis::parse_redis_url;
using redis::RespValue;

const char* redis_url() {
  const char* u = std::getenv("PENGUIFLOW_TEST_REDIS_URL");
  return (u && *u) ? u : nullptr;
}

constexpr const char* kNoServer =
    "PENGUIFLOW_TEST_REDIS_URL is not set (scripts/test-servers.sh starts a Redis and sets it)";

// What an outside producer does (docs/wire-format.md#redis): the document in the job
// hash's `doc` field, the id in the scheduled set scored by run_at (0 = now), and a
// wake-up token for idle workers.
Task<void> write_raw_job(asio::any_io_executor ex, const std::string& url, const QueueConfig& cfg, std::string id,
                         std::string raw) {
  redis::QueueKeys keys(cfg.namespace_);
  std::string score = "0";
  boost::system::error_code ec;
  auto v = json::parse(raw, ec);
  if (!ec && v.is_object())
    if (auto* r = v.as_object().if_contains("run_at"); r && r->is_number()) score = json::serialize(*r);
  Connection c(ex, parse_redis_url(url));
  std::vector<std::vector<std::string>> cmds{{"HSET", keys.job(id), "doc", raw},
                                             {"ZADD", keys.scheduled, score, id},
                                             {"LPUSH", keys.wake, "1"}};
  auto replies = co_await c.exec_many(std::move(cmds));
  for (auto& r : replies)
    if (r.is_error()) throw std::runtime_error("write_raw: " + r.str);
  c.close();
}

QueueFactory make_redis_factory() {
  QueueFactory f;
  f.name = "redis";
  if (!redis_url()) {
    f.available = false;
    f.skip_reason = kNoServer;
  }
  f.open = [](asio::any_io_executor ex, QueueConfig cfg) -> Task<std::unique_ptr<JobQueue>> {
    co_return co_await open_redis_queue(ex, redis_url(), std::move(cfg));
  };
  f.write_raw = [](asio::any_io_executor ex, const QueueConfig& cfg, std::string id, std::string raw) -> Task<void> {
    co_await write_raw_job(ex, redis_url(), cfg, std::move(id), std::move(raw));
  };
  return f;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Redis, QueueConformance, ::testing::Values(make_redis_factory()),
                         [](auto& i) { return i.param.name; });

namespace {

// ---- helpers ---------------------------------------------------------------------------

struct ProcessResult {
  int status = -1;
  std::string out;
};

/// Runs a program (no shell) and returns its exit status and standard output.
ProcessResult run_process(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  ProcessResult r;
  if (rc != 0) {
    close(fds[0]);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

bool have_program(const std::string& name) {
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/bin/"})
    if (std::filesystem::exists(std::string(dir) + name)) return true;
  return false;
}

int free_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(s);
  return port;
}

bool port_accepts(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(s);
  return ok;
}

/// A redis-server of this test's own, in a temporary directory on a free loopback port;
/// stopped (by its pid) and removed on destruction.
class PrivateRedis {
 public:
  explicit PrivateRedis(std::vector<std::string> extra = {}, int port = 0) {
    char tmpl[] = "/tmp/pf-redis-test-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = port ? port : free_port();
    std::vector<std::string> argv{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                  "--dir", dir_, "--save", "", "--appendonly", "no", "--logfile",
                                  dir_ + "/redis.log"};
    for (auto& e : extra) argv.push_back(e);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawnp(&pid_, "redis-server", nullptr, nullptr, args.data(), environ) != 0)
      throw std::runtime_error("cannot start redis-server");
    // Wait (bounded) until it accepts connections.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!port_accepts(port_)) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("private redis-server did not start");
      std::this_thread::sleep_for(20ms);
    }
  }
  ~PrivateRedis() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int port() const { return port_; }
  std::string url(const std::string& password = {}) const {
    return "redis://" + (password.empty() ? std::string() : ":" + password + "@") + "127.0.0.1:" +
           std::to_string(port_) + "/0";
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

std::string unique_ns() { return unique_namespace(); }

QueueConfig config_for(std::string ns) {
  QueueConfig c;
  c.namespace_ = std::move(ns);
  return c;
}

NewJob a_job(std::string tenant = "acme") {
  NewJob j;
  j.flow = "quickstart";
  j.tenant = std::move(tenant);
  j.payload = json::object{{"n", 1}};
  return j;
}

FetchRequest req(int n = 1, std::chrono::milliseconds wait = 2s) {
  FetchRequest r;
  r.max_jobs = n;
  r.wait = wait;
  r.owner = "redis-test";
  return r;
}

Task<RespValue> raw(Connection& c, std::vector<std::string> args) {
  auto r = co_await c.exec(std::move(args));
  if (r.is_error()) throw std::runtime_error("redis: " + r.str);
  co_return r;
}

std::int64_t info_field(const std::string& info, const std::string& name) {
  auto pos = info.find(name + ":");
  if (pos == std::string::npos) return -1;
  return std::stoll(info.substr(pos + name.size() + 1));
}

/// `calls=` of one command in INFO commandstats (0 when never called).
std::int64_t command_calls(const std::string& stats, const std::string& cmd) {
  auto key = "cmdstat_" + cmd + ":calls=";
  auto pos = stats.find(key);
  return pos == std::string::npos ? 0 : std::stoll(stats.substr(pos + key.size()));
}

/// Finds the id of the client named `name` in CLIENT LIST.
std::string client_id(const std::string& list, const std::string& name) {
  std::istringstream in(list);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" name=" + name + " ") == std::string::npos) continue;
    auto p = line.find("id=");
    return line.substr(p + 3, line.find(' ', p) - p - 3);
  }
  return {};
}

class RedisQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!redis_url()) GTEST_SKIP() << kNoServer;
    url_ = redis_url();
  }
  std::string url_;
};

// ---- tests -----------------------------------------------------------------------------

TEST_F(RedisQueueTest, ScriptsAreReloadedAfterNoscript) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, url_, config_for(unique_ns()));
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::string> cmd1{"SCRIPT", "FLUSH"};
    co_await raw(admin, std::move(cmd1));
    auto r = co_await q->enqueue(a_job());  // EVALSHA -> NOSCRIPT -> SCRIPT LOAD -> EVALSHA
    std::vector<std::string> cmd2{"SCRIPT", "FLUSH"};
    co_await raw(admin, std::move(cmd2));
    auto got = co_await q->fetch(req());
    EXPECT_EQ(got.size(), 1u);
    if (!got.empty()) {
      EXPECT_EQ(got[0].job.id, r.id);
      std::vector<std::string> cmd3{"SCRIPT", "FLUSH"};
      co_await raw(admin, std::move(cmd3));
      EXPECT_EQ(co_await q->complete(got[0].lease, nullptr, 0.1), Settle::ok);
    }
    admin.close();
    co_await q->close();
  }());
}

// The in-flight hash and sorted set carry one long entry that keeps them out of Redis's
// listpack encoding (where every lookup is a linear scan); it is invisible to the API:
// it is never counted, listed, expired or redelivered.
TEST_F(RedisQueueTest, InFlightSetsStayHashTablesAndTheirKeepEntryIsInvisible) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    co_await q->enqueue(a_job());
    co_await q->enqueue(a_job());
    auto got = co_await q->fetch(req(1));
    EXPECT_EQ(got.size(), 1u);
    if (got.size() != 1u) co_return;
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::string> enc1{"OBJECT", "ENCODING", "{" + ns + "}:leases"};
    EXPECT_EQ((co_await raw(admin, std::move(enc1))).str, "hashtable");
    std::vector<std::string> enc2{"OBJECT", "ENCODING", "{" + ns + "}:leased"};
    EXPECT_EQ((co_await raw(admin, std::move(enc2))).str, "skiplist");
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["running"], 1);
    EXPECT_EQ(c.by_state["queued"], 1);
    EXPECT_EQ(co_await q->complete(got[0].lease, nullptr, 0.0), Settle::ok);
    c = co_await q->counts();
    EXPECT_EQ(c.by_state["running"], 0);
    auto d = co_await q->depth();
    EXPECT_EQ(d.by_state["running"], 0);
    ListFilter running{JobState::running, std::nullopt, 100};
    EXPECT_TRUE((co_await q->list(std::move(running))).empty());
    // Nothing in flight: an empty fetch neither returns nor waits for the keep entry.
    auto one = co_await q->fetch(req(5));
    EXPECT_EQ(one.size(), 1u);
    auto none = co_await q->fetch(req(5, 50ms));
    EXPECT_TRUE(none.empty());
    admin.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, EveryKeyOfAQueueSharesItsHashTag) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    NewJob keyed = a_job();
    keyed.idempotency_key = "k1";
    co_await q->enqueue(keyed);
    NewJob later = a_job();
    later.delay_s = 60;
    co_await q->enqueue(later);
    co_await q->enqueue(a_job());
    auto got = co_await q->fetch(req(2));
    EXPECT_EQ(got.size(), 2u);
    if (got.size() == 2) {
      co_await q->complete(got[0].lease, nullptr, 0.0);
      co_await q->fail(got[1].lease, "x", nullptr);
    }
    co_await q->record_effect("e", json::value(1));
    Connection admin(ex, parse_redis_url(url_));
    std::set<std::string> keys;
    std::string cursor = "0";
    do {
      std::vector<std::string> cmd4{"SCAN", cursor, "MATCH", "*" + ns + "*", "COUNT", "1000"};
      auto r = co_await raw(admin, std::move(cmd4));
      cursor = r.elements[0].str;
      for (auto& k : r.elements[1].elements) keys.insert(k.str);
    } while (cursor != "0");
    EXPECT_GE(keys.size(), 9u);  // 3 jobs, ready/scheduled/done/dead/idem/counts/seq/effects...
    for (auto& k : keys) EXPECT_EQ(k.rfind("{" + ns + "}:", 0), 0u) << k;
    admin.close();
    co_await q->close();
  }());
}

// A job left running by a version that kept the lease in the job hash (state 'running',
// lease_owner / lease_token / lease_expires_at) is redelivered once its lease expires,
// with its attempts kept and the counts moved back (docs/wire-format.md, layout change).
TEST_F(RedisQueueTest, JobLeasedByTheOldLayoutIsRedeliveredAfterExpiry) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    auto r = co_await q->enqueue(a_job());
    auto got = co_await q->fetch(req(1));
    EXPECT_EQ(got.size(), 1u);
    if (got.size() != 1) co_return;
    // Rewrite it as the old layout had it, with a lease that expired a second ago.
    redis::QueueKeys keys(ns);
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::vector<std::string>> cmds{
        {"HDEL", keys.leases, r.id},
        {"HSET", keys.job(r.id), "state", "running", "attempts", "1", "lease_owner", "old", "lease_token", "t",
         "lease_expires_at", "1"},
        {"ZADD", keys.leased, "1", r.id}};
    auto replies = co_await admin.exec_many(std::move(cmds));
    for (auto& x : replies) EXPECT_FALSE(x.is_error()) << x.str;
    auto again = co_await q->fetch(req(1));
    EXPECT_EQ(again.size(), 1u);
    if (again.size() == 1) {
      EXPECT_EQ(again[0].job.id, r.id);
      EXPECT_EQ(again[0].job.attempts, 2);
      EXPECT_EQ(co_await q->complete(again[0].lease, nullptr, 0.1), Settle::ok);
    }
    std::vector<std::string> hg{"HGET", keys.job(r.id), "lease_token"};
    auto old_token = co_await raw(admin, std::move(hg));
    EXPECT_TRUE(old_token.is_nil());
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 1);
    EXPECT_EQ(c.by_state["running"], 0);
    EXPECT_EQ(c.by_tenant["acme"]["running"], 0);
    EXPECT_EQ(c.by_tenant["acme"]["succeeded"], 1);
    admin.close();
    co_await q->close();
  }());
}

// Succeeded jobs are appended to {ns}:succeeded; those an earlier version recorded in the
// {ns}:done sorted set are still counted, listed and purged.
TEST_F(RedisQueueTest, SucceededJobsOfTheOldSortedSetAreCountedListedAndPurged) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    std::vector<NewJob> jobs;
    for (int i = 0; i < 3; ++i) jobs.push_back(a_job());
    co_await q->enqueue_bulk(std::move(jobs));
    auto got = co_await q->fetch(req(3));
    EXPECT_EQ(got.size(), 3u);
    if (got.size() != 3u) co_return;
    for (auto& lj : got) EXPECT_EQ(co_await q->complete(lj.lease, nullptr, 0.01), Settle::ok);
    // Move the first one to the old layout: in {ns}:done, settled an hour ago.
    redis::QueueKeys keys(ns);
    const std::string old_id = got[0].job.id;
    const std::string an_hour_ago = std::to_string(unix_now() - 3600);
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::vector<std::string>> cmds{{"LREM", keys.succeeded, "0", old_id},
                                               {"ZADD", keys.done, an_hour_ago, old_id},
                                               {"HSET", keys.job(old_id), "updated_at", an_hour_ago}};
    auto replies = co_await admin.exec_many(std::move(cmds));
    for (auto& x : replies) EXPECT_FALSE(x.is_error()) << x.str;
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 3);
    ListFilter succeeded{JobState::succeeded, std::nullopt, 100};
    EXPECT_EQ((co_await q->list(succeeded)).size(), 3u);
    // Older than 10 minutes: only the old one; then everything older than now.
    EXPECT_EQ(co_await q->purge(600), 1);
    EXPECT_FALSE(co_await q->get(old_id, std::nullopt));
    EXPECT_TRUE(co_await q->get(got[1].job.id, std::nullopt));
    EXPECT_EQ(co_await q->purge(-1), 2);
    c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 0);
    EXPECT_TRUE((co_await q->list(succeeded)).empty());
    std::vector<std::string> len{"LLEN", keys.succeeded};
    EXPECT_EQ((co_await raw(admin, std::move(len))).as_int(), 0);
    admin.close();
    co_await q->close();
  }());
}

// A job completed by a worker whose clock runs ahead sits at the head of
// {ns}:succeeded with a future updated_at; purge still removes the old jobs behind it and
// keeps it (and the younger ones) in order.
TEST_F(RedisQueueTest, PurgeIsNotHeldUpByAJobStampedInTheFuture) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    std::vector<NewJob> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back(a_job());
    co_await q->enqueue_bulk(std::move(jobs));
    auto got = co_await q->fetch(req(4));
    EXPECT_EQ(got.size(), 4u);
    if (got.size() != 4u) co_return;
    for (auto& lj : got) EXPECT_EQ(co_await q->complete(lj.lease, nullptr, 0.01), Settle::ok);
    // Completion order 0, 1, 2, 3; job 0 stamped a day ahead, 1 and 2 an hour ago, 3 now.
    redis::QueueKeys keys(ns);
    const std::string ahead = std::to_string(unix_now() + 86400), old = std::to_string(unix_now() - 3600);
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::vector<std::string>> cmds{{"HSET", keys.job(got[0].job.id), "updated_at", ahead},
                                               {"HSET", keys.job(got[1].job.id), "updated_at", old},
                                               {"HSET", keys.job(got[2].job.id), "updated_at", old}};
    auto replies = co_await admin.exec_many(std::move(cmds));
    for (auto& x : replies) EXPECT_FALSE(x.is_error()) << x.str;
    EXPECT_EQ(co_await q->purge(600), 2);
    EXPECT_FALSE(co_await q->get(got[1].job.id, std::nullopt));
    EXPECT_FALSE(co_await q->get(got[2].job.id, std::nullopt));
    std::vector<std::string> range{"LRANGE", keys.succeeded, "0", "-1"};
    auto left = co_await raw(admin, std::move(range));
    EXPECT_EQ(left.elements.size(), 2u);
    if (left.elements.size() == 2u) {
      EXPECT_EQ(left.elements[0].str, got[0].job.id);
      EXPECT_EQ(left.elements[1].str, got[3].job.id);
    }
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 2);
    admin.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, JobEnqueuedWithRedisCliIsFetchedAndCompleted) {
  if (!have_program("redis-cli")) GTEST_SKIP() << "redis-cli is not installed";
  auto ep = parse_redis_url(url_);
  const std::string ns = unique_ns();
  std::vector<std::string> cli{"redis-cli", "-h", ep.host, "-p", std::to_string(ep.port), "-n", std::to_string(ep.db)};
  auto with = [&](std::vector<std::string> more) {
    auto a = cli;
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  // Exactly the commands of docs/wire-format.md#redis.
  const std::string key = "{" + ns + "}:job:cli-1";
  auto r1 = run_process(with({"HSETNX", key, "doc",
                              R"({"flow":"quickstart","tenant":"acme","payload":{"from":"redis-cli"},"priority":2})"}));
  ASSERT_EQ(r1.status, 0) << r1.out;
  auto r2 = run_process(with({"ZADD", "{" + ns + "}:scheduled", "0", "cli-1"}));
  ASSERT_EQ(r2.status, 0) << r2.out;
  auto r3 = run_process(with({"LPUSH", "{" + ns + "}:wake", "1"}));
  ASSERT_EQ(r3.status, 0) << r3.out;

  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    auto got = co_await q->fetch(req());
    EXPECT_EQ(got.size(), 1u);
    if (!got.empty()) {
      EXPECT_EQ(got[0].job.id, "cli-1");
      EXPECT_EQ(got[0].job.tenant, "acme");
      EXPECT_EQ(got[0].job.priority, 2);
      EXPECT_EQ(got[0].job.payload, json::value(json::object{{"from", "redis-cli"}}));
      EXPECT_EQ(co_await q->complete(got[0].lease, json::value("done"), 0.01), Settle::ok);
    }
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_tenant["acme"]["succeeded"], 1);
    co_await q->close();
  }());
  auto state = run_process(with({"HGET", key, "state"}));
  EXPECT_EQ(state.out, "succeeded\n");
  auto result = run_process(with({"HGET", key, "result"}));
  EXPECT_EQ(result.out, "\"done\"\n");
}

TEST_F(RedisQueueTest, UnreachableServerIsAQueueErrorWithTheRedactedUrl) {
  const std::string url = "redis://:pw-secret@127.0.0.1:" + std::to_string(free_port()) + "/0";
  try {
    penguiflow::testing::run_async([&]() -> Task<void> {
      auto q = co_await open_redis_queue(co_await asio::this_coro::executor, url, config_for(unique_ns()));
      co_await q->close();
    }());
    FAIL() << "opened an unreachable server";
  } catch (const QueueError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find("pw-secret"), std::string::npos) << msg;
    EXPECT_NE(msg.find(redact_url(url)), std::string::npos) << msg;
    EXPECT_NE(msg.find("cannot connect"), std::string::npos) << msg;
  }
}

// A queue carries its layout version; one a newer build wrote is refused (its keys would be
// misread), with the URL and both versions named; older ones are read and stamped.
TEST_F(RedisQueueTest, AQueueOfANewerLayoutIsRefusedWithBothVersionsNamed) {
  const auto ns = unique_ns();
  const std::string key = "{" + ns + "}:layout";
  auto open_error = [&]() -> std::string {
    try {
      penguiflow::testing::run_async([&]() -> Task<void> {
        auto q = co_await open_redis_queue(co_await asio::this_coro::executor, url_, config_for(ns));
        co_await q->close();
      }());
    } catch (const QueueError& e) {
      return e.what();
    }
    return {};
  };
  auto admin_cmd = [&](std::vector<std::string> args) -> std::string {
    std::string out;
    penguiflow::testing::run_async([&]() -> Task<void> {
      Connection admin(co_await asio::this_coro::executor, parse_redis_url(url_));
      auto r = co_await raw(admin, std::move(args));
      out = r.str;
      admin.close();
    }());
    return out;
  };
  EXPECT_EQ(open_error(), "");  // a new queue is stamped with this build's layout
  EXPECT_EQ(admin_cmd({"GET", key}), std::to_string(kRedisLayoutVersion));

  admin_cmd({"SET", key, std::to_string(kRedisLayoutVersion + 1)});
  auto msg = open_error();
  EXPECT_NE(msg.find(redact_url(url_)), std::string::npos) << msg;
  EXPECT_NE(msg.find("layout version " + std::to_string(kRedisLayoutVersion + 1)), std::string::npos) << msg;
  EXPECT_NE(msg.find("newer than this build knows (" + std::to_string(kRedisLayoutVersion) + ")"), std::string::npos)
      << msg;
  EXPECT_EQ(admin_cmd({"GET", key}), std::to_string(kRedisLayoutVersion + 1));  // left as it was

  admin_cmd({"SET", key, "three"});
  msg = open_error();
  EXPECT_NE(msg.find("unreadable layout version 'three'"), std::string::npos) << msg;

  admin_cmd({"SET", key, "1"});  // an older layout: read, and stamped with ours
  EXPECT_EQ(open_error(), "");
  EXPECT_EQ(admin_cmd({"GET", key}), std::to_string(kRedisLayoutVersion));
  admin_cmd({"DEL", key});
}

// While the server cannot be reached, connection attempts back off: 100 ms after the first
// failure, doubling, at most 2 s apart (docs/backends.md). Each request waits for the next
// attempt and fails with it, so the gaps between failures are the backoff. Lower bounds
// only (a slow machine can only widen them), plus a cap far below what doubling would reach.
TEST(RedisReconnect, AttemptsBackOffFrom100msDoublingTo2s) {
  const std::string url = "redis://127.0.0.1:" + std::to_string(free_port()) + "/0";
  std::vector<double> failed_at;
  penguiflow::testing::run_async([&]() -> Task<void> {
    Connection c(co_await asio::this_coro::executor, parse_redis_url(url));
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 8; ++i) {
      bool failed = false;
      try {
        std::vector<std::string> ping{"PING"};
        co_await c.exec(std::move(ping));
      } catch (const QueueError&) {
        failed = true;
      }
      EXPECT_TRUE(failed) << "request " << i << " reached a server";
      failed_at.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    c.close();
  }(), 30s);
  ASSERT_EQ(failed_at.size(), 8u);
  const double expected[] = {0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0};  // gap before request 1..7
  for (std::size_t i = 1; i < failed_at.size(); ++i)
    EXPECT_GE(failed_at[i] - failed_at[i - 1], 0.9 * expected[i - 1]) << "gap before request " << i;
  EXPECT_LT(failed_at[7] - failed_at[6], 3.5) << "no cap: doubling would wait 6.4 s here";
}

TEST_F(RedisQueueTest, BadUrlAndBadNamespaceAreQueueErrors) {
  for (std::string url : {std::string("redis://127.0.0.1:6379/zero"), std::string("postgres://x/y")}) {
    EXPECT_THROW(penguiflow::testing::run_async([&]() -> Task<void> {
                   QueueConfig cfg;
                   auto q = co_await open_redis_queue(co_await asio::this_coro::executor, url, cfg);
                   co_await q->close();
                 }()),
                 QueueError)
        << url;
  }
  EXPECT_THROW(penguiflow::testing::run_async([&]() -> Task<void> {
                 auto q = co_await open_redis_queue(co_await asio::this_coro::executor, url_, config_for("a}b"));
                 co_await q->close();
               }()),
               QueueError);
}

TEST_F(RedisQueueTest, WrongPasswordIsAQueueErrorAndRightPasswordWorks) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  PrivateRedis server({"--requirepass", "right-pw"});
  auto open_with = [&](std::string url) {
    penguiflow::testing::run_async([&]() -> Task<void> {
      auto q = co_await open_redis_queue(co_await asio::this_coro::executor, url, config_for(unique_ns()));
      co_await q->enqueue(a_job());
      co_await q->close();
    }());
  };
  try {
    open_with(server.url("wrong-pw"));
    FAIL() << "wrong password accepted";
  } catch (const QueueError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("WRONGPASS"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("wrong-pw"), std::string::npos) << msg;
    EXPECT_NE(msg.find(redact_url(server.url("wrong-pw"))), std::string::npos) << msg;
  }
  try {
    open_with(server.url());  // no password at all
    FAIL() << "no password accepted";
  } catch (const QueueError& e) {
    EXPECT_NE(std::string(e.what()).find("NOAUTH"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(open_with(server.url("right-pw")));
  ::setenv("REDIS_PASSWORD", "right-pw", 1);
  EXPECT_NO_THROW(open_with(server.url()));
  ::unsetenv("REDIS_PASSWORD");
}

TEST_F(RedisQueueTest, ReconnectsAfterClientKill) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    auto r = co_await q->enqueue(a_job());
    Connection admin(ex, parse_redis_url(url_));
    std::vector<std::string> cmd5{"CLIENT", "LIST"};
    auto list = co_await raw(admin, std::move(cmd5));
    auto id = client_id(list.str, "penguiflow:" + ns);
    EXPECT_FALSE(id.empty()) << list.str;
    std::vector<std::string> cmd6{"CLIENT", "KILL", "ID", id};
    co_await raw(admin, std::move(cmd6));
    // The next call may still see the dying connection (a QueueError); the one after
    // reconnects.
    int failures = 0;
    std::optional<Job> g;
    for (int i = 0; i < 3 && !g; ++i) {
      try {
        g = co_await q->get(r.id, std::nullopt);
      } catch (const QueueError&) {
        ++failures;
      }
    }
    EXPECT_TRUE(g.has_value());
    EXPECT_LE(failures, 1);
    std::vector<std::string> cmd7{"CLIENT", "LIST"};
    auto list2 = co_await raw(admin, std::move(cmd7));
    auto id2 = client_id(list2.str, "penguiflow:" + ns);
    EXPECT_FALSE(id2.empty());
    EXPECT_NE(id2, id);
    admin.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, InFlightRequestFailsWithQueueErrorWhenTheConnectionDies) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    Connection admin(ex, parse_redis_url(url_));
    std::exception_ptr fetch_error;
    bool fetch_done = false;
    auto t0 = std::chrono::steady_clock::now();
    asio::co_spawn(ex, q->fetch(req(1, 15s)), [&](std::exception_ptr e, std::vector<LeasedJob>) {
      fetch_error = e;
      fetch_done = true;
    });
    // Wait (bounded) until the fetch blocks in BLPOP on its wake-up connection, then kill it.
    std::string id;
    bool blocked = co_await penguiflow::testing::eventually([&]() -> Task<bool> {
      std::vector<std::string> cmd8{"CLIENT", "LIST"};
      auto list = co_await raw(admin, std::move(cmd8));
      id = client_id(list.str, "penguiflow:" + ns + ":wake");
      co_return !id.empty() && list.str.find("cmd=blpop") != std::string::npos;
    });
    EXPECT_TRUE(blocked);
    std::vector<std::string> cmd9{"CLIENT", "KILL", "ID", id};
    co_await raw(admin, std::move(cmd9));
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetch_done; }));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    EXPECT_TRUE(fetch_error);
    if (fetch_error) {
      EXPECT_THROW(std::rethrow_exception(fetch_error), QueueError);
    }
    // The queue still works: the next wait reconnects.
    co_await q->enqueue(a_job());
    EXPECT_EQ((co_await q->fetch(req())).size(), 1u);
    admin.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, CancelledWaitingFetchEndsAtOnceAndTheQueueKeepsWorking) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    Connection admin(ex, parse_redis_url(url_));
    asio::cancellation_signal cancel;
    std::exception_ptr fetch_error;
    bool fetch_done = false;
    auto t0 = std::chrono::steady_clock::now();
    asio::co_spawn(ex, q->fetch(req(1, 15s)),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, std::vector<LeasedJob>) {
                     fetch_error = e;
                     fetch_done = true;
                   }));
    bool blocked = co_await penguiflow::testing::eventually([&]() -> Task<bool> {
      std::vector<std::string> list_cmd{"CLIENT", "LIST"};
      auto list = co_await raw(admin, std::move(list_cmd));
      co_return !client_id(list.str, "penguiflow:" + ns + ":wake").empty() &&
          list.str.find("cmd=blpop") != std::string::npos;
    });
    EXPECT_TRUE(blocked);
    cancel.emit(asio::cancellation_type::terminal);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetch_done; }));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    EXPECT_TRUE(fetch_error);
    co_await q->enqueue(a_job());
    auto got = co_await q->fetch(req());
    EXPECT_EQ(got.size(), 1u);
    admin.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, CloseEndsAWaitingFetch) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url_, config_for(ns));
    Connection admin(ex, parse_redis_url(url_));
    std::exception_ptr fetch_error;
    bool fetch_done = false;
    asio::co_spawn(ex, q->fetch(req(1, 15s)), [&](std::exception_ptr e, std::vector<LeasedJob>) {
      fetch_error = e;
      fetch_done = true;
    });
    bool blocked = co_await penguiflow::testing::eventually([&]() -> Task<bool> {
      std::vector<std::string> list_cmd{"CLIENT", "LIST"};
      auto list = co_await raw(admin, std::move(list_cmd));
      co_return !client_id(list.str, "penguiflow:" + ns + ":wake").empty() &&
          list.str.find("cmd=blpop") != std::string::npos;
    });
    EXPECT_TRUE(blocked);
    co_await q->close();
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return fetch_done; }, 5s));
    EXPECT_TRUE(fetch_error);
    admin.close();
  }());
}

TEST_F(RedisQueueTest, ServerRestartFailsInFlightCallsThenReconnects) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  auto server = std::make_unique<PrivateRedis>();
  const int port = server->port();
  const std::string url = server->url();
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, url, config_for(unique_ns()));
    co_await q->enqueue(a_job());
    server.reset();  // stopped: the data is gone too (no persistence configured)
    bool failed = false;
    try {
      co_await q->counts();
    } catch (const QueueError& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find(redact_url(url)), std::string::npos) << e.what();
    }
    EXPECT_TRUE(failed);
    server = std::make_unique<PrivateRedis>(std::vector<std::string>{}, port);
    // Reconnects (after the backoff), reloads the scripts on NOSCRIPT, works again.
    std::optional<EnqueueResult> r;
    for (int i = 0; i < 5 && !r; ++i) {
      try {
        r = co_await q->enqueue(a_job());
      } catch (const QueueError&) {
      }
    }
    EXPECT_TRUE(r.has_value());
    auto got = co_await q->fetch(req());
    EXPECT_EQ(got.size(), 1u);
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, UrlPathSelectsTheDatabase) {
  auto ep = parse_redis_url(url_);
  const std::string url = "redis://" + ep.host + ":" + std::to_string(ep.port) + "/3";
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ns = unique_ns();
    auto q = co_await open_redis_queue(ex, url, config_for(ns));
    auto r = co_await q->enqueue(a_job());
    redis::QueueKeys keys(ns);
    Connection db3(ex, parse_redis_url(url));
    Connection db0(ex, parse_redis_url(url_));
    std::vector<std::string> exists3{"EXISTS", keys.job(r.id)};
    std::vector<std::string> exists0{"EXISTS", keys.job(r.id)};
    EXPECT_EQ((co_await raw(db3, std::move(exists3))).as_int(), 1);
    EXPECT_EQ((co_await raw(db0, std::move(exists0))).as_int(), ep.db == 3 ? 1 : 0);
    db3.close();
    db0.close();
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, ConcurrentRequestsArePipelinedOnOneConnection) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    Connection c(ex, parse_redis_url(url_));
    co_await c.connect();
    const std::string key = "{" + unique_ns() + "}:counter";
    constexpr int kN = 500;
    std::vector<std::int64_t> got(kN, -1);
    int done = 0;
    for (int i = 0; i < kN; ++i) {
      asio::co_spawn(
          ex,
          [&, i]() -> Task<void> {
            std::vector<std::string> cmd10{"INCR", key};
            auto r = co_await c.exec(std::move(cmd10));
            got[i] = r.as_int();
            ++done;
          },
          asio::detached);
    }
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return done == kN; }));
    // Requests were written in spawn order and replies matched FIFO: coroutine i got i+1.
    for (int i = 0; i < kN; ++i) EXPECT_EQ(got[i], i + 1);
    std::vector<std::string> cmd11{"DEL", key};
    co_await c.exec(std::move(cmd11));
    c.close();
  }());
}

// Concurrent complete / retry / fail calls go as one settle_batch script per round trip,
// each still fenced by its own lease token (Q3) and answered with its own Settle; counts
// (Q8) match the single-settle path.
TEST_F(RedisQueueTest, ConcurrentSettlesAreBatchedAndFencedPerJob) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  PrivateRedis server;  // its command counters are ours alone
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, server.url(), config_for(unique_ns()));
    constexpr int kN = 60;
    std::vector<NewJob> jobs;
    for (int i = 0; i < kN; ++i) jobs.push_back(a_job(i % 2 ? "acme" : "globex"));
    co_await q->enqueue_bulk(std::move(jobs));
    auto got = co_await q->fetch(req(kN));
    EXPECT_EQ(got.size(), static_cast<std::size_t>(kN));
    if (got.size() != static_cast<std::size_t>(kN)) co_return;
    // 0..19 complete; 20..29 complete with a wrong token (stale); 30..39 retry; 40..49
    // fail; 50..59 complete twice (the second is stale).
    std::vector<std::vector<Settle>> results(kN);
    int outstanding = 0;
    auto run = [&](int i, std::function<Task<Settle>()> f) {
      ++outstanding;
      asio::co_spawn(
          ex,
          [&, i, f]() -> Task<void> {
            auto r = co_await f();
            results[i].push_back(r);
            --outstanding;
          },
          asio::detached);
    };
    for (int i = 0; i < kN; ++i) {
      Lease lease = got[i].lease;
      if (i < 20) {
        run(i, [&q, lease]() { return q->complete(lease, json::object{{"ok", true}}, 0.01); });
      } else if (i < 30) {
        Lease bad = lease;
        bad.token += "x";
        run(i, [&q, bad]() { return q->complete(bad, nullptr, 0.01); });
      } else if (i < 40) {
        run(i, [&q, lease]() { return q->retry(lease, 0, "again"); });
      } else if (i < 50) {
        run(i, [&q, lease]() { return q->fail(lease, "broken", json::object{{"why", "test"}}); });
      } else {
        run(i, [&q, lease]() { return q->complete(lease, nullptr, 0.01); });
        run(i, [&q, lease]() { return q->complete(lease, nullptr, 0.01); });
      }
    }
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return outstanding == 0; }));
    for (int i = 0; i < kN; ++i) {
      if (i < 20 || (i >= 30 && i < 50)) {
        EXPECT_EQ(results[i], std::vector<Settle>{Settle::ok}) << i;
      } else if (i < 30) {
        EXPECT_EQ(results[i], std::vector<Settle>{Settle::stale}) << i;
      } else {
        EXPECT_EQ(results[i], (std::vector<Settle>{Settle::ok, Settle::stale})) << i;
      }
    }
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], 30);
    EXPECT_EQ(c.by_state["running"], 10);
    EXPECT_EQ(c.by_state["queued"], 10);
    EXPECT_EQ(c.by_state["dead"], 10);
    std::int64_t tenant_total = 0;
    for (auto& [tenant, states] : c.by_tenant)
      for (auto& [state, n] : states) tenant_total += n;
    EXPECT_EQ(tenant_total, kN);
    EXPECT_EQ(c.by_tenant["acme"]["succeeded"] + c.by_tenant["globex"]["succeeded"], 30);
    EXPECT_EQ(c.by_tenant["acme"]["dead"] + c.by_tenant["globex"]["dead"], 10);
    auto j = co_await q->get(got[45].job.id, std::nullopt);
    EXPECT_TRUE(j && j->state == JobState::dead && j->reason == "broken");
    j = co_await q->get(got[5].job.id, std::nullopt);
    EXPECT_TRUE(j && j->state == JobState::succeeded && j->result == json::value(json::object{{"ok", true}}));
    j = co_await q->get(got[35].job.id, std::nullopt);
    EXPECT_TRUE(j && j->state == JobState::queued && j->reason == "again");
    // The retried jobs are fetchable again.
    auto again = co_await q->fetch(req(kN, 200ms));
    EXPECT_EQ(again.size(), 10u);
    // 70 settles in far fewer top-level script calls: 1 enqueue + 2 fetch + settles.
    Connection admin(ex, parse_redis_url(server.url()));
    std::vector<std::string> stats_cmd{"INFO", "commandstats"};
    auto stats = co_await raw(admin, std::move(stats_cmd));
    auto evals = command_calls(stats.str, "evalsha");
    std::cout << "[ batch    ] 70 settles: " << evals << " EVALSHA calls in all\n";
    EXPECT_LT(evals, 20);
    admin.close();
    co_await q->close();
  }());
}

// The settles waiting on a handle ride on its next fetch: one script call settles them and
// takes the next jobs (fetch_carries_settles; the conformance suite checks the order).
// Settles that arrive while that call is out go as a batch of their own after it.
TEST_F(RedisQueueTest, AFetchTakesTheWaitingSettlesAlongInOneScriptCall) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  PrivateRedis server;
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, server.url(), config_for(unique_ns()));
    EXPECT_TRUE(q->fetch_carries_settles());
    constexpr int kN = 40;
    std::vector<NewJob> jobs;
    for (int i = 0; i < kN; ++i) jobs.push_back(a_job("acme"));
    co_await q->enqueue_bulk(std::move(jobs));
    auto got = co_await q->fetch(req(kN / 2));
    EXPECT_EQ(got.size(), static_cast<std::size_t>(kN / 2));
    Connection admin(ex, parse_redis_url(server.url()));
    std::vector<std::string> stats_cmd{"INFO", "commandstats"};
    auto before = command_calls((co_await raw(admin, stats_cmd)).str, "evalsha");
    int ok = 0, answered = 0;
    auto complete_all = [&](std::vector<LeasedJob>& batch) {
      for (auto& lj : batch)
        asio::co_spawn(
            ex,
            [&, lease = lj.lease]() -> Task<void> {
              if (co_await q->complete(lease, nullptr, 0.01) == Settle::ok) ++ok;
              ++answered;
            },
            asio::detached);
    };
    complete_all(got);
    auto next = co_await q->fetch(req(kN / 2, 0ms));  // carries the 20 completes
    EXPECT_EQ(next.size(), static_cast<std::size_t>(kN / 2));
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return answered == kN / 2; }));
    auto after = command_calls((co_await raw(admin, stats_cmd)).str, "evalsha");
    EXPECT_EQ(after - before, 1) << "20 completes and a fetch of 20 in one script call";
    complete_all(next);  // no fetch follows: they go as a settle batch
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return answered == kN; }));
    EXPECT_EQ(ok, kN);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], kN);
    EXPECT_EQ(c.by_state["running"], 0);
    EXPECT_EQ(c.by_tenant["acme"]["succeeded"], kN);
    admin.close();
    co_await q->close();
  }());
}

// Settles arriving while batches are in flight: past kPipelineAt waiting settles a second
// batch is sent behind the first, and settles keep arriving while batches complete and
// hand the sending on. Every settle is answered once, none is lost or sent twice.
TEST_F(RedisQueueTest, SettlesArrivingWhileBatchesAreInFlightAreEachSentOnce) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  PrivateRedis server;
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, server.url(), config_for(unique_ns()));
    constexpr int kN = 600;
    std::vector<NewJob> jobs;
    for (int i = 0; i < kN; ++i) jobs.push_back(a_job("acme"));
    co_await q->enqueue_bulk(std::move(jobs));
    std::vector<LeasedJob> got;
    while (got.size() < static_cast<std::size_t>(kN)) {
      auto more = co_await q->fetch(req(kN));
      if (more.empty()) break;
      for (auto& lj : more) got.push_back(std::move(lj));
    }
    EXPECT_EQ(got.size(), static_cast<std::size_t>(kN));
    if (got.size() != static_cast<std::size_t>(kN)) co_return;
    std::vector<int> answers(kN, 0);
    int ok = 0, outstanding = 0, next = 0;
    // Each answer starts the next settle, so settles arrive while others are in flight
    // and while a finished batch hands the sending on.
    std::function<void()> start = [&]() {
      if (next >= kN) return;
      const int i = next++;
      ++outstanding;
      asio::co_spawn(
          ex,
          [&, i]() -> Task<void> {
            Lease lease = got[i].lease;
            auto r = co_await q->complete(lease, nullptr, 0.001);
            ++answers[i];
            if (r == Settle::ok) ++ok;
            --outstanding;
            start();
          },
          asio::detached);
    };
    for (int i = 0; i < 300; ++i) start();
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return next == kN && outstanding == 0; }));
    EXPECT_EQ(ok, kN);
    EXPECT_EQ(std::count(answers.begin(), answers.end(), 1), kN);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], kN);
    EXPECT_EQ(c.by_state["running"], 0);
    Connection admin(ex, parse_redis_url(server.url()));
    std::vector<std::string> stats_cmd{"INFO", "commandstats"};
    auto stats = co_await raw(admin, std::move(stats_cmd));
    auto evals = command_calls(stats.str, "evalsha");
    std::cout << "[ batch    ] " << kN << " settles: " << evals << " EVALSHA calls in all\n";
    EXPECT_LT(evals, kN / 10);
    admin.close();
    co_await q->close();
  }());
}

// The first settle, sent with none in flight, gathers the others that arrive while the
// loop runs once and sends them all in one batch; cancelling that one caller must not make
// the others' settles fail (they are applied either way).
TEST_F(RedisQueueTest, CancellingTheSenderOfAPipelinedBatchFailsOnlyItsOwnCall) {
  penguiflow::testing::run_async([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await open_redis_queue(ex, url_, config_for(unique_ns()));
    constexpr int kN = 65;
    std::vector<NewJob> jobs;
    for (int i = 0; i < kN; ++i) jobs.push_back(a_job("acme"));
    co_await q->enqueue_bulk(std::move(jobs));
    auto got = co_await q->fetch(req(kN));
    EXPECT_EQ(got.size(), static_cast<std::size_t>(kN));
    if (got.size() != static_cast<std::size_t>(kN)) co_return;
    std::vector<asio::cancellation_signal> cancel(kN);
    int ok = 0, aborted = 0, other = 0, finished = 0;
    for (int i = 0; i < kN; ++i) {
      auto one = [&, i]() -> Task<void> {
        Lease lease = got[i].lease;
        try {
          auto s = co_await q->complete(lease, nullptr, 0.001);
          if (s == Settle::ok) ++ok; else ++other;
        } catch (const boost::system::system_error& e) {
          if (e.code() == asio::error::operation_aborted) ++aborted; else ++other;
        }
        ++finished;
      };
      asio::co_spawn(ex, one(), asio::bind_cancellation_slot(cancel[i].slot(), asio::detached));
    }
    // All 65 have started: the first is about to send, the others wait for it.
    co_await asio::post(ex, asio::use_awaitable);
    cancel[0].emit(asio::cancellation_type::terminal);
    EXPECT_TRUE(co_await penguiflow::testing::eventually([&]() -> Task<bool> { co_return finished == kN; }));
    EXPECT_EQ(ok, kN - 1);
    EXPECT_EQ(aborted, 1);
    EXPECT_EQ(other, 0);
    auto c = co_await q->counts();
    EXPECT_EQ(c.by_state["succeeded"], kN);  // the cancelled caller's settle was applied too
    EXPECT_EQ(c.by_state["running"], 0);
    co_await q->close();
  }());
}

TEST_F(RedisQueueTest, IdleFetchCostsAFewCommandsPerSecond) {
  if (!have_program("redis-server")) GTEST_SKIP() << "redis-server is not installed";
  PrivateRedis server;  // nobody else talks to it, so its command counter is ours alone
  double seconds = 3;
  if (const char* s = std::getenv("PENGUIFLOW_REDIS_IDLE_SECONDS")) seconds = std::atof(s);
  penguiflow::testing::run_async(
      [&]() -> Task<void> {
        auto ex = co_await asio::this_coro::executor;
        auto q = co_await open_redis_queue(ex, server.url(), config_for(unique_ns()));
        Connection admin(ex, parse_redis_url(server.url()));
        std::vector<std::string> cmd12{"INFO", "stats"};
        auto before = info_field((co_await raw(admin, std::move(cmd12))).str, "total_commands_processed");
        auto t0 = std::chrono::steady_clock::now();
        int calls = 0;
        while (std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds)) {
          auto got = co_await q->fetch(req(10, 1000ms));  // a worker's idle loop
          EXPECT_TRUE(got.empty());
          ++calls;
        }
        std::vector<std::string> cmd13{"INFO", "stats"};
        auto after = info_field((co_await raw(admin, std::move(cmd13))).str, "total_commands_processed");
        auto commands = after - before - 1;  // minus the first INFO
        std::cout << "[ idle     ] " << commands << " server commands in " << seconds << " s of idle fetch(wait=1s) ("
                  << calls << " fetch calls)\n";
        RecordProperty("idle_commands", static_cast<int>(commands));
        std::vector<std::string> stats_cmd{"INFO", "commandstats"};
        auto stats = co_await raw(admin, std::move(stats_cmd));
        // Client-issued commands: one EVALSHA (fetch script) and one BLPOP per idle wait;
        // the script's own redis.call()s are counted by the server too (7 per call).
        auto top = command_calls(stats.str, "evalsha") + command_calls(stats.str, "blpop");
        std::cout << "[ idle     ] client commands (EVALSHA + BLPOP): " << top << "\n";
        EXPECT_LE(top, static_cast<std::int64_t>(2 * seconds + 4));
        EXPECT_LE(commands, static_cast<std::int64_t>(10 * seconds + 10));
        admin.close();
        co_await q->close();
      }(),
      std::chrono::milliseconds(static_cast<int>(seconds * 1000) + 20000));
}

}  // namespace
}  // namespace penguiflow::queue::testing
