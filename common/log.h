// Logging: one line per event (time, level, component, message with key=value fields).
// Libraries call log_info(...) etc.; the agent installs the sink that decides where lines
// go and in which format. The level is checked before formatting, and format strings are
// checked at compile time by fmt. Messages quote what strangers sent (task names, paths,
// reasons), so log_write escapes control characters before any sink sees them: no message,
// whatever it quotes, can end its line early, start a forged one or drive a terminal.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>

namespace solver {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

struct LogRecord {
  LogLevel level;
  std::string_view component;  // the folder that logs: train, proof, checkpoint, agent...
  std::string_view message;
};

using LogSink = std::function<void(const LogRecord&)>;

// Replaces the sink (the default writes plain lines to stderr). Not thread-safe against
// concurrent logging: install it once at start-up.
void set_log_sink(LogSink sink);
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
// Hands the message to the sink with escape_log_text applied.
void log_write(LogLevel level, std::string_view component, std::string_view message);
// `text` with \n, \r and \t written as those two characters, other control characters (C0,
// DEL, C1) and U+2028/U+2029 as \xNN or \u{NNNN}, and bytes that are not UTF-8 as \xNN.
std::string escape_log_text(std::string_view text);
std::string_view log_level_name(LogLevel level);

template <typename... Args>
void log_at(LogLevel level, std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (!log_enabled(level)) return;
  log_write(level, component, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::Debug, component, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_info(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::Info, component, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_warn(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::Warn, component, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_error(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::Error, component, format, std::forward<Args>(args)...);
}

}  // namespace solver
