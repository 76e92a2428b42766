// RESP2 values, command formatting and reply parsing for the Redis backend. Replies are
// parsed by hiredis's reader (building RespValues directly, no redisReply tree); commands
// are formatted here (hiredis's formatter ran a sprintf per argument: 23% of the client's
// instructions; a RESP command is only length-prefixed bulk strings). Pure, sans-io code:
// no sockets, no event loop. Not thread-safe per object.
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

/// Incremental reply parser (hiredis's reader): feed() bytes as they arrive (any split),
/// next() yields each complete reply in order. Throws RespProtocolError on malformed input.
class RespReader {
 public:
  RespReader();
  ~RespReader();
  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  void feed(std::string_view bytes);
  std::optional<RespValue> next();

 private:
  struct Deleter {
    void operator()(void* r) const;
  };
  std::unique_ptr<void, Deleter> reader_;  // redisReader*, kept out of this header
};

}  // namespace penguiflow::queue::redis
