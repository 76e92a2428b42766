// Pieces shared by the CLI's translation units (not installed).
#pragma once

#include <penguiflow/queue/queue.hpp>
#include <penguiflow/worker/worker.hpp>

#include <functional>
#include <string>

namespace penguiflow::cli {

struct DemoOptions {
  int jobs = 3000;
  std::string queue = "sqlite://./penguiflow-demo.db";
  int concurrency = 64;
  int threads = 2;
  std::string program = "penguiflow";  // how the command was invoked (argv[0]), for the hints
};

/// `penguiflow demo`: fresh SQLite queue, example jobs, a worker with a live progress
/// line, a summary. Returns the exit code.
int run_demo(const DemoOptions& options, worker::FlowRegistry flows);

/// Opens `url` on a private event loop, runs fn, closes. Prints the error and returns 1
/// when opening or fn fails.
int with_queue(const std::string& url, const std::function<queue::Task<int>(queue::JobQueue&)>& fn);
/// The same with a queue config (namespace).
int with_queue(const std::string& url, const queue::QueueConfig& config,
               const std::function<queue::Task<int>(queue::JobQueue&)>& fn);

}  // namespace penguiflow::cli
