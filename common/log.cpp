#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace solver {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
std::mutex g_stderr_mutex;

void stderr_sink(const LogRecord& record) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  std::lock_guard lock(g_stderr_mutex);
  std::fprintf(stderr, "%s.%03dZ %-5s %-10.*s %.*s\n", stamp, static_cast<int>(millis),
               log_level_name(record.level).data(), static_cast<int>(record.component.size()),
               record.component.data(), static_cast<int>(record.message.size()), record.message.data());
}

LogSink& sink() {
  static LogSink instance = stderr_sink;
  return instance;
}

}  // namespace

void set_log_sink(LogSink new_sink) { sink() = new_sink ? std::move(new_sink) : LogSink(stderr_sink); }
void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
bool log_enabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void log_write(LogLevel level, std::string_view component, std::string_view message) {
  sink()(LogRecord{level, component, message});
}

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "DEBUG";
    case LogLevel::Info: return "INFO";
    case LogLevel::Warn: return "WARN";
    case LogLevel::Error: return "ERROR";
  }
  return "?";
}

}  // namespace solver
