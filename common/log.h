// Logging: one line per event (time, level, component, message with key=value fields).
// Libraries call log_info(...) etc.; the default sink writes to stderr in the chosen format
// (tests install their own sink). The level is checked before formatting, and format strings are
// checked at compile time by fmt. Messages quote what strangers sent (task names, paths,
// reasons), so log_write escapes control characters before any sink sees them: no message,
// whatever it quotes, can end its line early, start a forged one or drive a terminal.
#pragma once

#include <fmt/format.h>

#include <chrono>
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

// How the default sink writes each line to stderr:
// Text: "2024-05-01T12:00:00.123Z INFO  agent      message", for a person at a terminal or a file;
// Journal: "<6>INFO  agent      message", when stderr is journald's stream: the <N> prefix is the
//   syslog priority journald reads from stream lines (sd-daemon.h's SD_INFO...), and journald
//   stamps the time itself;
// Json: one JSON object a line (time, level, component, message, and task and gpu when the
//   message has task=... or gpu=... fields), for log shippers.
enum class LogFormat { Text, Journal, Json };

// The default sink's format until set_log_format: Journal when stderr is the journal, else Text.
void set_log_format(LogFormat format);
LogFormat log_format();
std::string format_log_line(LogFormat format, const LogRecord& record, std::chrono::system_clock::time_point when);
// Whether `fd` is the stream that `journal_stream` (JOURNAL_STREAM's "device:inode", or null
// when unset) names: systemd sets it for a service's stderr connected to the journal, and a
// child that inherits the variable but whose stderr was redirected must not take it for the journal.
bool is_journal_stream(const char* journal_stream, int fd);

// Replaces the sink (the default writes plain lines to stderr; null: the default) and returns
// the one it replaced, to wrap or put back. Not thread-safe against concurrent logging: install
// it before the threads that log start.
LogSink set_log_sink(LogSink sink);
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
