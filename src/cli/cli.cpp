// Subcommands of `penguiflow` (DESIGN.md, "The command line"). Every flag has an
// environment fallback; bad flags exit 2 with a message; failed operations exit 1 with
// a message naming the cause (URLs shown with their password redacted).
#include "cli_internal.hpp"

#include <penguiflow/cli/cli.hpp>
#include <penguiflow/core/logging.hpp>
#include <penguiflow/observe/http.hpp>
#include <penguiflow/observe/metrics.hpp>
#include <penguiflow/queue/job_codec.hpp>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

namespace penguiflow::cli {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace penguiflow::queue;

int with_queue(const std::string& url, const std::function<Task<int>(JobQueue&)>& fn) {
  return with_queue(url, QueueConfig{}, fn);
}

int with_queue(const std::string& url, const QueueConfig& config, const std::function<Task<int>(JobQueue&)>& fn) {
  asio::io_context io(1);
  auto fut = asio::co_spawn(io, [&]() -> Task<int> {
    auto q = co_await open_queue(co_await asio::this_coro::executor, url, config);
    std::exception_ptr err;
    int rc = 1;
    try {
      rc = co_await fn(*q);
    } catch (...) {
      err = std::current_exception();
    }
    co_await q->close();
    if (err) std::rethrow_exception(err);
    co_return rc;
  }, asio::use_future);
  io.run();
  try {
    return fut.get();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "penguiflow: %s\n", e.what());
    return 1;
  }
}

namespace {

std::string fmt_time(double unix_s) {
  if (unix_s <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void print_jobs(const std::vector<Job>& jobs, bool as_json, bool with_reason) {
  if (as_json) {
    json::array arr;
    for (auto& j : jobs) arr.push_back(job_to_json(j));
    std::cout << json::serialize(arr) << "\n";
    return;
  }
  std::printf("%-26s  %-10s  %-12s  %-12s  %8s  %-20s%s\n", "ID", "STATE", "FLOW", "TENANT", "ATTEMPTS", "RUN_AT",
              with_reason ? "  REASON" : "");
  for (auto& j : jobs) {
    std::printf("%-26s  %-10s  %-12s  %-12s  %4d/%-3d  %-20s%s%s\n", j.id.c_str(), std::string(to_string(j.state)).c_str(),
                j.flow.c_str(), j.tenant.c_str(), j.attempts, j.max_attempts, fmt_time(j.run_at).c_str(),
                with_reason ? "  " : "", with_reason ? j.reason.c_str() : "");
  }
  if (jobs.empty()) std::printf("(no jobs)\n");
}

struct Common {
  std::string queue = "sqlite://./penguiflow.db";
  QueueConfig config;  // namespace_ from --namespace
  std::string tenant;
  bool json = false;
};

/// --namespace: the table prefix (SQLite), schema (PostgreSQL) or key tag (Redis).
void add_namespace(CLI::App* app, std::string& ns) {
  app->add_option("--namespace", ns, "Queue namespace: SQLite table prefix, PostgreSQL schema, Redis key tag")
      ->envname("PENGUIFLOW_NAMESPACE")
      ->capture_default_str();
}

void add_common(CLI::App* app, Common& c, bool tenant = true) {
  app->add_option("-q,--queue", c.queue, "Queue URL: sqlite:///path.db, postgresql://user@host:port/db, redis://host:port/db, memory://")
      ->envname("PENGUIFLOW_QUEUE")
      ->capture_default_str();
  add_namespace(app, c.config.namespace_);
  if (tenant) app->add_option("-t,--tenant", c.tenant, "Only this tenant's jobs")->envname("PENGUIFLOW_TENANT");
  app->add_flag("--json", c.json, "Machine-readable JSON output");
}

std::optional<std::string> opt(const std::string& s) { return s.empty() ? std::nullopt : std::optional<std::string>(s); }

LoggingOptions logging_from(const std::string& format, const std::string& level) {
  LoggingOptions lo;
  if (format == "json") lo.format = LogFormat::json;
  else if (format == "text") lo.format = LogFormat::text;
  else throw CLI::ValidationError("--log-format", "must be json or text, got '" + format + "'");
  try {
    lo.level = parse_log_level(level);
  } catch (const std::invalid_argument& e) {
    throw CLI::ValidationError("--log-level", e.what());
  }
  return lo;
}

}  // namespace

int run(int argc, char** argv, worker::FlowRegistry flows) {
  CLI::App app{"penguiflow: run PenguiFlow flows as jobs from a queue (SQLite, PostgreSQL, Redis)"};
  app.require_subcommand(1);
  app.fallthrough();  // --log-format / --log-level also after the subcommand
  app.set_version_flag("--version", "penguiflow 0.1.0");
  std::string log_format = "text", log_level = "info";
  app.add_option("--log-format", log_format, "Log records as json or text")->envname("PENGUIFLOW_LOG_FORMAT")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->envname("PENGUIFLOW_LOG_LEVEL")->capture_default_str();

  // ------------------------------------------------------------ demo
  DemoOptions demo;
  auto* demo_cmd = app.add_subcommand("demo", "Enqueue example jobs into an embedded SQLite queue and run a worker on them, with live progress and a summary");
  demo_cmd->add_option("--jobs", demo.jobs, "How many example jobs")->check(CLI::Range(1, 10000000))->capture_default_str();
  demo_cmd->add_option("-q,--queue", demo.queue, "Queue URL for the demo (recreated when it is a SQLite file)")->envname("PENGUIFLOW_DEMO_QUEUE")->capture_default_str();
  demo_cmd->add_option("--concurrency", demo.concurrency, "Jobs in flight per thread")->check(CLI::Range(1, 100000))->capture_default_str();
  demo_cmd->add_option("--threads", demo.threads, "Worker threads (shards)")->check(CLI::Range(1, 256))->capture_default_str();

  // ------------------------------------------------------------ worker
  worker::WorkerOptions wo;
  std::string mode = "stateless", metrics_addr;
  auto* worker_cmd = app.add_subcommand("worker", "Run a worker: fetch jobs, run their flows, settle them; SIGTERM/SIGINT drain and exit 0");
  worker_cmd->add_option("-q,--queue", wo.queue_url, "Queue URL")->envname("PENGUIFLOW_QUEUE")->capture_default_str();
  add_namespace(worker_cmd, wo.queue_config.namespace_);
  worker_cmd->add_option("-c,--concurrency", wo.concurrency, "Flows running at once per thread (up to as many finished jobs may wait for their settle to commit)")->envname("PENGUIFLOW_CONCURRENCY")->check(CLI::Range(1, 100000))->capture_default_str();
  worker_cmd->add_option("--threads", wo.threads, "Shards (event-loop threads)")->envname("PENGUIFLOW_THREADS")->check(CLI::Range(1, 256))->capture_default_str();
  worker_cmd->add_option("--fetch-lanes", wo.fetch_lanes, "Queue handles fetching at once per thread, each with a share of the slots (0: the backend's choice: 2 on Redis, else 1; at most concurrency/8)")->envname("PENGUIFLOW_FETCH_LANES")->check(CLI::Range(0, 64))->capture_default_str();
  worker_cmd->add_option("--mode", mode, "stateless (new flow per job) or long-lived")->envname("PENGUIFLOW_MODE")->check(CLI::IsMember({"stateless", "long-lived"}))->capture_default_str();
  worker_cmd->add_option("--rebuild-after-jobs", wo.rebuild_after_jobs, "long-lived: rebuild a flow after N jobs")->envname("PENGUIFLOW_REBUILD_AFTER_JOBS")->check(CLI::PositiveNumber)->capture_default_str();
  worker_cmd->add_option("--rebuild-after-failures", wo.rebuild_after_failures, "long-lived: rebuild a flow after M failed jobs")->envname("PENGUIFLOW_REBUILD_AFTER_FAILURES")->check(CLI::PositiveNumber)->capture_default_str();
  worker_cmd->add_option("--job-timeout", wo.job_timeout_s, "Seconds a job may run when it has no deadline_s")->envname("PENGUIFLOW_JOB_TIMEOUT")->check(CLI::PositiveNumber)->capture_default_str();
  worker_cmd->add_option("--drain-timeout", wo.drain_timeout_s, "Seconds to let in-flight jobs finish on shutdown")->envname("PENGUIFLOW_DRAIN_TIMEOUT")->check(CLI::NonNegativeNumber)->capture_default_str();
  worker_cmd->add_option("--lease", wo.lease_s, "Lease seconds (renewed every third)")->envname("PENGUIFLOW_LEASE")->check(CLI::PositiveNumber)->capture_default_str();
  worker_cmd->add_option("--retry-base", wo.retry_base_s, "Retry backoff base seconds")->envname("PENGUIFLOW_RETRY_BASE")->check(CLI::NonNegativeNumber)->capture_default_str();
  worker_cmd->add_option("--retry-max", wo.retry_max_s, "Retry backoff cap seconds")->envname("PENGUIFLOW_RETRY_MAX")->check(CLI::NonNegativeNumber)->capture_default_str();
  worker_cmd->add_option("--metrics", metrics_addr, "Serve /metrics and /healthz on ADDR (e.g. 127.0.0.1:9464)")->envname("PENGUIFLOW_METRICS");
  worker_cmd->add_option("--worker-id", wo.worker_id, "Worker id in logs and leases (default host-pid)")->envname("PENGUIFLOW_WORKER_ID");
  worker_cmd->add_flag("--exit-when-empty", wo.exit_when_empty, "Stop once no job is queued or running")->envname("PENGUIFLOW_EXIT_WHEN_EMPTY");
  worker_cmd->add_flag("--log-payloads", wo.log_payloads, "Log job payloads (off by default: payloads may hold personal data)")->envname("PENGUIFLOW_LOG_PAYLOADS");

  // ------------------------------------------------------------ enqueue
  Common eq;
  NewJob nj;
  std::string payload, file, deadline;
  double deadline_s = 0;
  auto* enqueue_cmd = app.add_subcommand("enqueue", "Add a job (or a JSON-lines file of jobs)");
  add_common(enqueue_cmd, eq, false);
  enqueue_cmd->add_option("-f,--flow", nj.flow, "Flow name")->envname("PENGUIFLOW_FLOW");
  enqueue_cmd->add_option("-t,--tenant", nj.tenant, "Tenant")->envname("PENGUIFLOW_TENANT");
  auto* payload_opt = enqueue_cmd->add_option("-p,--payload", payload, "Payload JSON");
  auto* file_opt = enqueue_cmd->add_option("--file", file, "JSON lines: {\"flow\", \"tenant\", \"payload\", ...} per line")->check(CLI::ExistingFile);
  payload_opt->excludes(file_opt);
  enqueue_cmd->add_option("--delay", nj.delay_s, "Seconds before it may run")->check(CLI::NonNegativeNumber);
  enqueue_cmd->add_option("--priority", nj.priority, "Higher runs first");
  enqueue_cmd->add_option("--max-attempts", nj.max_attempts, "Attempts before the job goes dead")->check(CLI::Range(1, 1000))->capture_default_str();
  enqueue_cmd->add_option("--deadline", deadline_s, "Seconds an attempt may take")->check(CLI::PositiveNumber);
  enqueue_cmd->add_option("--idempotency-key", nj.idempotency_key, "An existing key returns the existing job");

  // ------------------------------------------------------------ inspection
  Common jc;
  std::string state, job_id;
  int limit = 50;
  auto* jobs_cmd = app.add_subcommand("jobs", "List jobs (or show one with --id)");
  add_common(jobs_cmd, jc);
  jobs_cmd->add_option("--state", state, "queued, running, succeeded or dead")->check(CLI::IsMember({"queued", "running", "succeeded", "dead"}));
  jobs_cmd->add_option("--limit", limit, "At most N jobs")->check(CLI::Range(1, 100000))->capture_default_str();
  jobs_cmd->add_option("--id", job_id, "Show one job in full");

  Common sc;
  auto* stats_cmd = app.add_subcommand("stats", "Job counts by state and tenant");
  add_common(stats_cmd, sc, false);

  Common dc;
  auto* dead_cmd = app.add_subcommand("dead", "List dead jobs with their reasons");
  add_common(dead_cmd, dc);
  dead_cmd->add_option("--limit", limit, "At most N jobs")->check(CLI::Range(1, 100000))->capture_default_str();

  Common rc;
  std::vector<std::string> ids;
  bool all = false;
  auto* requeue_cmd = app.add_subcommand("requeue", "Move dead jobs back to queued (attempts reset)");
  add_common(requeue_cmd, rc);
  requeue_cmd->add_option("ids", ids, "Job ids");
  requeue_cmd->add_flag("--all", all, "Every dead job (of --tenant, when given)");

  Common pc;
  double older_than = 7 * 86400;
  auto* purge_cmd = app.add_subcommand("purge", "Delete succeeded and dead jobs older than a retention");
  add_common(purge_cmd, pc, false);
  purge_cmd->add_option("--older-than", older_than, "Retention in seconds")->check(CLI::NonNegativeNumber)->capture_default_str();

  Common cc;
  std::string cancel_id;
  auto* cancel_cmd = app.add_subcommand("cancel", "Cancel a queued or running job of a tenant (it goes dead with reason \"cancelled\")");
  add_common(cancel_cmd, cc);
  cancel_cmd->add_option("id", cancel_id, "Job id")->required();

  auto* flows_cmd = app.add_subcommand("flows", "List the flows this binary can run");
  bool flows_json = false;
  flows_cmd->add_flag("--json", flows_json, "JSON output");

  try {
    app.parse(argc, argv);
    configure_logging(logging_from(log_format, log_level));
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (*demo_cmd) {
      if (log_level == "info") configure_logging(logging_from(log_format, "error"));  // keep the progress line readable
      if (argc > 0 && argv[0] && *argv[0]) demo.program = argv[0];
      return run_demo(demo, std::move(flows));
    }
    if (*flows_cmd) {
      auto list = flows.list();
      if (flows_json) {
        json::array arr;
        for (auto& [n, d] : list) arr.push_back(json::object{{"name", n}, {"description", d}});
        std::cout << json::serialize(arr) << "\n";
      } else {
        for (auto& [n, d] : list) std::printf("%-14s %s\n", n.c_str(), d.c_str());
      }
      return 0;
    }
    if (*worker_cmd) {
      wo.mode = mode == "long-lived" ? worker::FlowMode::long_lived : worker::FlowMode::stateless;
      observe::Registry registry;
      wo.metrics = &registry;
      worker::Worker w(std::move(flows), wo);
      asio::io_context http_io(1);  // declared before the server: it must outlive it
      std::unique_ptr<observe::MetricsServer> server;
      std::thread http_thread;

      if (!metrics_addr.empty()) {
        server = std::make_unique<observe::MetricsServer>(http_io.get_executor(), metrics_addr, registry,
                                                          [&] { return !w.stop_requested(); });  // 503 while draining
        server->start();
        log_record(LogLevel::info, "metrics_listening", {{"address", metrics_addr}, {"port", server->port()}});
        http_thread = std::thread([&] { http_io.run(); });
      }
      int code = w.run();
      if (server) {
        asio::post(http_io, [&] { server->stop(); });  // closes the acceptor and connections: run() returns
        http_thread.join();
      }
      if (code != 0) std::fprintf(stderr, "penguiflow worker: %s\n", w.last_error().c_str());
      return code;
    }
    if (*enqueue_cmd) {
      std::vector<NewJob> batch;
      if (!file.empty()) {
        std::ifstream in(file);
        std::string line;
        int n = 0;
        while (std::getline(in, line)) {
          ++n;
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
          boost::system::error_code ec;
          auto v = json::parse(line, ec);
          if (ec || !v.is_object()) {
            std::fprintf(stderr, "penguiflow enqueue: %s line %d is not a JSON object\n", file.c_str(), n);
            return 2;
          }
          auto& o = v.as_object();
          NewJob j = nj;
          if (auto* f = o.if_contains("flow"); f && f->is_string()) j.flow = f->as_string().c_str();
          if (auto* t = o.if_contains("tenant"); t && t->is_string()) j.tenant = t->as_string().c_str();
          if (auto* p = o.if_contains("payload")) j.payload = *p;
          if (auto* p = o.if_contains("priority"); p && p->is_int64()) j.priority = int(p->as_int64());
          if (auto* p = o.if_contains("idempotency_key"); p && p->is_string()) j.idempotency_key = p->as_string().c_str();
          if (j.flow.empty() || j.tenant.empty()) {
            std::fprintf(stderr, "penguiflow enqueue: %s line %d needs \"flow\" and \"tenant\" (or --flow/--tenant)\n", file.c_str(), n);
            return 2;
          }
          batch.push_back(std::move(j));
        }
      } else {
        if (nj.flow.empty() || nj.tenant.empty()) {
          std::fprintf(stderr, "penguiflow enqueue: --flow and --tenant are required (or PENGUIFLOW_FLOW / PENGUIFLOW_TENANT)\n");
          return 2;
        }
        boost::system::error_code ec;
        nj.payload = payload.empty() ? json::value(json::object{}) : json::parse(payload, ec);
        if (ec) {
          std::fprintf(stderr, "penguiflow enqueue: --payload is not valid JSON (%s)\n", ec.message().c_str());
          return 2;
        }
        if (deadline_s > 0) nj.deadline_s = deadline_s;
        batch.push_back(nj);
      }
      if (!flows.list().empty())
        for (auto& j : batch)
          if (!flows.contains(j.flow))
            std::fprintf(stderr, "penguiflow enqueue: warning: flow '%s' is not registered in this binary\n", j.flow.c_str());
      bool as_json = eq.json;
      return with_queue(eq.queue, eq.config, [&](JobQueue& q) -> Task<int> {
        auto results = co_await q.enqueue_bulk(std::move(batch));
        if (as_json) {
          json::array arr;
          for (auto& r : results) arr.push_back(json::object{{"id", r.id}, {"created", r.created}});
          std::cout << json::serialize(arr) << "\n";
        } else {
          for (auto& r : results) std::printf("%s %s\n", r.id.c_str(), r.created ? "enqueued" : "exists (idempotency key)");
        }
        co_return 0;
      });
    }
    if (*jobs_cmd) {
      return with_queue(jc.queue, jc.config, [&](JobQueue& q) -> Task<int> {
        if (!job_id.empty()) {
          auto j = co_await q.get(job_id, opt(jc.tenant));
          if (!j) {
            std::fprintf(stderr, "penguiflow jobs: no job '%s'%s\n", job_id.c_str(), jc.tenant.empty() ? "" : " for this tenant");
            co_return 1;
          }
          std::cout << json::serialize(job_to_json(*j)) << "\n";
          co_return 0;
        }
        ListFilter f{state.empty() ? std::nullopt : parse_job_state(state), opt(jc.tenant), limit};
        print_jobs(co_await q.list(std::move(f)), jc.json, false);
        co_return 0;
      });
    }
    if (*stats_cmd) {
      return with_queue(sc.queue, sc.config, [&](JobQueue& q) -> Task<int> {
        auto c = co_await q.counts();
        if (sc.json) {
          json::object by_state, by_tenant;
          for (auto& [s, n] : c.by_state) by_state[s] = n;
          for (auto& [t, m] : c.by_tenant) {
            json::object o;
            for (auto& [s, n] : m) o[s] = n;
            by_tenant[t] = std::move(o);
          }
          std::cout << json::serialize(json::object{{"by_state", by_state}, {"by_tenant", by_tenant}}) << "\n";
        } else {
          std::printf("%-12s %10s %10s %10s %10s\n", "TENANT", "QUEUED", "RUNNING", "SUCCEEDED", "DEAD");
          auto row = [](const std::string& name, std::map<std::string, std::int64_t> m) {
            std::printf("%-12s %10lld %10lld %10lld %10lld\n", name.c_str(), (long long)m["queued"], (long long)m["running"],
                        (long long)m["succeeded"], (long long)m["dead"]);
          };
          for (auto& [t, m] : c.by_tenant) row(t, m);
          row("(all)", c.by_state);
        }
        co_return 0;
      });
    }
    if (*dead_cmd) {
      return with_queue(dc.queue, dc.config, [&](JobQueue& q) -> Task<int> {
        ListFilter f{JobState::dead, opt(dc.tenant), limit};
        print_jobs(co_await q.list(std::move(f)), dc.json, true);
        co_return 0;
      });
    }
    if (*requeue_cmd) {
      if (ids.empty() && !all) {
        std::fprintf(stderr, "penguiflow requeue: give job ids, or --all for every dead job\n");
        return 2;
      }
      return with_queue(rc.queue, rc.config, [&](JobQueue& q) -> Task<int> {
        auto n = co_await q.requeue_dead(ids, opt(rc.tenant));
        if (rc.json) std::cout << json::serialize(json::object{{"requeued", n}}) << "\n";
        else std::printf("requeued %lld job(s)\n", (long long)n);
        co_return 0;
      });
    }
    if (*purge_cmd) {
      return with_queue(pc.queue, pc.config, [&](JobQueue& q) -> Task<int> {
        auto n = co_await q.purge(older_than);
        if (pc.json) std::cout << json::serialize(json::object{{"purged", n}}) << "\n";
        else std::printf("purged %lld job(s)\n", (long long)n);
        co_return 0;
      });
    }
    if (*cancel_cmd) {
      if (cc.tenant.empty()) {
        std::fprintf(stderr, "penguiflow cancel: --tenant is required (cancelling is scoped to a tenant)\n");
        return 2;
      }
      return with_queue(cc.queue, cc.config, [&](JobQueue& q) -> Task<int> {
        bool ok = co_await q.cancel(cancel_id, cc.tenant);
        if (cc.json) std::cout << json::serialize(json::object{{"cancelled", ok}}) << "\n";
        else std::printf(ok ? "cancelled %s\n" : "no queued or running job %s for tenant\n", cancel_id.c_str());
        co_return ok ? 0 : 1;
      });
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "penguiflow: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "penguiflow: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace penguiflow::cli
