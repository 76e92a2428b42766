// redis:// queue backend (docs/backends.md#redis, docs/wire-format.md#redis).
//
// Jobs live in Redis under one hash tag per queue ("{<namespace>}:..."), so every key of
// a queue sits in one Redis Cluster slot. Every transition is one Lua script (EVALSHA),
// hence atomic (Q2). One pipelined connection per queue object carries every request;
// idle fetchers block in BLPOP on a wake-up list on their own connections (no polling).
#pragma once

#include <penguiflow/queue/queue.hpp>

#include <memory>
#include <string>

namespace penguiflow::queue {

/// The layout of a queue's keys this build writes, stored in "{<namespace>}:layout" when
/// a queue is opened (docs/wire-format.md#redis). A build refuses a queue whose layout is
/// newer than it knows; it reads every older one. Layouts 1 and 2 (earlier builds) kept no
/// such key: a queue without one is taken as older and stamped.
inline constexpr int kRedisLayoutVersion = 3;

/// Opens the queue at `url` = redis://[user[:password]@]host[:port][/db] on the executor
/// `ex` (every later call must be made from that executor's thread). The password comes
/// from the URL, else from REDIS_PASSWORD; /db selects the database (default 0).
/// Connects, authenticates and loads the scripts before returning.
/// Throws QueueError naming the redacted URL and the cause (invalid URL, connection
/// refused, WRONGPASS, invalid namespace, a queue of a newer layout). Cancellation:
/// abandons the connection attempt.
Task<std::unique_ptr<JobQueue>> open_redis_queue(boost::asio::any_io_executor ex, std::string url,
                                                 QueueConfig config);

}  // namespace penguiflow::queue
