// core_bench: the flow runtime's benchmarks, mirroring ../shared/bench/penguiflow-py/bench_core.py
// (same workloads, same case names, same units) so that bench/run_core_side_by_side.py can
// put the two side by side on this machine, plus a plain hand-off baseline and two memory
// cases that have no Python counterpart.
//
//   core_bench                         # every case, 3 reps, one fresh process per (case, rep)
//   core_bench --quick                 # small sizes, 1 rep (smoke test; CTest runs this)
//   core_bench --cases throughput_dict,baseline_handoff --reps 5
//   core_bench --py-sizes              # exactly bench_core.py's sizes (default: larger n)
//   core_bench --case throughput_dict  # child mode: one run, one JSON line
//
// Cases (every node is an identity node `co_return m;` on std::any with
// NodePolicy{.validate = Validate::none}; queue_maxsize 64; one io_context thread;
// logging left at its default, no middleware, so no FlowEvent is built):
//   throughput_dict      3-node chain, producer task emits n json {"i": i} objects (the
//                        C++ analogue of a Python dict, built in the timed producer) while
//                        a consumer task fetches n
//   throughput_message   same with Message{payload = {"i": i}, headers = h} built in the
//                        producer (one shared Headers{tenant = "t"}); side metric: building
//                        the n envelopes alone
//   throughput_int       same chain, int payloads (no allocation for the payload): the
//                        flow's own per-hop cost, compared against baseline_handoff
//   baseline_handoff     the minimal coroutine-to-coroutine hand-off on the same Asio loop:
//                        producer -> 3 relay coroutines -> consumer joined by 4 bounded
//                        std::deque<std::any> (capacity 64, int payloads), each side
//                        parking in a one-slot waiter resumed with asio::post (as the
//                        flow's WaitQueue does). No node call, no trace bookkeeping.
//   baseline_call        baseline_handoff whose 3 relays also co_await an identity
//                        coroutine `Task<std::any> f(std::any m) { co_return m; }` per
//                        message: the least a node invocation costs
//   roundtrip_seq        sequential emit(msg, trace)/fetch(trace) on the 3-node chain,
//                        Message built before the timer, unique trace per round trip
//   roundtrip_conc       100 concurrent client tasks x per-task round trips
//   job_worker           worker-integration pattern 1: per job new Nodes + Flow, run(),
//                        emit(trace), fetch_for(trace, 300 s) (core's bounded fetch), stop();
//                        8 workers draining an in-memory job list
//   policy_{dict,message}_{none,retry}
//                        1-node flow; NodePolicy{validate none} vs {validate none,
//                        timeout_s = 5, max_retries = 2}
//   idle_flow            heap bytes (mallinfo2 in-use delta, malloc overhead included) of an
//                        idle running 3-node flow (queue_maxsize 64): its Nodes, Flow, node
//                        workers' coroutine frames; also the average over 1,000 such flows
//   rss_10m              RSS while 10 million Message envelopes cross the 3-node chain
//                        (at 1M, 5M, 10M; --quick: 20k, 100k, 200k)
// Per-hop ns = elapsed / messages / 4: a message crosses 4 edges (emit -> n0 -> n1 -> n2 ->
// sink), each one bounded queue.
//
// Output: one JSON line per run (the child's result plus peak RSS and the CPU other processes
// used meanwhile), then a table: median [min-max] over the reps. --out FILE appends the JSON
// lines to FILE too.
#include <penguiflow/penguiflow.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <boost/version.hpp>

#include <malloc.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow;
using Clock = std::chrono::steady_clock;

namespace {

// ------------------------------------------------------------------------------ sizes

struct Sizes {
  int throughput, roundtrip_seq, roundtrip_tasks, roundtrip_per_task, jobs, job_workers, policy, idle_flows;
  long rss_messages;
};
// Larger than bench_core.py's where the metric is a rate, so a run lasts long enough to be
// stable (a rate does not depend on n once warm); --py-sizes uses Python's exactly.
constexpr Sizes kSizes{1'000'000, 10'000, 100, 100, 50'000, 8, 1'000'000, 1'000, 10'000'000};
constexpr Sizes kPySizes{100'000, 1'000, 100, 100, 5'000, 8, 100'000, 1'000, 10'000'000};
constexpr Sizes kQuickSizes{20'000, 200, 10, 20, 300, 8, 5'000, 100, 200'000};
constexpr int kQueueMaxsize = 64;
constexpr int kChainHops = 4;  // emit -> n0 -> n1 -> n2 -> sink

const std::vector<std::string> kCases = {
    "throughput_dict",     "throughput_message",   "throughput_int", "baseline_handoff", "baseline_call",
    "roundtrip_seq",       "roundtrip_conc",       "job_worker",     "policy_dict_none",
    "policy_dict_retry",   "policy_message_none",  "policy_message_retry",
    "idle_flow",           "rss_10m"};

// ------------------------------------------------------------------------------ helpers

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

double rss_mib() {
  long pages_total = 0, pages_rss = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2) pages_rss = 0;
    std::fclose(f);
  }
  return static_cast<double>(pages_rss) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// Bytes handed out by malloc and still in use (small chunks + mmapped ones), headers included.
// (Under ASan, whose allocator glibc's mallinfo2 does not see, this stays 0.)
double heap_in_use() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
}

/// Nearest-rank percentile of an ascending vector (as bench_core.py's _pct).
double pct(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  auto k = static_cast<long>(std::ceil(q * static_cast<double>(sorted.size()))) - 1;
  k = std::clamp<long>(k, 0, static_cast<long>(sorted.size()) - 1);
  return sorted[static_cast<std::size_t>(k)];
}

/// Runs `work` to completion on `io`; rethrows its exception.
template <class T>
T run_on(asio::io_context& io, Task<T> work) {
  std::exception_ptr err;
  std::optional<T> out;
  asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T v) {
    err = e;
    if (!e) out = std::move(v);
  });
  io.run();
  io.restart();
  if (err) std::rethrow_exception(err);
  if (!out) throw std::runtime_error("benchmark coroutine did not finish");
  return std::move(*out);
}

NodePolicy policy_none() { return NodePolicy{.validate = Validate::none}; }
NodePolicy policy_retry() { return NodePolicy{.validate = Validate::none, .timeout_s = 5.0, .max_retries = 2}; }

Node identity(std::string name, NodePolicy policy) {
  return Node(std::move(name), [](std::any m, Context&) -> Task<std::any> { co_return m; }, policy);
}

/// A linear chain of n identity nodes, as bench_core.py's _identity_chain.
Flow identity_chain(int n_nodes, NodePolicy (*policy)()) {
  std::vector<Node> nodes;
  for (int i = 0; i < n_nodes; ++i) {
    std::string name = "n";  // not "n" + to_string(i): g++ 12 -Wstringop-overflow false positive
    name += std::to_string(i);
    nodes.push_back(identity(std::move(name), policy()));
  }
  std::vector<Adjacency> adj;
  if (n_nodes == 1) adj.push_back(nodes[0].to());
  for (int i = 0; i + 1 < n_nodes; ++i) adj.push_back(nodes[i].to(nodes[i + 1]));
  return Flow(std::move(adj), FlowOptions{.queue_maxsize = kQueueMaxsize});
}

std::any make_dict(int i) {
  json::object o;
  o["i"] = i;
  return std::any(json::value(std::move(o)));
}

// ------------------------------------------------------------------------------ streaming

template <class Make>
Task<void> producer(Flow& flow, long n, Make& make) {
  for (long i = 0; i < n; ++i) {
    std::any msg = make(static_cast<int>(i));
    std::string trace;  // named locals: g++ 12 and braced temporaries in co_await
    Targets to;
    co_await flow.emit(std::move(msg), std::move(trace), std::move(to));
  }
}

template <class OnReceived>
Task<void> consumer(Flow& flow, long n, long& received, OnReceived& on_received) {
  for (long i = 0; i < n; ++i) {
    std::string trace;
    std::any r = co_await flow.fetch(std::move(trace));
    ++received;
    on_received(received);
  }
}

/// Producer task emits n messages while a consumer task fetches n (bench_core.py's _stream);
/// returns the elapsed seconds.
template <class Make, class OnReceived>
Task<double> stream(Flow& flow, long n, Make make, OnReceived on_received) {
  using namespace asio::experimental::awaitable_operators;
  flow.run(co_await asio::this_coro::executor);
  long received = 0;
  auto t0 = Clock::now();
  co_await (producer(flow, n, make) && consumer(flow, n, received, on_received));
  double elapsed = seconds_since(t0);
  co_await flow.stop();
  if (received != n) throw std::runtime_error("received " + std::to_string(received) + " of " + std::to_string(n));
  co_return elapsed;
}

auto no_checkpoint = [](long) {};

json::object case_throughput(const Sizes& sz, const std::string& kind) {
  asio::io_context io(1);
  const long n = sz.throughput;
  Flow flow = identity_chain(3, policy_none);
  json::object out;
  double elapsed = 0;
  if (kind == "message") {
    Headers headers{.tenant = "t"};
    auto make = [&headers](int i) {
      Message m;
      m.payload = make_dict(i);
      m.headers = headers;
      return std::any(std::move(m));
    };
    // side metric: building the envelopes alone (not part of the flow number)
    auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) {
      std::any m = make(static_cast<int>(i));
      asm volatile("" : : "r"(&m) : "memory");
    }
    out["message_build_per_s"] = static_cast<double>(n) / seconds_since(t0);
    elapsed = run_on(io, stream(flow, n, make, no_checkpoint));
  } else if (kind == "int") {
    auto make = [](int i) { return std::any(i); };
    elapsed = run_on(io, stream(flow, n, make, no_checkpoint));
  } else {
    elapsed = run_on(io, stream(flow, n, make_dict, no_checkpoint));
  }
  out["n"] = n;
  out["elapsed_s"] = elapsed;
  out["msgs_per_s"] = static_cast<double>(n) / elapsed;
  out["hop_ns"] = elapsed * 1e9 / static_cast<double>(n) / kChainHops;
  return out;
}

// ------------------------------------------------------------------------------ baseline

/// At most one parked coroutine, resumed with asio::post (never inline), exactly as the
/// flow's WaitQueue resumes its waiters.
struct OneWaiter {
  std::optional<asio::any_completion_handler<void()>> handler;
  asio::any_io_executor ex;
  auto wait() {
    return asio::async_initiate<const asio::use_awaitable_t<>, void()>(
        [this](auto h) { handler.emplace(std::move(h)); }, asio::use_awaitable);
  }
  void notify() {
    if (!handler) return;
    auto h = std::move(*handler);
    handler.reset();
    asio::post(ex, [h = std::move(h)]() mutable { std::move(h)(); });
  }
};

struct Edge {
  std::deque<std::any> q;
  OneWaiter readers, writers;
  bool full() const { return q.size() >= static_cast<std::size_t>(kQueueMaxsize); }
};

Task<void> base_producer(Edge& out, long n) {
  for (long i = 0; i < n; ++i) {
    while (out.full()) co_await out.writers.wait();
    out.q.push_back(std::any(static_cast<int>(i)));
    out.readers.notify();
  }
}

Task<void> base_relay(Edge& in, Edge& out, long n) {
  for (long i = 0; i < n; ++i) {
    while (in.q.empty()) co_await in.readers.wait();
    std::any v = std::move(in.q.front());
    in.q.pop_front();
    in.writers.notify();
    while (out.full()) co_await out.writers.wait();
    out.q.push_back(std::move(v));
    out.readers.notify();
  }
}

Task<std::any> base_identity(std::any m) { co_return m; }

// base_relay plus the least a node invocation costs: one co_await of an identity coroutine.
Task<void> base_relay_call(Edge& in, Edge& out, long n) {
  for (long i = 0; i < n; ++i) {
    while (in.q.empty()) co_await in.readers.wait();
    std::any v = std::move(in.q.front());
    in.q.pop_front();
    in.writers.notify();
    std::any r = co_await base_identity(std::move(v));
    while (out.full()) co_await out.writers.wait();
    out.q.push_back(std::move(r));
    out.readers.notify();
  }
}

Task<void> base_consumer(Edge& in, long n, long& received) {
  for (long i = 0; i < n; ++i) {
    while (in.q.empty()) co_await in.readers.wait();
    std::any v = std::move(in.q.front());
    in.q.pop_front();
    in.writers.notify();
    ++received;
  }
}

Task<double> baseline_run(long n, bool call) {
  using namespace asio::experimental::awaitable_operators;
  auto ex = co_await asio::this_coro::executor;
  std::vector<Edge> e(kChainHops);
  for (auto& edge : e) edge.readers.ex = edge.writers.ex = ex;
  long received = 0;
  auto relay = call ? base_relay_call : base_relay;
  auto t0 = Clock::now();
  co_await (base_producer(e[0], n) && relay(e[0], e[1], n) && relay(e[1], e[2], n) && relay(e[2], e[3], n) &&
            base_consumer(e[3], n, received));
  double elapsed = seconds_since(t0);
  if (received != n) throw std::runtime_error("baseline received " + std::to_string(received));
  co_return elapsed;
}

json::object case_baseline(const Sizes& sz, bool call) {
  asio::io_context io(1);
  const long n = sz.throughput;
  double elapsed = run_on(io, baseline_run(n, call));
  return {{"n", n},
          {"elapsed_s", elapsed},
          {"msgs_per_s", static_cast<double>(n) / elapsed},
          {"hop_ns", elapsed * 1e9 / static_cast<double>(n) / kChainHops}};
}

// ------------------------------------------------------------------------------ round trips

Task<double> roundtrip(Flow& flow, const Headers& headers, std::string trace_id, int payload) {
  Message m;
  m.payload = payload;
  m.headers = headers;
  m.trace_id = trace_id;
  std::any msg(std::move(m));
  std::string emit_trace = trace_id;
  std::string fetch_trace = trace_id;
  Targets to;
  auto t0 = Clock::now();
  co_await flow.emit(std::move(msg), std::move(emit_trace), std::move(to));
  std::any result = co_await flow.fetch(std::move(fetch_trace));
  double dt = seconds_since(t0);
  const Message* r = std::any_cast<Message>(&result);
  if (!r || r->trace_id != trace_id)
    throw std::runtime_error("roundtrip mismatch: sent " + trace_id + ", got " + (r ? r->trace_id : "no Message"));
  co_return dt;
}

json::object latency_summary(std::vector<double>& lat, long n, double elapsed, const char* rate_key) {
  std::sort(lat.begin(), lat.end());
  return {{"n", n},
          {"elapsed_s", elapsed},
          {rate_key, static_cast<double>(n) / elapsed},
          {"p50_us", pct(lat, 0.50) * 1e6},
          {"p99_us", pct(lat, 0.99) * 1e6}};
}

Task<json::object> roundtrip_seq(const Sizes& sz) {
  const long n = sz.roundtrip_seq;
  Flow flow = identity_chain(3, policy_none);
  Headers headers{.tenant = "t"};
  flow.run(co_await asio::this_coro::executor);
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(n));
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    std::string trace = "rt-" + std::to_string(i);
    lat.push_back(co_await roundtrip(flow, headers, std::move(trace), static_cast<int>(i)));
  }
  double elapsed = seconds_since(t0);
  co_await flow.stop();
  co_return latency_summary(lat, n, elapsed, "roundtrips_per_s");
}

Task<void> rt_client(Flow& flow, const Headers& headers, int t, int per, std::vector<double>& lat) {
  for (int i = 0; i < per; ++i) {
    std::string trace = "rt-" + std::to_string(t) + "-" + std::to_string(i);
    lat.push_back(co_await roundtrip(flow, headers, std::move(trace), i));
  }
}

/// Waits until `count` tasks spawned with `done_handler()` have finished; rethrows the first error.
struct Join {
  explicit Join(asio::any_io_executor ex, int count) : timer(ex, Clock::time_point::max()), left(count) {}
  asio::steady_timer timer;
  int left;
  std::exception_ptr error;
  auto done_handler() {
    return [this](std::exception_ptr e) {
      if (e && !error) error = e;
      if (--left == 0) timer.cancel();
    };
  }
  Task<void> wait() {
    if (left > 0) co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (error) std::rethrow_exception(error);
  }
};

Task<json::object> roundtrip_conc(const Sizes& sz) {
  const int tasks = sz.roundtrip_tasks, per = sz.roundtrip_per_task;
  auto ex = co_await asio::this_coro::executor;
  Flow flow = identity_chain(3, policy_none);
  Headers headers{.tenant = "t"};
  flow.run(ex);
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(tasks) * per);
  Join join(ex, tasks);
  auto t0 = Clock::now();
  for (int t = 0; t < tasks; ++t) asio::co_spawn(ex, rt_client(flow, headers, t, per, lat), join.done_handler());
  co_await join.wait();
  double elapsed = seconds_since(t0);
  co_await flow.stop();
  const long n = static_cast<long>(tasks) * per;
  if (static_cast<long>(lat.size()) != n) throw std::runtime_error("lost round trips");
  auto out = latency_summary(lat, n, elapsed, "roundtrips_per_s");
  out["tasks"] = tasks;
  co_return out;
}

// ------------------------------------------------------------------------------ job worker

struct Job {
  std::string id, tenant;
  json::object payload;
};

struct JobStats {
  std::deque<Job> queue;
  long completed = 0, failed = 0;
  std::vector<double> lat;
};

constexpr Clock::duration kJobBound = std::chrono::seconds(300);

Task<void> process_job(JobStats& st, Job job) {
  std::string trace = "job-" + job.id;
  auto started = Clock::now();
  Flow flow = identity_chain(3, policy_none);  // the per-job factory: new Nodes and Flow
  flow.run(co_await asio::this_coro::executor);
  std::exception_ptr err;
  try {
    Message m;
    m.payload = json::value(job.payload);
    m.headers.tenant = job.tenant;
    m.trace_id = trace;
    std::any msg(std::move(m));
    std::string emit_trace = trace;
    Targets to;
    co_await flow.emit(std::move(msg), std::move(emit_trace), std::move(to));
    // Bounded like asyncio.wait_for (and src/worker): core's one-timer fetch_for, not a
    // `fetch || timer` parallel group.
    std::optional<std::any> result = co_await flow.fetch_for(trace, kJobBound);
    if (!result) throw std::runtime_error("job timed out");
    const Message* r = std::any_cast<Message>(&*result);
    const json::value* p = r ? std::any_cast<json::value>(&r->payload) : nullptr;
    if (!p || !p->is_object() || p->get_object() != job.payload) throw std::runtime_error("wrong result");
    ++st.completed;
    st.lat.push_back(seconds_since(started));
  } catch (...) {
    err = std::current_exception();  // mirrors the docs' retry / mark-failed branch
  }
  if (err) ++st.failed;
  co_await flow.stop();
}

Task<void> job_worker_loop(JobStats& st) {
  while (!st.queue.empty()) {
    Job job = std::move(st.queue.front());
    st.queue.pop_front();
    co_await process_job(st, std::move(job));
  }
}

Task<json::object> job_worker(const Sizes& sz) {
  const int n = sz.jobs, workers = sz.job_workers;
  auto ex = co_await asio::this_coro::executor;
  JobStats st;
  for (int i = 0; i < n; ++i) {
    json::object payload;
    payload["job"] = i;
    st.queue.push_back(Job{std::to_string(i), "t", std::move(payload)});
  }
  st.lat.reserve(static_cast<std::size_t>(n));
  Join join(ex, workers);
  auto t0 = Clock::now();
  for (int w = 0; w < workers; ++w) asio::co_spawn(ex, job_worker_loop(st), join.done_handler());
  co_await join.wait();
  double elapsed = seconds_since(t0);
  if (st.failed || st.completed != n)
    throw std::runtime_error("completed " + std::to_string(st.completed) + ", failed " + std::to_string(st.failed));
  auto out = latency_summary(st.lat, n, elapsed, "jobs_per_s");
  out["workers"] = workers;
  co_return out;
}

// ------------------------------------------------------------------------------ policy

json::object case_policy(const Sizes& sz, bool envelope, bool retry) {
  asio::io_context io(1);
  const long n = sz.policy;
  Flow flow = identity_chain(1, retry ? policy_retry : policy_none);
  double elapsed = 0;
  if (envelope) {
    Headers headers{.tenant = "t"};
    auto make = [&headers](int i) {
      Message m;
      m.payload = make_dict(i);
      m.headers = headers;
      return std::any(std::move(m));
    };
    elapsed = run_on(io, stream(flow, n, make, no_checkpoint));
  } else {
    elapsed = run_on(io, stream(flow, n, make_dict, no_checkpoint));
  }
  return {{"n", n}, {"elapsed_s", elapsed}, {"msgs_per_s", static_cast<double>(n) / elapsed}};
}

// ------------------------------------------------------------------------------ memory

Task<void> stop_all(std::vector<Flow>& flows) {
  for (auto& f : flows) co_await f.stop();
}

json::object case_idle_flow(const Sizes& sz) {
  asio::io_context io(1);
  io.poll();  // the loop exists before the first snapshot: it is shared, not the flow's
  json::object out;
  {
    const double h0 = heap_in_use();
    const double r0 = rss_mib();
    std::vector<Flow> flows;
    flows.push_back(identity_chain(3, policy_none));
    flows.back().run(io.get_executor());
    io.poll();  // node workers start and park on their empty inboxes
    io.restart();
    out["idle_flow_bytes"] = heap_in_use() - h0;
    out["idle_flow_rss_kib"] = (rss_mib() - r0) * 1024.0;
    run_on(io, [&]() -> Task<int> {
      co_await stop_all(flows);
      co_return 0;
    }());
  }
  {
    const int n = sz.idle_flows;
    std::vector<Flow> flows;
    flows.reserve(static_cast<std::size_t>(n));
    const double h0 = heap_in_use();
    const double r0 = rss_mib();
    for (int i = 0; i < n; ++i) {
      flows.push_back(identity_chain(3, policy_none));
      flows.back().run(io.get_executor());
    }
    io.poll();
    io.restart();
    out["idle_flows"] = n;
    out["idle_flow_avg_bytes"] = (heap_in_use() - h0) / n;
    out["idle_flow_avg_rss_kib"] = (rss_mib() - r0) * 1024.0 / n;
    run_on(io, [&]() -> Task<int> {
      co_await stop_all(flows);
      co_return 0;
    }());
  }
  out["n"] = 1;
  return out;
}

json::object case_rss(const Sizes& sz) {
  asio::io_context io(1);
  const long n = sz.rss_messages;
  const std::vector<long> marks = {n / 10, n / 2, n};
  Flow flow = identity_chain(3, policy_none);
  Headers headers{.tenant = "t"};
  auto make = [&headers](int i) {
    Message m;
    m.payload = make_dict(i);
    m.headers = headers;
    return std::any(std::move(m));
  };
  json::array at;
  const double start = rss_mib();
  auto checkpoint = [&](long received) {
    if (std::find(marks.begin(), marks.end(), received) != marks.end())
      at.push_back(json::object{{"messages", received}, {"rss_mib", rss_mib()}});
  };
  double elapsed = run_on(io, stream(flow, n, make, checkpoint));
  const double first = at.front().as_object().at("rss_mib").as_double();
  const double last = at.back().as_object().at("rss_mib").as_double();
  return {{"n", n},
          {"elapsed_s", elapsed},
          {"msgs_per_s", static_cast<double>(n) / elapsed},
          {"rss_start_mib", start},
          {"rss_at", at},
          {"rss_growth_mib", last - first}};
}

// ------------------------------------------------------------------------------ child

json::object run_child(const std::string& c, const Sizes& sz) {
  if (c == "throughput_dict") return case_throughput(sz, "dict");
  if (c == "throughput_message") return case_throughput(sz, "message");
  if (c == "throughput_int") return case_throughput(sz, "int");
  if (c == "baseline_handoff") return case_baseline(sz, false);
  if (c == "baseline_call") return case_baseline(sz, true);
  if (c == "idle_flow") return case_idle_flow(sz);
  if (c == "rss_10m") return case_rss(sz);
  if (c.starts_with("policy_")) {
    bool envelope = c.find("_message_") != std::string::npos;
    bool retry = c.ends_with("_retry");
    if (c != std::string("policy_") + (envelope ? "message" : "dict") + (retry ? "_retry" : "_none"))
      throw std::invalid_argument("unknown case " + c);
    return case_policy(sz, envelope, retry);
  }
  asio::io_context io(1);
  if (c == "roundtrip_seq") return run_on(io, roundtrip_seq(sz));
  if (c == "roundtrip_conc") return run_on(io, roundtrip_conc(sz));
  if (c == "job_worker") return run_on(io, job_worker(sz));
  throw std::invalid_argument("unknown case " + c);
}

// ------------------------------------------------------------------------------ driver

struct CpuSample {
  double busy_s = 0;
};

CpuSample machine_busy() {
  CpuSample s;
  std::ifstream f("/proc/stat");
  std::string cpu;
  f >> cpu;
  std::vector<long long> v;
  long long x;
  for (int i = 0; i < 8 && f >> x; ++i) v.push_back(x);
  if (v.size() == 8) {
    long long total = 0;
    for (auto t : v) total += t;
    s.busy_s = static_cast<double>(total - v[3] - v[4]) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  return s;
}

struct ChildRun {
  std::string out;
  int status = 0;
  double cpu_s = 0;
};

ChildRun spawn_self(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  ChildRun r;
  char buf[4096];
  ssize_t k;
  while ((k = read(fds[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(k));
  close(fds[0]);
  rusage ru{};
  wait4(pid, &r.status, 0, &ru);
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  return r;
}

std::string fmt_num(double v, int digits) {
  // thousands separators, like Python's "{:,.0f}"
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, std::fabs(v));
  std::string s(buf);
  auto dot = s.find('.');
  std::string ip = s.substr(0, dot), fp = dot == std::string::npos ? "" : s.substr(dot);
  std::string out;
  for (std::size_t i = 0; i < ip.size(); ++i) {
    if (i && (ip.size() - i) % 3 == 0) out += ',';
    out += ip[i];
  }
  return (v < 0 ? "-" : "") + out + fp;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt_range(const std::vector<double>& v, int digits = 0) {
  if (v.empty()) return "-";
  return fmt_num(median(v), digits) + " [" + fmt_num(*std::min_element(v.begin(), v.end()), digits) + "\u2013" +
         fmt_num(*std::max_element(v.begin(), v.end()), digits) + "]";
}

std::vector<double> field(const std::vector<json::object>& rs, const char* key) {
  std::vector<double> v;
  for (auto& r : rs)
    if (auto* p = r.if_contains(key); p && p->is_number()) v.push_back(p->to_number<double>());
  return v;
}

std::string pad(std::string s, std::size_t w) {
  // pad by code points (the en dash is 3 bytes)
  std::size_t cps = 0;
  for (unsigned char ch : s) cps += (ch & 0xC0) != 0x80;
  if (cps < w) s.append(w - cps, ' ');
  return s;
}

const std::map<std::string, std::pair<std::string, std::string>> kMetric = {
    {"throughput_dict", {"msgs_per_s", "msgs/s"}},     {"throughput_message", {"msgs_per_s", "msgs/s"}},
    {"throughput_int", {"msgs_per_s", "msgs/s"}},      {"baseline_handoff", {"msgs_per_s", "msgs/s"}},
    {"baseline_call", {"msgs_per_s", "msgs/s"}},
    {"roundtrip_seq", {"roundtrips_per_s", "roundtrips/s"}},
    {"roundtrip_conc", {"roundtrips_per_s", "roundtrips/s"}},
    {"job_worker", {"jobs_per_s", "jobs/s"}},          {"policy_dict_none", {"msgs_per_s", "msgs/s"}},
    {"policy_dict_retry", {"msgs_per_s", "msgs/s"}},   {"policy_message_none", {"msgs_per_s", "msgs/s"}},
    {"policy_message_retry", {"msgs_per_s", "msgs/s"}}, {"idle_flow", {"idle_flow_bytes", "B heap"}},
    {"rss_10m", {"msgs_per_s", "msgs/s"}}};

std::string summarize(const std::vector<json::object>& results, const json::object& env) {
  std::ostringstream o;
  o << "PenguiFlow C++ core_bench (" << json::value_to<std::string>(env.at("compiler")) << ", Boost "
    << json::value_to<std::string>(env.at("boost")) << ", " << json::value_to<std::string>(env.at("build")) << "), "
    << env.at("cpus").as_int64() << " CPUs, kernel " << json::value_to<std::string>(env.at("kernel")) << "\n";
  o << "logging: default (info, no middleware): no FlowEvent is built on the hot path\n\n";
  o << "others = CPU cores used by other processes on the machine during the run (median [min\u2013max])\n";
  std::string hdr = pad("case", 22) + " | " + pad("metric median [min\u2013max]", 38) + " | " + pad("p50 \u00b5s", 24) +
                    " | " + pad("p99 \u00b5s", 26) + " | " + pad("peak RSS MiB", 22) + " | " + pad("others", 18) + " | n";
  o << hdr << "\n" << std::string(hdr.size() - 4, '-') << "\n";
  auto of = [&](const std::string& c, bool ok) {
    std::vector<json::object> v;
    for (auto& r : results)
      if (r.at("case").as_string() == c && (r.contains("error") != ok)) v.push_back(r);
    return v;
  };
  for (auto& c : kCases) {
    auto rs = of(c, true);
    auto errs = of(c, false);
    if (rs.empty() && errs.empty()) continue;
    auto& [key, unit] = kMetric.at(c);
    std::string metric = rs.empty() ? "FAILED" : fmt_range(field(rs, key.c_str())) + " " + unit;
    std::string p50 = fmt_range(field(rs, "p50_us"), 1), p99 = fmt_range(field(rs, "p99_us"), 1);
    if (field(rs, "p50_us").empty()) p50 = p99 = "";
    std::string n = rs.empty() ? "" : json::serialize(rs[0].at("n"));
    o << pad(c, 22) << " | " << pad(metric, 38) << " | " << pad(p50, 24) << " | " << pad(p99, 26) << " | "
      << pad(fmt_range(field(rs, "peak_rss_mib"), 1), 22) << " | " << pad(fmt_range(field(rs, "others_cores"), 2), 18)
      << " | " << n << "\n";
    for (auto& e : errs)
      o << "    rep " << json::serialize(e.at("rep")) << " failed: " << json::value_to<std::string>(e.at("error")).substr(0, 300) << "\n";
  }
  o << "\n";
  auto msg = of("throughput_message", true);
  if (!msg.empty())
    o << "Message(payload, headers) construction alone (outside the flow): " << fmt_range(field(msg, "message_build_per_s"))
      << " objects/s\n";
  std::map<std::string, std::vector<double>> hop;
  for (auto c : {"throughput_dict", "throughput_message", "throughput_int", "baseline_handoff", "baseline_call"})
    hop[c] = field(of(c, true), "hop_ns");
  for (auto& [c, v] : hop)
    if (!v.empty()) o << "per hop (elapsed / n / " << kChainHops << " edges), " << pad(c, 19) << ": " << fmt_range(v, 1) << " ns\n";
  if (!hop["throughput_int"].empty() && !hop["baseline_handoff"].empty())
    o << "hop through a flow edge vs plain hand-off (int payloads): "
      << fmt_num(median(hop["throughput_int"]) / median(hop["baseline_handoff"]), 2) << "x (target <= 3x)\n";
  if (!hop["throughput_int"].empty() && !hop["baseline_call"].empty())
    o << "hop through a flow edge vs hand-off + one identity co_await per node (int payloads): "
      << fmt_num(median(hop["throughput_int"]) / median(hop["baseline_call"]), 2) << "x\n";
  for (auto kind : {"dict", "message"}) {
    auto a = field(of(std::string("policy_") + kind + "_none", true), "msgs_per_s");
    auto b = field(of(std::string("policy_") + kind + "_retry", true), "msgs_per_s");
    if (a.empty() || b.empty()) continue;
    double ma = median(a), mb = median(b);
    char buf[256];
    std::snprintf(buf, sizeof buf, "timeout+retry policy overhead (%s): %s -> %s msgs/s (%+.2f \u00b5s per message, %+.1f%%)\n", kind,
                  fmt_num(ma, 0).c_str(), fmt_num(mb, 0).c_str(), (1 / mb - 1 / ma) * 1e6, 100 * (mb / ma - 1));
    o << buf;
  }
  auto idle = of("idle_flow", true);
  if (!idle.empty()) {
    o << "idle 3-node flow (queue_maxsize 64), heap in use: " << fmt_range(field(idle, "idle_flow_bytes")) << " B (target < 65,536); average of "
      << json::serialize(idle[0].at("idle_flows")) << " idle flows: " << fmt_range(field(idle, "idle_flow_avg_bytes")) << " B heap, "
      << fmt_range(field(idle, "idle_flow_avg_rss_kib"), 1) << " KiB RSS\n";
  }
  for (auto& r : of("rss_10m", true)) {
    o << "RSS over " << fmt_num(r.at("n").to_number<double>(), 0) << " envelopes through the chain (rep "
      << json::serialize(r.at("rep")) << "): start " << fmt_num(r.at("rss_start_mib").as_double(), 1) << " MiB";
    for (auto& a : r.at("rss_at").as_array())
      o << ", at " << fmt_num(a.at("messages").to_number<double>(), 0) << ": " << fmt_num(a.at("rss_mib").as_double(), 1) << " MiB";
    o << " (growth " << fmt_num(r.at("rss_growth_mib").as_double(), 2) << " MiB)\n";
  }
  return o.str();
}

json::object environment() {
  utsname u{};
  uname(&u);
  std::string boost = std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000) + "." +
                      std::to_string(BOOST_VERSION % 100);
#ifdef NDEBUG
  const char* build = "NDEBUG";
#else
  const char* build = "assertions on";
#endif
#if defined(__SANITIZE_ADDRESS__)
  build = "ASan";
#endif
  return {{"compiler", std::string("g++ ") + __VERSION__},
          {"boost", boost},
          {"build", build},
          {"cpus", static_cast<std::int64_t>(sysconf(_SC_NPROCESSORS_ONLN))},
          {"kernel", u.release}};
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) out.push_back(x);
  return out;
}

int usage(int code) {
  std::cout << "usage: core_bench [--quick] [--py-sizes] [--reps R] [--cases a,b] [--out FILE]\n"
               "       core_bench --case NAME [--rep N] [--quick] [--py-sizes]   (child: one JSON line)\n"
               "       core_bench --list\ncases:";
  for (auto& c : kCases) std::cout << " " << c;
  std::cout << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::string one_case, out_path;
  std::vector<std::string> cases = kCases;
  int reps = 3, rep = 1;
  bool quick = false, py_sizes = false, reps_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--case") one_case = next();
      else if (a == "--rep") rep = std::stoi(next());
      else if (a == "--cases") cases = split(next());
      else if (a == "--reps") reps = std::stoi(next()), reps_given = true;
      else if (a == "--quick") quick = true;
      else if (a == "--py-sizes") py_sizes = true;
      else if (a == "--out") out_path = next();
      else if (a == "--list") {
        for (auto& c : kCases) std::cout << c << "\n";
        return 0;
      } else if (a == "--help" || a == "-h") return usage(0);
      else {
        std::cerr << "core_bench: unknown argument " << a << "\n";
        return usage(2);
      }
    } catch (const std::exception& e) {
      std::cerr << "core_bench: " << e.what() << "\n";
      return 2;
    }
  }
  const Sizes& sz = quick ? kQuickSizes : py_sizes ? kPySizes : kSizes;

  if (!one_case.empty()) {
    try {
      json::object r = run_child(one_case, sz);
      r["case"] = one_case;
      r["rep"] = rep;
      r["quick"] = quick;
      r["peak_rss_mib"] = peak_rss_mib();
      std::cout << json::serialize(r) << std::endl;
      return 0;
    } catch (const std::exception& e) {
      std::cerr << "core_bench --case " << one_case << ": " << e.what() << "\n";
      return 1;
    }
  }

  for (auto& c : cases)
    if (std::find(kCases.begin(), kCases.end(), c) == kCases.end()) {
      std::cerr << "core_bench: unknown case " << c << "\n";
      return usage(2);
    }
  if (quick && !reps_given) reps = 1;
  json::object env = environment();
  std::cout << json::serialize(json::object{{"environment", env}}) << std::endl;
  std::ofstream out;
  if (!out_path.empty()) {
    out.open(out_path, std::ios::app);
    out << json::serialize(json::object{{"case", "meta"}, {"reps", reps}, {"quick", quick}, {"py_sizes", py_sizes}, {"env", env}})
        << "\n";
  }
  std::vector<json::object> results;
  bool any_failed = false;
  // Interleave reps (rep 1 of every case, then rep 2, ...) so drift in background load
  // spreads over all cases, as bench_core.py does.
  for (int r = 1; r <= reps; ++r) {
    for (auto& c : cases) {
      std::vector<std::string> args = {"core_bench", "--case", c, "--rep", std::to_string(r)};
      if (quick) args.push_back("--quick");
      if (py_sizes) args.push_back("--py-sizes");
      auto b0 = machine_busy();
      auto t0 = Clock::now();
      ChildRun run = spawn_self(args);
      double wall = seconds_since(t0);
      auto b1 = machine_busy();
      json::object res;
      auto last_line = run.out.substr(0, run.out.find_last_not_of('\n') + 1);
      last_line = last_line.substr(last_line.find_last_of('\n') == std::string::npos ? 0 : last_line.find_last_of('\n') + 1);
      if (WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0 && !last_line.empty()) {
        res = json::parse(last_line).as_object();
      } else {
        any_failed = true;
        res = {{"case", c}, {"rep", r}, {"error", "child exited with status " + std::to_string(run.status) + "; stdout: " + run.out}};
      }
      double mine = run.cpu_s / wall, busy = (b1.busy_s - b0.busy_s) / wall;
      res["mine_cores"] = std::round(mine * 1000) / 1000;
      res["others_cores"] = std::round(std::max(0.0, busy - mine) * 1000) / 1000;
      std::cout << json::serialize(res) << std::endl;
      if (out.is_open()) out << json::serialize(res) << "\n" << std::flush;
      results.push_back(std::move(res));
    }
  }
  std::cout << "\n" << summarize(results, env);
  return any_failed ? 1 : 0;
}
