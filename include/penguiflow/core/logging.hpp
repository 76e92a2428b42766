// Logging setup (C16): one call configures JSON lines or human text, and a level.
// Records are written through the spdlog logger "penguiflow" (stderr by default).
#pragma once

#include <boost/json/object.hpp>

#include <string>
#include <string_view>

namespace penguiflow {

enum class LogFormat { text, json };
enum class LogLevel { trace, debug, info, warn, error, off };

struct LoggingOptions {
  LogFormat format = LogFormat::text;
  LogLevel level = LogLevel::info;
  /// Empty: stderr. Otherwise a file path.
  std::string file;
};

/// Configures the process-wide "penguiflow" logger. Thread-safe; call once at start.
void configure_logging(const LoggingOptions& options);

/// Parses "trace|debug|info|warn|error|off"; throws std::invalid_argument naming it.
LogLevel parse_log_level(std::string_view s);

bool log_enabled(LogLevel level);

/// Writes one structured record: {"ts", "level", "event", ...fields} as a JSON line, or
/// "ts LEVEL event key=value ..." as text.
void log_record(LogLevel level, std::string_view event, const boost::json::object& fields = {});

}  // namespace penguiflow
