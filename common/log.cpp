#include "common/log.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
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
  const auto is_plain = [](unsigned char c) { return c >= 0x20 && c < 0x7f; };
  if (std::all_of(message.begin(), message.end(), is_plain)) return sink()(LogRecord{level, component, message});
  const std::string escaped = escape_log_text(message);
  sink()(LogRecord{level, component, escaped});
}

std::string escape_log_text(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  const auto hex = [&](unsigned char c) { escaped += fmt::format("\\x{:02x}", c); };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      escaped += static_cast<char>(c);
      ++i;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      escaped += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
      ++i;
    } else if (c < 0x80) {
      hex(c);
      ++i;
    } else {
      // A well-formed UTF-8 sequence is kept unless it encodes a C1 control or a line or paragraph
      // separator (U+2028, U+2029), which some terminals and viewers act on; every other byte is escaped.
      const std::size_t length = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
      std::uint32_t code_point = length == 4 ? c & 0x07u : length == 3 ? c & 0x0fu : c & 0x1fu;
      bool well_formed = length > 0 && i + length <= text.size();
      for (std::size_t k = 1; well_formed && k < length; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        well_formed = (next & 0xc0) == 0x80;
        code_point = (code_point << 6) | (next & 0x3fu);
      }
      const std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
      well_formed = well_formed && code_point >= smallest[length] && code_point <= 0x10ffff && (code_point < 0xd800 || code_point > 0xdfff);
      if (!well_formed) {
        hex(c);
        ++i;
      } else if (code_point < 0xa0 || code_point == 0x2028 || code_point == 0x2029) {
        escaped += fmt::format("\\u{{{:04x}}}", code_point);
        i += length;
      } else {
        escaped.append(text.substr(i, length));
        i += length;
      }
    }
  }
  return escaped;
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
