// worker_bench: the job worker end to end (fetch -> a 3-node flow per job -> settle) on any
// queue URL, in the table shape of ../shared/bench/peers so the numbers sit beside the
// peers' "process" rows (bench/run_peers_side_by_side.sh does that in one run).
//
//   worker_bench --queue URL [--jobs 50000] [--concurrency 50[,200]] [--threads 1] [--fetch-lanes 0]
//                [--mode stateless|long-lived] [--runs R] [--cases e2e,idle,shutdown]
//                [--idle-seconds 10] [--idle-probe CMD] [--server-cpu-probe CMD]
//                [--drain-timeout 2] [--peer NAME]
//
// Cases (each measurement runs in a fresh child process and a fresh queue namespace, so the
// queue starts empty and peak RSS / CPU belong to that measurement alone):
//   e2e       N no-op jobs are bulk-enqueued (chunks of 1,000, by a separate child), then a
//             penguiflow::worker::Worker (exit_when_empty, handle_signals = false) runs them:
//             every job is a 3-node identity flow (Message in, Message out; a new flow per
//             job in stateless mode, one per shard in long-lived mode), its result stored by
//             complete(). Reported: jobs/s from the Worker's start (run(): queue open
//             included) to the N-th completion, CPU µs/job of this process (user+sys, every
//             thread, over the same span; a server's own CPU is not included), peak RSS,
//             and with --server-cpu-probe CMD (a shell command printing the server's CPU
//             seconds so far) the server's CPU µs/job over the same span.
//   idle      a worker at concurrency 64 on an empty queue: RSS after 1 s, the worker's own
//             CPU while idle, and, with --idle-probe CMD (a shell command printing one number,
//             e.g. a server's command counter), the probe's delta over --idle-seconds.
//   shutdown  64 jobs whose flow sleeps for an hour, a worker at concurrency 64 with
//             --drain-timeout S; once all 64 are in flight, request_stop(): the time until
//             run() returns (target: S + 1 s) and how many jobs were handed back.
// Output: one JSON line per measurement ({"peer","metric","variant","value","unit"}, as the
// peers print), then a Markdown table: median and min – max over the runs.
#include <penguiflow/penguiflow.hpp>
#include <penguiflow/queue/queue.hpp>
#include <penguiflow/worker/worker.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>

#include "bench_table.hpp"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string url;
  int jobs = 50000;
  std::vector<int> concurrency{50};
  int threads = 1;
  int fetch_lanes = 0;  // 0: the backend's choice, as the worker's default
  worker::FlowMode mode = worker::FlowMode::stateless;
  int runs = 1;
  std::vector<std::string> cases{"e2e", "idle", "shutdown"};
  double idle_seconds = 10;
  std::string idle_probe;
  std::string server_cpu_probe;
  double drain_timeout_s = 2;
  std::string peer;
};

Options g_opt;

using penguiflow::bench::Row;
using penguiflow::bench::run_probe;
std::vector<Row> g_rows;

// ------------------------------------------------------------------ output (child side)

void record(const std::string& metric, const std::string& variant, double value, const std::string& unit) {
  json::object o{{"peer", g_opt.peer}, {"metric", metric}, {"variant", variant}, {"value", value}, {"unit", unit}};
  std::cout << json::serialize(o) << std::endl;
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // Linux: KiB
}

double current_rss_mib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return NAN;
}

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string mode_name() { return g_opt.mode == worker::FlowMode::stateless ? "stateless" : "long-lived"; }

std::string variant_for(int concurrency) {
  std::string v = "c=" + std::to_string(concurrency) + ", " + mode_name();
  if (g_opt.threads > 1) v += ", " + std::to_string(g_opt.threads) + " threads";
  return v;
}

// ------------------------------------------------------------------ flows and queue helpers

/// The per-job flow: three identity nodes on Message (typed, default validation).
Flow make_identity_flow() {
  auto same = [](Message m, Context&) -> Task<Message> { co_return m; };
  Node a("a", same), b("b", same), c("c", same);
  return Flow({a.to(b), b.to(c), c.to()});
}

/// A flow whose one node sleeps for an hour (cancellable): jobs stay in flight.
Flow make_hang_flow() {
  Node hang("hang", [](Message m, Context& ctx) -> Task<Message> {
    co_await ctx.sleep(3600);
    co_return m;
  });
  return Flow({hang.to()});
}

worker::FlowRegistry registry() {
  worker::FlowRegistry flows;
  flows.add("noop3", make_identity_flow, "3 identity nodes");
  flows.add("hang", make_hang_flow, "sleeps an hour");
  return flows;
}

queue::QueueConfig config_for(const std::string& ns) {
  queue::QueueConfig c;
  c.namespace_ = ns;
  return c;
}

/// Runs `fn(queue)` on a private io_context (one thread) against namespace `ns`.
template <class F>
void with_queue(const std::string& ns, F fn) {
  asio::io_context io(1);
  auto task = [&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto q = co_await queue::open_queue(ex, g_opt.url, config_for(ns));
    std::exception_ptr err;
    try {
      co_await fn(*q);
    } catch (...) {
      err = std::current_exception();
    }
    co_await q->close();
    if (err) std::rethrow_exception(err);
  };
  auto fut = asio::co_spawn(io, task(), asio::use_future);
  io.run();
  fut.get();
}

void enqueue(const std::string& ns, const std::string& flow, int n) {
  with_queue(ns, [&](queue::JobQueue& q) -> Task<void> {
    for (int done = 0; done < n;) {
      int k = std::min(1000, n - done);
      std::vector<queue::NewJob> chunk;
      chunk.reserve(k);
      for (int i = 0; i < k; ++i) {
        queue::NewJob j;
        j.flow = flow;
        j.tenant = "bench";
        j.payload = json::object{{"i", done + i}};
        chunk.push_back(std::move(j));
      }
      co_await q.enqueue_bulk(std::move(chunk));
      done += k;
    }
  });
}

queue::Counts counts(const std::string& ns) {
  queue::Counts c;
  with_queue(ns, [&](queue::JobQueue& q) -> Task<void> { c = co_await q.counts(); });
  return c;
}

bool is_memory() { return g_opt.url.rfind("memory:", 0) == 0; }

worker::WorkerOptions worker_options(const std::string& ns, int concurrency) {
  worker::WorkerOptions o;
  o.queue_url = g_opt.url;
  o.concurrency = concurrency;
  o.threads = g_opt.threads;
  // memory:// is one queue per handle (each filled here for its shard): one lane each.
  o.fetch_lanes = is_memory() ? 1 : g_opt.fetch_lanes;
  o.mode = g_opt.mode;
  o.handle_signals = false;
  o.queue_config = config_for(ns);
  return o;
}

// ------------------------------------------------------------------ cases (each in a child)



void case_e2e(const std::string& ns, int concurrency) {
  const int n = g_opt.jobs;
  std::atomic<int> done{0};
  Clock::time_point t_last{};
  double cpu_last = 0, server_cpu_last = NAN;
  auto o = worker_options(ns, concurrency);
  o.exit_when_empty = true;
  // memory:// lives in one process: each shard's queue is filled when the shard opens it,
  // and the clocks start once every shard is filled (the worker's own cost, no backend I/O).
  Clock::time_point t0_memory{};
  double c0_memory = 0;
  std::atomic<int> opened{0}, filled{0};
  if (is_memory()) {
    o.open_queue = [&](asio::any_io_executor ex, queue::QueueConfig cfg) -> Task<std::unique_ptr<queue::JobQueue>> {
      auto q = co_await queue::open_queue(ex, "memory://", std::move(cfg));
      const int shards = g_opt.threads, index = opened.fetch_add(1);
      int mine = n / shards + (index < n % shards ? 1 : 0);
      for (int done_here = 0; done_here < mine;) {
        int k = std::min(1000, mine - done_here);
        std::vector<queue::NewJob> chunk;
        for (int i = 0; i < k; ++i) {
          queue::NewJob j;
          j.flow = "noop3";
          j.tenant = "bench";
          j.payload = json::object{{"i", done_here + i}};
          chunk.push_back(std::move(j));
        }
        co_await q->enqueue_bulk(std::move(chunk));
        done_here += k;
      }
      if (filled.fetch_add(1) + 1 == shards) {
        t0_memory = Clock::now();
        c0_memory = cpu_seconds();
      }
      co_return q;
    };
  }
  o.on_report = [&](const worker::JobReport& r) {
    if (r.outcome != worker::Outcome::succeeded) return;
    if (done.fetch_add(1) + 1 == n) {  // the N-th completion: stop the clocks
      t_last = Clock::now();
      cpu_last = cpu_seconds();
      server_cpu_last = run_probe(g_opt.server_cpu_probe);  // the worker's connections are still open
    }
  };
  worker::Worker w(registry(), std::move(o));
  const double server_cpu0 = run_probe(g_opt.server_cpu_probe);
  double c0 = cpu_seconds();
  auto t0 = Clock::now();
  int rc = w.run();
  if (rc != 0) throw std::runtime_error("worker exited " + std::to_string(rc) + ": " + w.last_error());
  if (is_memory()) {
    t0 = t0_memory;
    c0 = c0_memory;
  }
  auto st = w.stats();
  if (done.load() != n || st.succeeded != static_cast<std::uint64_t>(n))
    throw std::runtime_error("expected " + std::to_string(n) + " successes, got " + std::to_string(st.succeeded) +
                             " (retried " + std::to_string(st.retried) + ", dead " + std::to_string(st.dead) + ")");
  const std::string v = variant_for(concurrency);
  record("end-to-end (3-node flow per job)", v, n / secs(t_last - t0), "jobs/s");
  record("end-to-end cpu", v, (cpu_last - c0) / n * 1e6, "µs/job");
  record("end-to-end peak RSS", v, peak_rss_mib(), "MiB");
  if (!std::isnan(server_cpu0) && !std::isnan(server_cpu_last))
    record("end-to-end server cpu (--server-cpu-probe)", v, (server_cpu_last - server_cpu0) / n * 1e6, "µs/job");
  if (is_memory()) return;  // the shards' queues are gone with the worker
  auto c = counts(ns);
  if (c.by_state["queued"] + c.by_state["running"] != 0 || c.by_state["succeeded"] != n)
    throw std::runtime_error("unexpected final counts: queued " + std::to_string(c.by_state["queued"]) + ", running " +
                             std::to_string(c.by_state["running"]) + ", succeeded " + std::to_string(c.by_state["succeeded"]));
}

/// Runs the idle probe command; its output's last number (NaN when none).
double probe() { return run_probe(g_opt.idle_probe); }

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

void case_idle(const std::string& ns) {
  const int c = 64;
  worker::Worker w(registry(), worker_options(ns, c));
  std::thread t([&] { w.run(); });
  sleep_s(1.0);  // queue opened, shards parked in their fetch wait
  const std::string v = "c=" + std::to_string(c) + ", " + mode_name() + ", " + std::to_string(g_opt.threads) + " thread(s)";
  record("idle worker RSS", v, current_rss_mib(), "MiB");
  double p0 = probe(), c0 = cpu_seconds();
  auto t0 = Clock::now();
  sleep_s(g_opt.idle_seconds);
  double p1 = probe(), c1 = cpu_seconds();
  double span = secs(Clock::now() - t0);
  record("idle worker CPU", v, (c1 - c0) / span * 1e3, "ms CPU/s");
  if (!std::isnan(p0) && !std::isnan(p1))
    record("idle server load (--idle-probe delta)", v + ", over " + std::to_string(int(std::lround(g_opt.idle_seconds))) + " s",
           p1 - p0, "ops");
  w.request_stop();
  t.join();
}

void case_shutdown(const std::string& ns) {
  const int c = 64;
  auto o = worker_options(ns, c);
  o.drain_timeout_s = g_opt.drain_timeout_s;
  o.threads = 1;
  if (is_memory()) {
    o.open_queue = [c](asio::any_io_executor ex, queue::QueueConfig cfg) -> Task<std::unique_ptr<queue::JobQueue>> {
      auto q = co_await queue::open_queue(ex, "memory://", std::move(cfg));
      for (int i = 0; i < c; ++i) {
        queue::NewJob j;
        j.flow = "hang";
        j.tenant = "bench";
        j.payload = json::object{{"i", i}};
        co_await q->enqueue(std::move(j));
      }
      co_return q;
    };
  } else {
    enqueue(ns, "hang", c);
  }
  worker::Worker w(registry(), std::move(o));
  std::thread t([&] { w.run(); });
  auto bound = Clock::now() + std::chrono::seconds(60);
  while (w.stats().in_flight < static_cast<std::uint64_t>(c) && Clock::now() < bound)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool all_in = w.stats().in_flight == static_cast<std::uint64_t>(c);
  sleep_s(0.2);  // the flows are parked in their sleep
  auto t0 = Clock::now();
  w.request_stop();
  t.join();
  double s = secs(Clock::now() - t0);
  if (!all_in) throw std::runtime_error("shutdown: only " + std::to_string(w.stats().fetched) + " of 64 jobs got in flight");
  char dt[32];
  std::snprintf(dt, sizeof dt, "%g", g_opt.drain_timeout_s);
  const std::string v = std::to_string(c) + " in flight, drain timeout " + dt + " s, " + mode_name();
  record("shutdown time", v, s, "s");
  record("shutdown handed back", v, double(w.stats().handed_back), "jobs");
  if (is_memory()) return;
  auto cn = counts(ns);
  record("shutdown: queued again after stop", v, double(cn.by_state["queued"]), "jobs");
}

// ------------------------------------------------------------------ parent: fork per case

int g_ns_counter = 0;
std::string fresh_ns() { return "wb_" + std::to_string(::getpid()) + "_" + std::to_string(g_ns_counter++); }

/// Runs `fn` in a forked child whose stdout goes to a pipe; echoes and records its JSON
/// lines. The parent never starts a thread or an io_context, so fork is safe. Returns
/// whether the child succeeded.
template <class F>
bool in_child(const std::string& what, F fn) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::cout.flush();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(fds[1], 1);
    ::close(fds[1]);
    int rc = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      std::cerr << "worker_bench: " << what << ": " << e.what() << std::endl;
      rc = 1;
    }
    std::cout.flush();
    std::_Exit(rc);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t k; (k = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(k));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::cout << line << std::endl;
    try {
      auto o = json::parse(line).as_object();
      auto metric = json::value_to<std::string>(o.at("metric"));
      auto variant = json::value_to<std::string>(o.at("variant"));
      double value = o.at("value").to_number<double>();
      auto it = std::find_if(g_rows.begin(), g_rows.end(), [&](auto& r) { return r.metric == metric && r.variant == variant; });
      if (it == g_rows.end()) g_rows.push_back(Row{metric, variant, json::value_to<std::string>(o.at("unit")), {value}});
      else it->values.push_back(value);
    } catch (const std::exception&) {
    }
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << (why.empty() ? "" : "worker_bench: " + why + "\n")
            << "usage: worker_bench --queue URL [--jobs 50000] [--concurrency 50[,200]] [--threads 1] [--fetch-lanes 0]\n"
               "                    [--mode stateless|long-lived] [--runs R] [--cases e2e,idle,shutdown]\n"
               "                    [--idle-seconds 10] [--idle-probe CMD] [--server-cpu-probe CMD]\n"
               "                    [--drain-timeout 2] [--peer NAME]\n";
  std::exit(2);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
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
      else if (a == "--jobs") g_opt.jobs = std::max(1, std::stoi(next()));
      else if (a == "--threads") g_opt.threads = std::max(1, std::stoi(next()));
      else if (a == "--fetch-lanes") g_opt.fetch_lanes = std::max(0, std::stoi(next()));
      else if (a == "--runs") g_opt.runs = std::max(1, std::stoi(next()));
      else if (a == "--idle-seconds") g_opt.idle_seconds = std::stod(next());
      else if (a == "--idle-probe") g_opt.idle_probe = next();
      else if (a == "--server-cpu-probe") g_opt.server_cpu_probe = next();
      else if (a == "--drain-timeout") g_opt.drain_timeout_s = std::stod(next());
      else if (a == "--peer") g_opt.peer = next();
      else if (a == "--cases") g_opt.cases = split(next());
      else if (a == "--mode") {
        auto m = next();
        if (m == "stateless") g_opt.mode = worker::FlowMode::stateless;
        else if (m == "long-lived") g_opt.mode = worker::FlowMode::long_lived;
        else usage("--mode is stateless or long-lived");
      } else if (a == "--concurrency") {
        g_opt.concurrency.clear();
        for (auto& p : split(next())) g_opt.concurrency.push_back(std::max(1, std::stoi(p)));
      } else if (a == "--help" || a == "-h") usage("");
      else usage("unknown option " + a);
    } catch (const std::invalid_argument&) {
      usage(a + " needs a number");
    }
  }
  if (g_opt.url.empty()) usage("--queue is required");
  for (auto& c : g_opt.cases)
    if (c != "e2e" && c != "idle" && c != "shutdown") usage("unknown case " + c);
  if (g_opt.peer.empty()) g_opt.peer = "penguiflow-cpp (" + g_opt.url.substr(0, g_opt.url.find(':')) + ")";

  configure_logging(LoggingOptions{.level = LogLevel::warn});  // no per-run start/stop records

  auto want = [](const char* c) { return std::find(g_opt.cases.begin(), g_opt.cases.end(), c) != g_opt.cases.end(); };
  bool ok = true;
  for (int r = 0; r < g_opt.runs; ++r) {
    if (want("e2e"))
      for (int c : g_opt.concurrency) {
        auto ns = fresh_ns();
        if (!is_memory() && !in_child("enqueue", [&] { enqueue(ns, "noop3", g_opt.jobs); })) {
          ok = false;
          continue;
        }
        ok &= in_child("e2e", [&] { case_e2e(ns, c); });
      }
    if (want("idle")) {
      auto ns = fresh_ns();
      ok &= in_child("idle", [&] { case_idle(ns); });
    }
    if (want("shutdown")) {
      auto ns = fresh_ns();
      ok &= in_child("shutdown", [&] { case_shutdown(ns); });
    }
  }
  penguiflow::bench::print_table(g_opt.peer, g_rows);
  return ok ? 0 : 1;
}
