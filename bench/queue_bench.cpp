// queue_bench: the job-queue workloads of ../shared/bench/peers (BullMQ, bee-queue,
// plainjob, ...) run against any queue URL through open_queue(), so the numbers sit side
// by side with the peers' on this machine.
//
//   queue_bench --queue sqlite:///tmp/qb.db [--jobs 50000] [--concurrency 1,50,200]
//               [--consumers K] [--runs R] [--latency-jobs 1000] [--peer NAME]
//               [--server-cpu-probe CMD]
//
// Workloads (each in a fresh namespace, so the queue starts empty):
//   enqueue bulk    N no-op jobs in enqueue_bulk chunks of 1,000
//   enqueue single  min(N, 10,000) jobs, each enqueue awaited before the next
//   process c=C     N pre-enqueued no-op jobs, fetched in batches and completed by K
//                   consumers (separate queue handles, C/K jobs in flight each). K by
//                   default as the worker runs its fetch lanes: the backend's
//                   JobQueue::fetch_lanes() (Redis 2, else 1), at most C/8; --consumers K
//                   sets it (then the variant names it)
//   latency         1,000 jobs enqueued ~1 ms apart to an idle consumer; enqueue call ->
//                   fetch returned, p50 / p99 / max. "same handle": producer and consumer
//                   share one queue object; "separate handle": two objects (like two
//                   processes: for SQLite the consumer sees the job at its next poll).
// CPU µs/job is this process's user+sys time (all threads, incl. the SQLite thread) over
// the jobs of the phase; a server's own CPU (Redis, PostgreSQL) is not included, unless
// --server-cpu-probe CMD is given: a shell command printing the server's CPU seconds so
// far (e.g. the sum of redis-cli INFO cpu's used_cpu_user and used_cpu_sys), run before
// and after each process phase ("process server cpu", µs/job).
// Output: one JSON line per measurement (the peers' results.jsonl shape), then a Markdown
// table in the shape of ../shared/bench/peers/summarize.mjs.
#include <penguiflow/queue/queue.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>

#include "bench_table.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow::queue;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string url;
  int jobs = 50000;
  std::vector<int> concurrency{1, 50, 200};
  int consumers = 0;  // 0: as the worker (fetch lanes)
  int runs = 1;
  int latency_jobs = 1000;
  std::string peer;
  std::string server_cpu_probe;
};

using penguiflow::bench::Row;

std::vector<Row> g_rows;
Options g_opt;

void record(const std::string& metric, const std::string& variant, double value, const std::string& unit) {
  json::object o{{"peer", g_opt.peer}, {"metric", metric}, {"variant", variant}, {"value", value}, {"unit", unit}};
  std::cout << json::serialize(o) << std::endl;
  for (auto& r : g_rows)
    if (r.metric == metric && r.variant == variant) {
      r.values.push_back(value);
      return;
    }
  g_rows.push_back(Row{metric, variant, unit, {value}});
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

bool is_memory() { return g_opt.url.rfind("memory:", 0) == 0; }

int g_ns_counter = 0;
QueueConfig fresh_config() {
  QueueConfig c;
  c.namespace_ = "qb_" + std::to_string(::getpid()) + "_" + std::to_string(g_ns_counter++);
  return c;
}

NewJob noop_job(int i) {
  NewJob j;
  j.flow = "noop";
  j.tenant = "bench";
  j.payload = json::object{{"i", i}};
  return j;
}

Task<void> sleep_for(Clock::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(asio::use_awaitable);
}

Task<void> fill(JobQueue& q, int n) {
  for (int done = 0; done < n;) {
    int k = std::min(1000, n - done);
    std::vector<NewJob> chunk;
    chunk.reserve(k);
    for (int i = 0; i < k; ++i) chunk.push_back(noop_job(done + i));
    co_await q.enqueue_bulk(std::move(chunk));
    done += k;
  }
}

Task<void> bench_enqueue(asio::any_io_executor ex) {
  {
    auto cfg = fresh_config();
    auto q = co_await open_queue(ex, g_opt.url, cfg);
    double c0 = cpu_seconds();
    auto t0 = Clock::now();
    co_await fill(*q, g_opt.jobs);
    double s = secs(Clock::now() - t0);
    record("enqueue bulk", "enqueue_bulk x1000", g_opt.jobs / s, "jobs/s");
    record("enqueue bulk cpu", "enqueue_bulk x1000", (cpu_seconds() - c0) / g_opt.jobs * 1e6, "µs/job");
    co_await q->close();
  }
  {
    auto cfg = fresh_config();
    auto q = co_await open_queue(ex, g_opt.url, cfg);
    int n = std::min(g_opt.jobs, 10000);
    double c0 = cpu_seconds();
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      NewJob j = noop_job(i);
      co_await q->enqueue(std::move(j));
    }
    double s = secs(Clock::now() - t0);
    std::string variant = "await enqueue() one at a time, n=" + std::to_string(n);
    record("enqueue single", variant, n / s, "jobs/s");
    record("enqueue single cpu", variant, (cpu_seconds() - c0) / n * 1e6, "µs/job");
    co_await q->close();
  }
}

struct ProcessState {
  int total = 0;
  int fetched = 0;
  int completed = 0;
  int stale = 0;
  // Taken at the last completion: the clocks stop there (as the peers' do), not when the
  // consumers have wound down.
  Clock::time_point t_last;
  double cpu_last = 0;
  double server_last = NAN;
};

constexpr int kRefillSlots = 32;

// One consumer: keeps up to `capacity` jobs in flight; fetches in batches as slots free.
Task<void> consumer(JobQueue& q, ProcessState& st, int capacity, std::string owner) {
  auto ex = co_await asio::this_coro::executor;
  int inflight = 0;
  int completing = 0;  // complete() called, not returned
  const bool carries = q.fetch_carries_settles();
  asio::steady_timer slot_free(ex);
  while (st.fetched < st.total) {  // then only the completions in flight are left
    // Refill as the worker does (its Lane::free and fetch loop): a job's slot is free once
    // its complete is called, with at most `capacity` completes in flight; while fewer
    // than 32 slots (or half of them) are free and completes are in flight, wait for them
    // so a fetch brings a batch, unless the fetch carries the completes along.
    const int free_slots = std::min(capacity - (inflight - completing), 2 * capacity - inflight);
    if (free_slots <= 0 ||
        (!carries && completing > 0 && free_slots < std::min(kRefillSlots, std::max(1, capacity / 2)))) {
      slot_free.expires_at(Clock::time_point::max());
      boost::system::error_code ec;
      co_await slot_free.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    FetchRequest req;
    req.max_jobs = std::min(free_slots, 100);
    req.wait = std::chrono::milliseconds(200);
    req.owner = owner;
    auto got = co_await q.fetch(req);
    st.fetched += static_cast<int>(got.size());
    for (auto& lj : got) {
      ++inflight;
      auto settle = [](JobQueue& q, Lease lease, ProcessState& st, int& inflight, int& completing,
                       asio::steady_timer& slot_free) -> Task<void> {
        json::value result;  // no-op job: null result
        ++completing;
        slot_free.cancel();  // its slot is free
        auto s = co_await q.complete(lease, std::move(result), 0.0);
        --completing;
        if (s != Settle::ok) ++st.stale;
        if (++st.completed == st.total) {
          st.t_last = Clock::now();
          st.cpu_last = cpu_seconds();
          st.server_last = penguiflow::bench::run_probe(g_opt.server_cpu_probe);
        }
        --inflight;
        slot_free.cancel();
      };
      if (capacity == 1) {
        co_await settle(q, lj.lease, st, inflight, completing, slot_free);
      } else {
        asio::co_spawn(ex, settle(q, lj.lease, st, inflight, completing, slot_free), asio::detached);
      }
    }
  }
  while (inflight > 0) {  // let the last completions land before the handles close
    slot_free.expires_at(Clock::time_point::max());
    boost::system::error_code ec;
    co_await slot_free.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

Task<void> bench_process(asio::any_io_executor ex, int concurrency) {
  auto cfg = fresh_config();
  std::vector<std::unique_ptr<JobQueue>> qs;
  // memory:// is one in-process queue per handle: its consumers share the one handle.
  qs.push_back(co_await open_queue(ex, g_opt.url, cfg));
  const int consumers =
      g_opt.consumers > 0 ? g_opt.consumers : fetch_lanes_for(qs[0]->fetch_lanes(), concurrency);
  const int handles = is_memory() ? 1 : consumers;
  while (static_cast<int>(qs.size()) < handles) qs.push_back(co_await open_queue(ex, g_opt.url, cfg));
  co_await fill(*qs[0], g_opt.jobs);
  ProcessState st;
  st.total = g_opt.jobs;
  // C jobs in flight between the consumers, as the worker splits its slots between lanes.
  auto share = [&](int k) { return std::max(1, concurrency / consumers + (k < concurrency % consumers ? 1 : 0)); };
  const double server0 = penguiflow::bench::run_probe(g_opt.server_cpu_probe);
  double c0 = cpu_seconds();
  auto t0 = Clock::now();
  auto done = std::make_shared<int>(consumers);
  asio::steady_timer all_done(ex);
  all_done.expires_at(Clock::time_point::max());
  for (int k = 0; k < consumers; ++k) {
    asio::co_spawn(ex, consumer(*qs[k % qs.size()], st, share(k), "bench-" + std::to_string(k)), [&, done](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          std::cerr << "consumer failed: " << x.what() << "\n";
        }
      }
      if (--*done == 0) all_done.cancel();
    });
  }
  boost::system::error_code ec;
  co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (st.completed < st.total) throw std::runtime_error("process: the consumers ended before every job completed");
  double s = secs(st.t_last - t0);
  std::string variant = "c=" + std::to_string(concurrency);
  if (g_opt.consumers > 0) variant += ", " + std::to_string(consumers) + (consumers == 1 ? " consumer" : " consumers");
  record("process", variant, st.completed / s, "jobs/s");
  record("process cpu", variant, (st.cpu_last - c0) / st.completed * 1e6, "µs/job");
  if (!std::isnan(server0) && !std::isnan(st.server_last))
    record("process server cpu (--server-cpu-probe)", variant, (st.server_last - server0) / st.completed * 1e6, "µs/job");
  if (st.stale) std::cerr << "warning: " << st.stale << " stale completions\n";
  for (auto& q : qs) co_await q->close();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<std::size_t>(std::ceil(p * v.size())) - 1;
  return v[std::min(idx, v.size() - 1)];
}

Task<void> bench_latency(asio::any_io_executor ex, bool same_handle) {
  auto cfg = fresh_config();
  auto cq = co_await open_queue(ex, g_opt.url, cfg);
  std::unique_ptr<JobQueue> pq_owned;
  if (!same_handle) pq_owned = co_await open_queue(ex, g_opt.url, cfg);
  JobQueue& pq = same_handle ? *cq : *pq_owned;
  int n = g_opt.latency_jobs;
  std::vector<double> lat_ms;
  lat_ms.reserve(n);
  auto epoch = Clock::now();
  auto consume = [](JobQueue& q, int n, std::vector<double>& out, Clock::time_point epoch) -> Task<void> {
    int idle = 0;
    while (static_cast<int>(out.size()) < n && idle < 20) {
      FetchRequest req;
      req.max_jobs = 1;
      req.wait = std::chrono::seconds(1);
      req.owner = "latency";
      auto got = co_await q.fetch(req);
      auto now = Clock::now();
      if (got.empty()) {
        ++idle;
        continue;
      }
      idle = 0;
      for (auto& lj : got) {
        auto sent_ns = lj.job.payload.as_object().at("t").to_number<std::int64_t>();
        out.push_back(secs(now - (epoch + std::chrono::nanoseconds(sent_ns))) * 1e3);
        json::value result;
        co_await q.complete(lj.lease, std::move(result), 0.0);
      }
    }
  };
  auto produce = [](JobQueue& q, int n, Clock::time_point epoch) -> Task<void> {
    for (int i = 0; i < n; ++i) {
      NewJob j = noop_job(i);
      j.payload.as_object()["t"] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch).count();
      co_await q.enqueue(std::move(j));
      co_await sleep_for(std::chrono::milliseconds(1));
    }
  };
  int left = 2;
  asio::steady_timer both(ex);
  both.expires_at(Clock::time_point::max());
  auto on_done = [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::cerr << "latency task failed: " << x.what() << "\n";
      }
    }
    if (--left == 0) both.cancel();
  };
  asio::co_spawn(ex, consume(*cq, n, lat_ms, epoch), on_done);
  asio::co_spawn(ex, produce(pq, n, epoch), on_done);
  boost::system::error_code ec;
  co_await both.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (lat_ms.empty()) throw std::runtime_error("latency: no job was fetched");
  std::string variant = "c=1, " + std::to_string(n) + " jobs ~1ms apart, " + (same_handle ? "same handle" : "separate handle");
  record("latency p50", variant, percentile(lat_ms, 0.50), "ms");
  record("latency p99", variant, percentile(lat_ms, 0.99), "ms");
  record("latency max", variant, percentile(lat_ms, 1.0), "ms");
  co_await cq->close();
  if (pq_owned) co_await pq_owned->close();
}

Task<void> run_all() {
  auto ex = co_await asio::this_coro::executor;
  for (int r = 0; r < g_opt.runs; ++r) {
    co_await bench_enqueue(ex);
    for (int c : g_opt.concurrency) co_await bench_process(ex, c);
    if (g_opt.latency_jobs <= 0) continue;  // --latency-jobs 0: throughput only
    co_await bench_latency(ex, true);
    if (!is_memory()) co_await bench_latency(ex, false);
  }
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << (why.empty() ? "" : "queue_bench: " + why + "\n")
            << "usage: queue_bench --queue URL [--jobs 50000] [--concurrency 1,50,200] [--consumers K]\n"
               "                   [--runs R] [--latency-jobs 1000] [--peer NAME] [--server-cpu-probe CMD]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--queue") g_opt.url = next();
      else if (a == "--jobs") g_opt.jobs = std::stoi(next());
      else if (a == "--consumers") g_opt.consumers = std::max(1, std::stoi(next()));
      else if (a == "--runs") g_opt.runs = std::max(1, std::stoi(next()));
      else if (a == "--latency-jobs") g_opt.latency_jobs = std::stoi(next());
      else if (a == "--peer") g_opt.peer = next();
      else if (a == "--server-cpu-probe") g_opt.server_cpu_probe = next();
      else if (a == "--concurrency") {
        g_opt.concurrency.clear();
        std::stringstream ss(next());
        for (std::string part; std::getline(ss, part, ',');) g_opt.concurrency.push_back(std::max(1, std::stoi(part)));
      } else if (a == "--help" || a == "-h") usage("");
      else usage("unknown option " + a);
    } catch (const std::invalid_argument&) {
      usage(a + " needs a number");
    }
  }
  if (g_opt.url.empty()) usage("--queue is required");
  if (g_opt.peer.empty()) {
    auto scheme = g_opt.url.substr(0, g_opt.url.find(':'));
    g_opt.peer = "penguiflow-cpp (" + scheme + ")";
  }
  asio::io_context io(1);
  auto fut = asio::co_spawn(io, run_all(), asio::use_future);
  io.run();
  try {
    fut.get();
  } catch (const std::exception& e) {
    std::cerr << "queue_bench: " << e.what() << "\n";
    return 1;
  }
  penguiflow::bench::print_table(g_opt.peer, g_rows);
  return 0;
}
