#include "connection_core.hpp"

namespace penguiflow::queue::redis {

ConnectionCore::RequestId ConnectionCore::push(std::string_view formatted, std::size_t replies) {
  RequestId id = next_id_++;
  out_.append(formatted);
  waiting_.push_back(Waiting{id, replies == 0 ? 1 : replies, {}, false});
  waiting_.back().got.reserve(waiting_.back().expected);
  return id;
}

std::string ConnectionCore::take_output() {
  std::string s;
  s.swap(out_);
  return s;
}

void ConnectionCore::feed(std::string_view bytes) {
  reader_->feed(bytes);
  while (auto v = reader_->next()) {
    if (waiting_.empty()) throw RespProtocolError("redis protocol error: reply without a request");
    auto& w = waiting_.front();
    w.got.push_back(std::move(*v));
    if (w.got.size() == w.expected) {
      done_.push_back(Completion{w.id, std::move(w.got), w.abandoned});
      waiting_.pop_front();
    }
  }
}

std::optional<ConnectionCore::Completion> ConnectionCore::pop_completion() {
  if (done_.empty()) return std::nullopt;
  auto c = std::move(done_.front());
  done_.pop_front();
  return c;
}

bool ConnectionCore::abandon(RequestId id) {
  for (auto& w : waiting_)
    if (w.id == id) {
      w.abandoned = true;
      return true;
    }
  for (auto& c : done_)
    if (c.id == id) {
      c.abandoned = true;
      return true;
    }
  return false;
}

std::vector<ConnectionCore::RequestId> ConnectionCore::reset() {
  std::vector<RequestId> ids;
  for (auto& c : done_) ids.push_back(c.id);
  for (auto& w : waiting_) ids.push_back(w.id);
  done_.clear();
  waiting_.clear();
  out_.clear();
  reader_.emplace();
  return ids;
}

}  // namespace penguiflow::queue::redis
