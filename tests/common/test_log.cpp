// Log lines in each format: text for a person, journald's priority prefixes when stderr is the
// journal (and only then), and JSON for log shippers.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "common/log.h"
#include "tests/test_support.h"

namespace solver {
namespace {

// 2024-05-01T12:34:56.789Z
const std::chrono::system_clock::time_point kWhen =
    std::chrono::system_clock::from_time_t(1714566896) + std::chrono::milliseconds(789);

class OpenFile {
 public:
  explicit OpenFile(const std::filesystem::path& path) : fd_(::open(path.c_str(), O_CREAT | O_WRONLY, 0600)) {
    REQUIRE(fd_ >= 0);
  }
  ~OpenFile() { ::close(fd_); }
  int fd() const { return fd_; }
  std::string device_inode() const {
    struct stat status {};
    REQUIRE(::fstat(fd_, &status) == 0);
    return fmt::format("{}:{}", status.st_dev, status.st_ino);
  }

 private:
  int fd_;
};

TEST_CASE("A text log line has the time, level, component and message", "[common]") {
  CHECK(format_log_line(LogFormat::Text, LogRecord{LogLevel::Warn, "agent", "task=ab12 heartbeat failed"}, kWhen) ==
        "2024-05-01T12:34:56.789Z WARN  agent      task=ab12 heartbeat failed\n");
}

TEST_CASE("A journal log line starts with the syslog priority of its level and has no timestamp", "[common]") {
  const auto line = [](LogLevel level) { return format_log_line(LogFormat::Journal, LogRecord{level, "train", "m"}, kWhen); };
  CHECK(line(LogLevel::Error) == "<3>ERROR train      m\n");
  CHECK(line(LogLevel::Warn) == "<4>WARN  train      m\n");
  CHECK(line(LogLevel::Info) == "<6>INFO  train      m\n");
  CHECK(line(LogLevel::Debug) == "<7>DEBUG train      m\n");
}

TEST_CASE("A JSON log line is one object with the task and gpu fields the message names", "[common]") {
  const std::string line = format_log_line(
      LogFormat::Json, LogRecord{LogLevel::Info, "agent", "task=ab12: training on gpu=GPU-1f2e \"quoted\" \\u{2028}"}, kWhen);
  REQUIRE(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  const nlohmann::json parsed = nlohmann::json::parse(line);
  CHECK(parsed["time"] == "2024-05-01T12:34:56.789Z");
  CHECK(parsed["level"] == "info");
  CHECK(parsed["component"] == "agent");
  CHECK(parsed["message"] == "task=ab12: training on gpu=GPU-1f2e \"quoted\" \\u{2028}");
  CHECK(parsed["task"] == "ab12");
  CHECK(parsed["gpu"] == "GPU-1f2e");

  const nlohmann::json plain =
      nlohmann::json::parse(format_log_line(LogFormat::Json, LogRecord{LogLevel::Error, "net", "subtask=x down"}, kWhen));
  CHECK(plain["level"] == "error");
  CHECK_FALSE(plain.contains("task"));  // "subtask=" is not a task field
  CHECK_FALSE(plain.contains("gpu"));
}

TEST_CASE("Stderr is taken for the journal only when JOURNAL_STREAM names its device and inode", "[common]") {
  test::ScratchDir scratch("log-journal");
  const OpenFile stream(scratch / "stream");
  const OpenFile other(scratch / "other");
  CHECK(is_journal_stream(stream.device_inode().c_str(), stream.fd()));
  // Inherited by a child whose stderr went elsewhere: not the journal.
  CHECK_FALSE(is_journal_stream(stream.device_inode().c_str(), other.fd()));
  CHECK_FALSE(is_journal_stream(nullptr, stream.fd()));
  CHECK_FALSE(is_journal_stream("", stream.fd()));
  CHECK_FALSE(is_journal_stream((stream.device_inode() + "x").c_str(), stream.fd()));
  CHECK_FALSE(is_journal_stream("garbage", stream.fd()));
}

}  // namespace
}  // namespace solver
