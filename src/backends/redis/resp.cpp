#include "resp.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstdlib>

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

void RespReader::Deleter::operator()(void* r) const { redisReaderFree(static_cast<redisReader*>(r)); }

RespReader::RespReader() : reader_(redisReaderCreate()) {
  if (!reader_) throw std::bad_alloc();
  // Keep hiredis from shrinking/compacting its buffer on every call (0 = never free idle).
  static_cast<redisReader*>(reader_.get())->maxbuf = 0;
}

RespReader::~RespReader() = default;

void RespReader::feed(std::string_view bytes) {
  auto* r = static_cast<redisReader*>(reader_.get());
  if (redisReaderFeed(r, bytes.data(), bytes.size()) != REDIS_OK)
    throw RespProtocolError(std::string("redis protocol error: ") + r->errstr);
}

namespace {
RespValue convert(const redisReply* r) {
  RespValue v;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      v.type = RespValue::Type::string;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RespValue::Type::status;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = RespValue::Type::error;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      v.type = RespValue::Type::integer;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RespValue::Type::array;
      v.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) v.elements.push_back(convert(r->element[i]));
      break;
    default:
      v.type = RespValue::Type::nil;
  }
  return v;
}
}  // namespace

std::optional<RespValue> RespReader::next() {
  auto* r = static_cast<redisReader*>(reader_.get());
  void* reply = nullptr;
  if (redisReaderGetReply(r, &reply) != REDIS_OK) throw RespProtocolError(std::string("redis protocol error: ") + r->errstr);
  if (!reply) return std::nullopt;
  std::unique_ptr<redisReply, void (*)(void*)> guard(static_cast<redisReply*>(reply), freeReplyObject);
  return convert(guard.get());
}

}  // namespace penguiflow::queue::redis
