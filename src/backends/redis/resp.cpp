#include "resp.hpp"

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

void RespReader::feed(std::string_view bytes) {
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {  // drop what was parsed (amortized O(1) a byte)
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes.data(), bytes.size());
}

namespace {
std::int64_t parse_int(std::string_view line) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
  if (ec != std::errc() || p != line.data() + line.size())
    throw RespProtocolError("redis protocol error: bad number '" + std::string(line.substr(0, 32)) + "'");
  return v;
}
}  // namespace

std::optional<RespValue> RespReader::next() {
  const char* data = buf_.data();
  const std::size_t size = buf_.size();
  while (pos_ < size) {
    // One element: its type byte and line, plus a bulk string's body.
    const char* cr = static_cast<const char*>(std::memchr(data + pos_ + 1, '\r', size - pos_ - 1));
    if (cr == nullptr || cr + 1 >= data + size) return std::nullopt;
    if (cr[1] != '\n') throw RespProtocolError("redis protocol error: bare CR in a reply line");
    const char type = data[pos_];
    std::string_view line(data + pos_ + 1, static_cast<std::size_t>(cr - data - pos_ - 1));
    std::size_t after = static_cast<std::size_t>(cr - data) + 2;
    RespValue v;
    std::int64_t n = 0;
    switch (type) {
      case '+': v.type = RespValue::Type::status; v.str.assign(line); break;
      case '-': v.type = RespValue::Type::error; v.str.assign(line); break;
      case ':': v.type = RespValue::Type::integer; v.integer = parse_int(line); break;
      case '$': {
        std::int64_t len = parse_int(line);
        if (len < 0) break;  // nil
        const auto ulen = static_cast<std::size_t>(len);
        if (size - after < ulen + 2) return std::nullopt;
        if (data[after + ulen] != '\r' || data[after + ulen + 1] != '\n')
          throw RespProtocolError("redis protocol error: bulk string not followed by CRLF");
        v.type = RespValue::Type::string;
        v.str.assign(data + after, ulen);
        after += ulen + 2;
        break;
      }
      case '*':
        n = parse_int(line);
        if (n < 0) {
          n = 0;
          break;  // nil
        }
        v.type = RespValue::Type::array;
        v.elements.reserve(static_cast<std::size_t>(n));
        break;
      default:
        throw RespProtocolError(std::string("redis protocol error: unexpected reply type byte '") + type + "'");
    }
    pos_ = after;
    RespValue* placed;
    if (stack_.empty()) {
      root_ = std::move(v);
      placed = &root_;
    } else {
      auto& top = stack_.back();
      top.array->elements.push_back(std::move(v));  // within the reserved capacity
      placed = &top.array->elements.back();
      --top.left;
    }
    if (n > 0) {
      stack_.push_back(Frame{placed, static_cast<std::size_t>(n)});
      continue;
    }
    while (!stack_.empty() && stack_.back().left == 0) stack_.pop_back();
    if (stack_.empty()) {
      RespValue out = std::move(root_);
      root_ = RespValue();
      return out;
    }
  }
  return std::nullopt;
}

}  // namespace penguiflow::queue::redis
