// The sans-io core of a Redis connection: a request queue and FIFO reply matching.
//
// Many callers push formatted requests (each expecting one or more replies, e.g. a
// pipeline); the shell writes take_output() to the socket and feeds whatever it reads
// into feed(). Redis answers in request order, so replies are matched first-in first-out.
// A request whose caller gave up (cancelled) still owns its place: its replies are parsed
// and dropped. No sockets, no event loop: fully testable with byte strings. Not
// thread-safe; one owner.
#pragma once

#include "resp.hpp"

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue::redis {

class ConnectionCore {
 public:
  using RequestId = std::uint64_t;

  /// A request whose replies have all arrived.
  struct Completion {
    RequestId id;
    std::vector<RespValue> replies;
    bool abandoned = false;  // the caller cancelled; drop it
  };

  /// Queues `formatted` (one or more RESP commands) expecting `replies` replies. Never
  /// throws except std::bad_alloc.
  RequestId push(std::string_view formatted, std::size_t replies = 1);

  /// Bytes not yet handed to the socket.
  bool has_output() const { return !out_.empty(); }
  /// Takes every byte not yet written (the shell writes them in order).
  std::string take_output();

  /// Parses `bytes` and matches complete replies to requests, FIFO. Throws
  /// RespProtocolError on malformed input or a reply no request is waiting for.
  void feed(std::string_view bytes);

  /// Next completed request, in request order.
  std::optional<Completion> pop_completion();

  /// Marks a request as abandoned (its caller was cancelled): its replies will be dropped.
  /// Returns false when it is not pending.
  bool abandon(RequestId id);

  /// The connection was lost: returns the ids of every request not completed yet (whether
  /// written or not) and clears buffers and parser state, ready for a new connection.
  std::vector<RequestId> reset();

  /// Requests waiting for replies (written or not).
  std::size_t pending() const { return waiting_.size(); }

 private:
  struct Waiting {
    RequestId id;
    std::size_t expected;
    std::vector<RespValue> got;
    bool abandoned = false;
  };
  RequestId next_id_ = 1;
  std::string out_;
  std::deque<Waiting> waiting_;
  std::deque<Completion> done_;
  std::optional<RespReader> reader_{std::in_place};
};

}  // namespace penguiflow::queue::redis
