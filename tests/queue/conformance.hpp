// The queue conformance suite (CONTRACTS.md Q1-Q10, W7): one set of tests every backend
// passes. A backend instantiates it in its own test file:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, QueueConformance, ::testing::Values(make_sqlite_factory()),
//                            [](auto& i) { return i.param.name; });
//
// and links the `penguiflow_queue_conformance` library. Each test opens its queue(s) with
// a unique QueueConfig::namespace_ ("pft_" + 12 hex digits: valid as a key prefix, SQL
// identifier or schema name). Opening twice with the same namespace must give two
// handles on the same queue (the multi-consumer tests rely on it).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

namespace penguiflow::queue::testing {

struct QueueFactory {
  std::string name;  // "memory", "sqlite", "postgres", "redis"
  // Opens a fresh, isolated queue (config.namespace_ is unique per test).
  std::function<Task<std::unique_ptr<JobQueue>>(boost::asio::any_io_executor, QueueConfig)> open;
  // Writes a raw, possibly malformed job the way an outside client would (Q9/Q10 tests):
  // `raw_json` is the stored job document text (may be broken JSON). May be empty when the
  // backend cannot express it; the test then skips.
  std::function<Task<void>(boost::asio::any_io_executor, const QueueConfig&, std::string id, std::string raw_json)>
      write_raw;
  bool available = true;  // false -> every test GTEST_SKIPs (e.g. server env var unset)
  std::string skip_reason;
};

class QueueConformance : public ::testing::TestWithParam<QueueFactory> {};

/// Test listings show the backend's name, not the factory's bytes.
inline void PrintTo(const QueueFactory& f, std::ostream* os) { *os << f.name; }

/// A unique namespace for one test: "pft_" + 12 lowercase hex digits.
std::string unique_namespace();

}  // namespace penguiflow::queue::testing
