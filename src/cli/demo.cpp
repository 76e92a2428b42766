// `penguiflow demo`: the README's main job. A fresh embedded SQLite queue, a few thousand
// example jobs (some failing on purpose), a worker with a live progress line, a summary.
#include "cli_internal.hpp"

#include <penguiflow/core/logging.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace penguiflow::cli {

namespace json = boost::json;
using namespace penguiflow::queue;

namespace {

const char* kQueries[] = {
    "How do I export metrics to Prometheus?", "Why was my invoice charged twice?",
    "What is the retry policy for failed nodes?", "Summarise last quarter's billing changes",
    "Which dashboards show queue depth?",       "How do tenants stay isolated?",
};
const char* kRoadmapQueries[] = {
    "Investigate the crash in the ingest service", "Write a summary of the onboarding documents",
    "Triage the error spike from last night",      "Collect the design documents for the worker",
};

std::vector<NewJob> demo_jobs(int n, const worker::FlowRegistry& flows, int& expected_dead) {
  std::vector<NewJob> jobs;
  jobs.reserve(n);
  expected_dead = 0;
  for (int i = 0; i < n; ++i) {
    NewJob j;
    j.tenant = i % 3 == 0 ? "acme" : (i % 3 == 1 ? "globex" : "initech");
    j.max_attempts = 3;
    j.deadline_s = 10;
    int r = i % 200;
    if (r < 2 && flows.contains("flaky")) {  // always fails: retried, then dead
      j.flow = "flaky";
      j.payload = json::object{{"fail", true}};
      ++expected_dead;
    } else if (r == 2 && flows.contains("quickstart")) {  // bad payload: dead at once, field named
      j.flow = "quickstart";
      j.payload = json::object{{"query", 42}};
      ++expected_dead;
    } else if (r < 11 && flows.contains("unreliable")) {  // fails its first attempt, then succeeds
      j.flow = "unreliable";
      j.payload = json::object{{"order", i}};
    } else if (r < 40 && flows.contains("roadmap")) {
      j.flow = "roadmap";
      j.payload = json::object{{"query", kRoadmapQueries[i % 4]}};
    } else {
      j.flow = flows.contains("quickstart") ? "quickstart" : flows.list().front().first;
      j.payload = json::object{{"query", kQueries[i % 6]}};
    }
    jobs.push_back(std::move(j));
  }
  // One job for a flow nobody runs: dead at fetch with "unknown flow".
  NewJob ghost;
  ghost.flow = "no-such-flow";
  ghost.tenant = "acme";
  ghost.payload = json::object{};
  jobs.push_back(std::move(ghost));
  ++expected_dead;
  return jobs;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace

int run_demo(const DemoOptions& o, worker::FlowRegistry flows) {
  if (flows.list().empty()) {
    std::fprintf(stderr, "penguiflow demo: this binary registers no flows\n");
    return 1;
  }
  const bool tty = isatty(STDOUT_FILENO);
  // A fresh file every run, so the numbers describe this run.
  if (o.queue.rfind("sqlite://", 0) == 0) {
    std::string path = o.queue.substr(std::string("sqlite://").size());
    for (auto* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  }
  std::printf("PenguiFlow demo: %d example jobs on %s (%d threads x %d in flight)\n", o.jobs, o.queue.c_str(), o.threads,
              o.concurrency);

  int expected_dead = 0;
  auto jobs = demo_jobs(o.jobs, flows, expected_dead);
  const std::size_t total = jobs.size();
  auto t_enqueue = std::chrono::steady_clock::now();
  int rc = with_queue(o.queue, [&](JobQueue& q) -> Task<int> {
    for (std::size_t i = 0; i < jobs.size(); i += 1000) {
      std::vector<NewJob> chunk(std::make_move_iterator(jobs.begin() + i),
                                std::make_move_iterator(jobs.begin() + std::min(jobs.size(), i + 1000)));
      co_await q.enqueue_bulk(std::move(chunk));
    }
    co_return 0;
  });
  if (rc != 0) return rc;
  double enqueue_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_enqueue).count();
  std::printf("enqueued %zu jobs in %.2f s (flows: quickstart, roadmap, unreliable, flaky; a few fail on purpose)\n", total,
              enqueue_s);

  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<std::uint64_t> settled{0};
  std::map<std::string, std::string> first_dead;  // flow -> a reason
  worker::WorkerOptions wo;
  wo.queue_url = o.queue;
  wo.concurrency = o.concurrency;
  wo.threads = o.threads;
  wo.exit_when_empty = true;
  wo.retry_base_s = 0.05;
  wo.retry_max_s = 0.5;
  wo.drain_timeout_s = 5;
  wo.fetch_wait = std::chrono::milliseconds(100);
  wo.on_report = [&](const worker::JobReport& r) {
    std::lock_guard l(mu);
    if (r.outcome == worker::Outcome::succeeded || r.outcome == worker::Outcome::dead) {
      ++settled;
      latencies.push_back(r.latency_s);
    }
    if (r.outcome == worker::Outcome::dead) first_dead.emplace(r.flow, r.reason);
  };
  worker::Worker w(std::move(flows), wo);

  std::atomic<bool> running{true};
  auto t0 = std::chrono::steady_clock::now();
  std::thread progress([&] {
    std::uint64_t last_print = 0;
    while (running) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto s = w.stats();
      double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // Unknown-flow jobs go dead inside the backend, without a report: count by stats.
      std::uint64_t done = s.succeeded + s.dead;
      int width = 30, filled = int(width * double(std::min<std::uint64_t>(done, total)) / double(total));
      std::string bar(filled, '#');
      bar.resize(width, '.');
      if (tty) {
        std::printf("\r  [%s] %6llu/%zu  ok %llu  retried %llu  dead %llu  in flight %llu  %.0f jobs/s   ", bar.c_str(),
                    (unsigned long long)done, total, (unsigned long long)s.succeeded, (unsigned long long)s.retried,
                    (unsigned long long)s.dead, (unsigned long long)s.in_flight, el > 0 ? done / el : 0.0);
        std::fflush(stdout);
      } else if (done >= last_print + total / 10 || !running) {
        last_print = done;
        std::printf("  %6llu/%zu  ok %llu  retried %llu  dead %llu  %.0f jobs/s\n", (unsigned long long)done, total,
                    (unsigned long long)s.succeeded, (unsigned long long)s.retried, (unsigned long long)s.dead,
                    el > 0 ? done / el : 0.0);
      }
    }
  });
  int code = w.run();
  running = false;
  progress.join();
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty) std::printf("\n");
  if (code != 0) {
    std::fprintf(stderr, "penguiflow demo: worker failed: %s\n", w.last_error().c_str());
    return code;
  }

  // The queue is the source of truth for the summary.
  std::int64_t q_succeeded = 0, q_dead = 0, q_left = 0;
  with_queue(o.queue, [&](JobQueue& q) -> Task<int> {
    auto c = co_await q.counts();
    q_succeeded = c.by_state["succeeded"];
    q_dead = c.by_state["dead"];
    q_left = c.by_state["queued"] + c.by_state["running"];
    co_return 0;
  });
  auto s = w.stats();
  std::lock_guard l(mu);
  double p50 = percentile(latencies, 0.50) * 1000, p99 = percentile(latencies, 0.99) * 1000;
  std::printf("\nSummary\n");
  std::printf("  jobs            %zu in %.2f s  (%.0f jobs/s)\n", total, el, total / el);
  std::printf("  succeeded       %lld\n", (long long)q_succeeded);
  std::printf("  retried         %llu attempts (then succeeded or went dead)\n", (unsigned long long)s.retried);
  std::printf("  dead            %lld  (expected %d: failing on purpose)\n", (long long)q_dead, expected_dead);
  std::printf("  left in queue   %lld\n", (long long)q_left);
  std::printf("  latency         p50 %.2f ms, p99 %.2f ms  (fetch to settle)\n", p50, p99);
  if (!first_dead.empty()) {
    std::printf("  dead letters, one reason per flow:\n");
    for (auto& [flow, reason] : first_dead) std::printf("    %-12s %s\n", flow.c_str(), reason.c_str());
  }
  std::printf("\nWhere to look next:\n");
  const char* cmd = o.program.c_str();  // as invoked: scripts/demo.sh runs build/apps/penguiflow/penguiflow
  std::printf("  %s stats --queue %s\n", cmd, o.queue.c_str());
  std::printf("  %s dead  --queue %s\n", cmd, o.queue.c_str());
  std::printf("  %s jobs  --queue %s --state succeeded --limit 5 --json\n", cmd, o.queue.c_str());
  std::printf("  docs/operations.md (running workers), docs/architecture.md (how it works)\n");
  bool ok = q_left == 0 && q_dead == expected_dead && q_succeeded + q_dead == std::int64_t(total);
  if (!ok) std::printf("\nUNEXPECTED: the counts above do not add up; see the logs.\n");
  return ok ? 0 : 1;
}

}  // namespace penguiflow::cli
