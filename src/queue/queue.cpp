// Free functions of queue.hpp (clock, state names, URL redaction) and JobQueue's defaults.
#include <penguiflow/queue/queue.hpp>

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

// Hand-written rather than Boost.URL: it must also redact text that is not a valid URL
// (the very case where we print it in an error).
std::string redact_url(std::string_view url) {
  std::string out(url);
  auto scheme_end = out.find("://");
  if (scheme_end != std::string::npos) {
    auto auth_begin = scheme_end + 3;
    auto auth_end = out.find_first_of("/?#", auth_begin);
    if (auth_end == std::string::npos) auth_end = out.size();
    auto at = out.rfind('@', auth_end);
    if (at != std::string::npos && at >= auth_begin) {
      auto colon = out.find(':', auth_begin);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // libpq-style query parameters: ?password=... / &password=...
  for (std::string key : {"password=", "pass=", "secret="}) {
    std::size_t pos = 0;
    while ((pos = out.find(key, pos)) != std::string::npos) {
      bool at_param = pos > 0 && (out[pos - 1] == '?' || out[pos - 1] == '&' || out[pos - 1] == ' ');
      auto vbegin = pos + key.size();
      if (!at_param) { pos = vbegin; continue; }
      auto vend = out.find_first_of("&# ", vbegin);
      if (vend == std::string::npos) vend = out.size();
      out.replace(vbegin, vend - vbegin, "***");
      pos = vbegin + 3;
    }
  }
  return out;
}

}  // namespace penguiflow::queue
