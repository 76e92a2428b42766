#include "resp.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace penguiflow::queue::redis {

std::string RespValue::text() const {
  if (type == Type::integer) return std::to_string(integer);
  return str;
}

std::int64_t RespValue::as_int() const {
  if (type == Type::integer) return integer;
  if (type == Type::string || type == Type::status) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
    if (ec == std::errc() && p == str.data() + str.size()) return v;
  }
  throw std::runtime_error("redis reply is not an integer: " + text());
}

RespValue RespValue::make_string(std::string s) {
  RespValue v;
  v.type = Type::string;
  v.str = std::move(s);
  return v;
}
RespValue RespValue::make_error(std::string s) {
  RespValue v;
  v.type = Type::error;
  v.str = std::move(s);
  return v;
}
RespValue RespValue::make_int(std::int64_t i) {
  RespValue v;
  v.type = Type::integer;
  v.integer = i;
  return v;
}
RespValue RespValue::make_array(std::vector<RespValue> e) {
  RespValue v;
  v.type = Type::array;
  v.elements = std::move(e);
  return v;
}

namespace {
// "<prefix><n>\r\n" appended to out (to_chars: no printf per argument).
void append_header(std::string& out, char prefix, std::size_t n) {
  char buf[24];
  buf[0] = prefix;
  auto [p, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
  *p++ = '\r';
  *p++ = '\n';
  out.append(buf, static_cast<std::size_t>(p - buf));
}
}  // namespace

std::string format_command(const std::vector<std::string>& args) {
  std::size_t size = 16;
  for (const auto& a : args) size += a.size() + 16;
  std::string out;
  out.reserve(size);
  append_header(out, '*', args.size());
  for (const auto& a : args) {
    append_header(out, '$', a.size());
    out.append(a);
    out.append("\r\n", 2);
  }
  return out;
}

// The reply parser is hiredis's (DESIGN.md: a well-kept parser, RESP2, nesting ≤ 7), given
// object functions that build the RespValue tree in place: no redisReply tree to convert
// and free afterwards. hiredis calls createX for every element once it is complete; an
// element whose task has a parent goes into that array's slot `idx` (its elements are
// sized up front, so the slots never move); only the root is allocated, and freeObject
// (on the root only) releases the whole tree.
namespace {
RespValue* place(const redisReadTask* task) {
  if (task->parent) return &static_cast<RespValue*>(task->parent->obj)->elements[static_cast<std::size_t>(task->idx)];
  return new RespValue();
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  RespValue* v = place(task);
  v->type = task->type == REDIS_REPLY_ERROR    ? RespValue::Type::error
            : task->type == REDIS_REPLY_STATUS ? RespValue::Type::status
                                               : RespValue::Type::string;
  v->str.assign(str, len);
  return v;
}

void* create_array(const redisReadTask* task, int elements) {
  RespValue* v = place(task);
  v->type = RespValue::Type::array;
  v->elements.resize(static_cast<std::size_t>(elements > 0 ? elements : 0));
  return v;
}

void* create_integer(const redisReadTask* task, long long value) {
  RespValue* v = place(task);
  v->type = RespValue::Type::integer;
  v->integer = value;
  return v;
}

void* create_nil(const redisReadTask* task) { return place(task); }

void free_object(void* root) { delete static_cast<RespValue*>(root); }

redisReplyObjectFunctions kObjectFunctions{create_string, create_array, create_integer, create_nil, free_object};
}  // namespace

void RespReader::Deleter::operator()(void* r) const { redisReaderFree(static_cast<redisReader*>(r)); }

RespReader::RespReader() : reader_(redisReaderCreateWithFunctions(&kObjectFunctions)) {
  if (!reader_) throw std::bad_alloc();
  // Keep hiredis from freeing and regrowing its idle buffer on every call.
  static_cast<redisReader*>(reader_.get())->maxbuf = 0;
}

RespReader::~RespReader() = default;

void RespReader::feed(std::string_view bytes) {
  auto* r = static_cast<redisReader*>(reader_.get());
  if (redisReaderFeed(r, bytes.data(), bytes.size()) != REDIS_OK)
    throw RespProtocolError(std::string("redis protocol error: ") + r->errstr);
}

std::optional<RespValue> RespReader::next() {
  auto* r = static_cast<redisReader*>(reader_.get());
  void* reply = nullptr;
  if (redisReaderGetReply(r, &reply) != REDIS_OK) throw RespProtocolError(std::string("redis protocol error: ") + r->errstr);
  if (!reply) return std::nullopt;
  std::unique_ptr<RespValue> root(static_cast<RespValue*>(reply));
  return std::move(*root);
}

}  // namespace penguiflow::queue::redis
