#include <penguiflow/core/logging.hpp>

#include <boost/json/serialize.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <stdexcept>

namespace penguiflow {

namespace {
std::atomic<LogFormat> g_format{LogFormat::text};
std::mutex g_setup;

std::shared_ptr<spdlog::logger> logger() {
  auto l = spdlog::get("penguiflow");
  if (l) return l;
  std::lock_guard lock(g_setup);
  l = spdlog::get("penguiflow");
  if (l) return l;
  l = spdlog::stderr_logger_mt("penguiflow");
  l->set_pattern("%v");
  l->set_level(spdlog::level::info);
  return l;
}

spdlog::level::level_enum to_spd(LogLevel l) {
  switch (l) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "info";
}

std::string iso_now() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms));
  return buf;
}
}  // namespace

LogLevel parse_log_level(std::string_view s) {
  if (s == "trace") return LogLevel::trace;
  if (s == "debug") return LogLevel::debug;
  if (s == "info") return LogLevel::info;
  if (s == "warn" || s == "warning") return LogLevel::warn;
  if (s == "error") return LogLevel::error;
  if (s == "off") return LogLevel::off;
  throw std::invalid_argument("unknown log level '" + std::string(s) + "' (expected trace, debug, info, warn, error or off)");
}

void configure_logging(const LoggingOptions& options) {
  std::lock_guard lock(g_setup);
  spdlog::drop("penguiflow");
  std::shared_ptr<spdlog::logger> l;
  if (options.file.empty()) l = spdlog::stderr_logger_mt("penguiflow");
  else l = spdlog::basic_logger_mt("penguiflow", options.file);
  l->set_pattern("%v");
  l->set_level(to_spd(options.level));
  l->flush_on(spdlog::level::warn);
  g_format = options.format;
}

bool log_enabled(LogLevel level) { return logger()->should_log(to_spd(level)); }

void log_record(LogLevel level, std::string_view event, const boost::json::object& fields) {
  auto l = logger();
  if (!l->should_log(to_spd(level))) return;
  if (g_format.load() == LogFormat::json) {
    boost::json::object o{{"ts", iso_now()}, {"level", level_name(level)}, {"event", event}};
    for (auto& kv : fields) o[kv.key()] = kv.value();
    l->log(to_spd(level), "{}", boost::json::serialize(o));
  } else {
    std::string line = iso_now() + " " + level_name(level) + " " + std::string(event);
    for (auto& kv : fields) {
      line += " ";
      line += kv.key();
      line += "=";
      line += kv.value().is_string() ? std::string(kv.value().get_string()) : boost::json::serialize(kv.value());
    }
    l->log(to_spd(level), "{}", line);
  }
}

}  // namespace penguiflow
