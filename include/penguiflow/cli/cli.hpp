// The `penguiflow` command line as a library: a user's own worker binary registers its
// flows and hands over to the same subcommands the stock binary has.
//
//   int main(int argc, char** argv) {
//     penguiflow::worker::FlowRegistry flows;
//     flows.add("orders", [] { return make_orders_flow(); }, "process an order");
//     return penguiflow::cli::run(argc, argv, std::move(flows));
//   }
#pragma once

#include <penguiflow/worker/worker.hpp>

namespace penguiflow::cli {

/// Parses argv and runs the subcommand (demo, worker, enqueue, jobs, stats, dead,
/// requeue, purge, cancel, flows). Returns the process exit code: 0 on success, 2 on bad
/// flags (message on stderr), 1 on a failed operation (message names the cause).
int run(int argc, char** argv, worker::FlowRegistry flows);

}  // namespace penguiflow::cli
