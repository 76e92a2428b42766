// Free functions of queue.hpp (clock, state names, URL redaction) and JobQueue's defaults.
#include <penguiflow/queue/queue.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>

namespace penguiflow::queue {

Task<Counts> JobQueue::depth() {
  Counts c = co_await counts();
  c.by_state.erase("succeeded");
  for (auto& [tenant, states] : c.by_tenant) states.erase("succeeded");
  co_return c;
}

double unix_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string_view to_string(JobState s) {
  switch (s) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::succeeded: return "succeeded";
    case JobState::dead: return "dead";
  }
  return "unknown";
}

std::optional<JobState> parse_job_state(std::string_view s) {
  if (s == "queued") return JobState::queued;
  if (s == "running") return JobState::running;
  if (s == "succeeded") return JobState::succeeded;
  if (s == "dead") return JobState::dead;
  return std::nullopt;
}

namespace {

// Where the userinfo password of scheme://user:password@host... sits, as a reader such as
// libpq takes it: userinfo runs to the last '@' before the first '/' after the scheme, so a
// password may hold '?', '#' or ':' (libpq connects with it; Boost.URL refuses the URL).
// {npos, npos} when there is none.
std::pair<std::size_t, std::size_t> userinfo_password(std::string_view url) {
  constexpr auto none = std::pair<std::size_t, std::size_t>{std::string_view::npos, std::string_view::npos};
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return none;
  auto auth_begin = scheme_end + 3;
  auto auth_end = url.find('/', auth_begin);
  if (auth_end == std::string_view::npos) auth_end = url.size();
  auto at = url.substr(0, auth_end).rfind('@');
  if (at == std::string_view::npos || at < auth_begin) return none;
  auto colon = url.find(':', auth_begin);
  if (colon == std::string_view::npos || colon > at) return none;
  return {colon + 1, at};
}

// Query parameters whose values are secrets (libpq's password= and sslpassword=).
constexpr std::string_view kSecretKeys[] = {"password=", "sslpassword=", "pass=", "secret="};

// Calls f(begin, end) for the value of every secret query parameter of `s`.
template <class F>
void for_each_secret_param(std::string_view s, F&& f) {
  for (auto key : kSecretKeys) {
    for (std::size_t pos = s.find(key); pos != std::string_view::npos; pos = s.find(key, pos + 1)) {
      bool at_param = pos > 0 && (s[pos - 1] == '?' || s[pos - 1] == '&' || s[pos - 1] == ' ');
      if (!at_param) continue;
      auto vbegin = pos + key.size();
      auto vend = s.find_first_of("&# ", vbegin);
      if (vend == std::string_view::npos) vend = s.size();
      f(vbegin, vend);
    }
  }
}

std::string percent_decode(std::string_view v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    if (v[i] == '%' && i + 2 < v.size() && hex(v[i + 1]) && hex(v[i + 2])) {
      out += static_cast<char>(std::stoi(std::string(v.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

}  // namespace

// Hand-written rather than Boost.URL: it must also redact text that is not a valid URL
// (the very case where we print it in an error).
std::string redact_url(std::string_view url) {
  std::string out(url);
  if (auto [b, e] = userinfo_password(out); b != std::string::npos) out.replace(b, e - b, "***");
  // libpq-style query parameters: ?password=... / &sslpassword=... Replaced from the last
  // one back, so the positions found stay valid.
  std::vector<std::pair<std::size_t, std::size_t>> values;
  for_each_secret_param(out, [&](std::size_t b, std::size_t e) { values.emplace_back(b, e); });
  std::sort(values.begin(), values.end(), [](auto& x, auto& y) { return x.first > y.first; });
  for (auto [b, e] : values) out.replace(b, e - b, "***");
  return out;
}

std::vector<std::string> url_secrets(std::string_view url) {
  std::vector<std::string> out;
  auto add = [&](std::string_view v) {
    if (v.empty()) return;
    out.emplace_back(v);
    if (auto d = percent_decode(v); d != v) out.push_back(std::move(d));
  };
  if (auto [b, e] = userinfo_password(url); b != std::string_view::npos) add(url.substr(b, e - b));
  for_each_secret_param(url, [&](std::size_t b, std::size_t e) { add(url.substr(b, e - b)); });
  return out;
}

}  // namespace penguiflow::queue
