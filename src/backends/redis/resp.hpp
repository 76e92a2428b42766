// RESP2 values, command formatting and reply parsing for the Redis backend (no hiredis:
// its formatter ran a sprintf per argument, and its parser built a redisReply tree that was
// then copied into RespValues). Pure, sans-io code: no sockets, no event loop. Pure, sans-io code: no sockets, no event loop. Not thread-safe per object.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue::redis {

/// One RESP2 reply. `str` holds status, error and bulk-string text; `elements` an array's
/// items; `integer` an integer reply.
struct RespValue {
  enum class Type { nil, status, error, integer, string, array };
  Type type = Type::nil;
  std::int64_t integer = 0;
  std::string str;
  std::vector<RespValue> elements;

  bool is_nil() const { return type == Type::nil; }
  bool is_error() const { return type == Type::error; }
  bool is_array() const { return type == Type::array; }
  /// Text of a string/status/error reply, the decimal text of an integer, "" for nil.
  std::string text() const;
  /// Integer reply, or a string reply holding an integer; throws std::runtime_error otherwise.
  std::int64_t as_int() const;

  static RespValue make_string(std::string s);
  static RespValue make_error(std::string s);
  static RespValue make_int(std::int64_t v);
  static RespValue make_array(std::vector<RespValue> v);
};

/// A reply stream that is not valid RESP (the connection cannot be trusted any more).
class RespProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Formats one command as a RESP array of bulk strings (binary safe). Never throws except
/// std::bad_alloc.
std::string format_command(const std::vector<std::string>& args);

/// Incremental reply parser: feed() bytes as they arrive (any split), next() yields each
/// complete reply in order. Throws RespProtocolError on malformed input. Resumable: an
/// element is parsed once however the bytes are split (a partly received array keeps its
/// parsed elements), so a large reply costs linear time.
class RespReader {
 public:
  RespReader() = default;
  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  void feed(std::string_view bytes);
  std::optional<RespValue> next();

 private:
  struct Frame {
    RespValue* array;  // inside root_ (its elements never reallocate: reserved up front)
    std::size_t left;  // elements still to come
  };
  std::string buf_;
  std::size_t pos_ = 0;  // first byte not parsed yet
  RespValue root_;
  std::vector<Frame> stack_;  // the arrays being filled, outermost first
};

}  // namespace penguiflow::queue::redis
