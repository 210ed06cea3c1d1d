#include "common/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <utility>

namespace solver {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
std::mutex g_stderr_mutex;

std::atomic<LogFormat>& stderr_format() {
  static std::atomic<LogFormat> format{is_journal_stream(std::getenv("JOURNAL_STREAM"), STDERR_FILENO) ? LogFormat::Journal
                                                                                                      : LogFormat::Text};
  return format;
}

std::string utc_stamp(std::chrono::system_clock::time_point when) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(when);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03d}Z", stamp, static_cast<int>(millis));
}

// sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG.
int syslog_priority(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return 7;
    case LogLevel::Info: return 6;
    case LogLevel::Warn: return 4;
    case LogLevel::Error: return 3;
  }
  return 6;
}

// The value of the first " key=value" field in `message`, without trailing punctuation.
std::string field_value(std::string_view message, std::string_view key) {
  const std::string pattern = std::string(key) + "=";
  for (std::size_t at = message.find(pattern); at != std::string_view::npos; at = message.find(pattern, at + 1)) {
    if (at > 0 && message[at - 1] != ' ') continue;
    std::string_view value = message.substr(at + pattern.size());
    value = value.substr(0, value.find(' '));
    while (!value.empty() && (value.back() == ':' || value.back() == ',' || value.back() == ';')) value.remove_suffix(1);
    return std::string(value);
  }
  return "";
}

void stderr_sink(const LogRecord& record) {
  const std::string line = format_log_line(stderr_format().load(), record, std::chrono::system_clock::now());
  std::lock_guard lock(g_stderr_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

LogSink& sink() {
  static LogSink instance = stderr_sink;
  return instance;
}

}  // namespace

LogSink set_log_sink(LogSink new_sink) { return std::exchange(sink(), new_sink ? std::move(new_sink) : LogSink(stderr_sink)); }
void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
bool log_enabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }
void set_log_format(LogFormat format) { stderr_format() = format; }

LogFormat log_format() { return stderr_format(); }

std::string format_log_line(LogFormat format, const LogRecord& record, std::chrono::system_clock::time_point when) {
  const std::string_view level = log_level_name(record.level);
  switch (format) {
    case LogFormat::Text:
      return fmt::format("{} {:<5} {:<10} {}\n", utc_stamp(when), level, record.component, record.message);
    case LogFormat::Journal:
      return fmt::format("<{}>{:<5} {:<10} {}\n", syslog_priority(record.level), level, record.component, record.message);
    case LogFormat::Json: {
      std::string lower(level);
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      nlohmann::json line{{"time", utc_stamp(when)}, {"level", lower}, {"component", record.component},
                          {"message", record.message}};
      for (const std::string_view key : {"task", "gpu"})
        if (std::string value = field_value(record.message, key); !value.empty()) line[std::string(key)] = std::move(value);
      // Messages reach the sink escaped (log_write), so they are valid UTF-8; replace guards any other caller.
      return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
  }
  return "";
}

bool is_journal_stream(const char* journal_stream, int fd) {
  if (journal_stream == nullptr) return false;
  struct stat status {};
  if (::fstat(fd, &status) != 0) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  char rest = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &device, &inode, &rest) != 2) return false;
  return device == status.st_dev && inode == status.st_ino;
}

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
