// memory:// — an in-process JobQueue for tests and examples. Nothing survives the process
// (Q7: no durability). Single executor: every queue over one MemoryStore must be used from
// the same event-loop thread; no locks are taken. A fetch with nothing ready sleeps on a
// timer until a job is enqueued/retried/requeued or the next delayed job or lease comes
// due (no polling).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <memory>
#include <string>

namespace penguiflow::queue {

/// The jobs and effects of memory queues. Several queues may share one store (e.g. two
/// "consumers" in a test); they must all live on the same executor.
class MemoryStore;

/// A new, empty store.
std::shared_ptr<MemoryStore> make_memory_store();

/// A queue over `store` (a fresh store when null), bound to `ex`. Never throws.
std::unique_ptr<JobQueue> make_memory_queue(boost::asio::any_io_executor ex, QueueConfig config = {},
                                            std::shared_ptr<MemoryStore> store = nullptr);

/// Stores `raw_json` as a queued job document with id `id`, the way an outside producer
/// would write it (Q10); it is decoded and validated only at fetch (Q9). Call it from the
/// store's executor. Throws QueueError when the id already exists.
void write_raw_job(MemoryStore& store, std::string id, std::string raw_json);

/// open_queue() for "memory://" (every call a fresh store). Throws QueueError on any other
/// URL.
/// (Overloads, not a default argument: see open_queue.)
Task<std::unique_ptr<JobQueue>> open_memory_queue(boost::asio::any_io_executor ex, std::string url, QueueConfig config);
Task<std::unique_ptr<JobQueue>> open_memory_queue(boost::asio::any_io_executor ex, std::string url);

}  // namespace penguiflow::queue
