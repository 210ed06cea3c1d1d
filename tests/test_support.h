// Helpers shared by the test suites: where things are, scratch folders, running programs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"

namespace solver::test {

// A download cap (net/ fetches take one) above anything the tests fetch.
inline constexpr std::uint64_t kLargeEnough = 1ull << 36;

std::filesystem::path source_dir();         // the repository root
std::filesystem::path solver_binary();      // the built `solver` executable
std::filesystem::path fashion_mnist_dir();  // Debian's dataset-fashion-mnist
std::string system_python();                // /usr/bin/python3 (has numpy and torch)

// A fresh folder under the system temp dir, removed (recursively) on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& label);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;  // the program's exit status; 128+N when killed by signal N
  std::string output;  // stdout and stderr interleaved
};

// Runs argv[0] with the arguments (no shell), waits, and captures its output.
CommandResult run_command(const std::vector<std::string>& argv);

// A program running in the background with its stdout and stderr appended to a log file. It dies
// with the test process (PR_SET_PDEATHSIG), and is killed with SIGKILL on destruction if still
// running, so neither a failing REQUIRE nor a crashed test leaves a process behind.
class BackgroundProcess {
 public:
  // Starts argv[0] (a path: no PATH search, no shell) with the test process's environment, in
  // which each "NAME=value" of `extra_env` replaces NAME's value. Throws std::runtime_error when
  // the log cannot be opened or fork fails; a program that cannot be executed exits with 127
  // and says so in its log.
  BackgroundProcess(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
                    const std::vector<std::string>& extra_env = {});
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  int pid() const { return pid_; }
  void signal(int signal_number) const;  // does nothing once the exit has been seen
  // Waits up to `timeout_seconds` for the exit; returns the status (128+N when killed by signal
  // N), or nullopt if still running.
  std::optional<int> wait(double timeout_seconds);
  bool running();
  // What this process has written to the log so far (not what the file held before it started).
  std::string output() const;
  std::string output_tail(std::size_t max_chars = 2000) const;
  // Polls the log until it contains `text` (true) or `timeout_seconds` pass or the process exits (false).
  bool wait_for_output(const std::string& text, double timeout_seconds);
  // Polls the log until the ECMAScript regex `pattern` matches; returns its first group (the whole
  // match when it has none), or nullopt when `timeout_seconds` pass or the process exits first.
  std::optional<std::string> wait_for_match(const std::string& pattern, double timeout_seconds);

 private:
  // Polls output() until `found` returns a value, the process exits, or the time is up.
  std::optional<std::string> poll_output(const std::function<std::optional<std::string>(const std::string&)>& found,
                                         double timeout_seconds);

  int pid_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path log_file_;
  std::uintmax_t log_start_ = 0;  // the log's size when this process started
};

// The solver::Error that `action` throws; nullopt when it throws none.
std::optional<Error> error_of(const std::function<void()>& action);
// The kind of the solver::Error that `action` throws; nullopt when it throws none.
std::optional<ErrorKind> error_kind_of(const std::function<void()>& action);

// Collects info (and louder) log lines while it lives, from any thread, then puts the default
// sink and level back (also when a failed REQUIRE ends the test early).
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  std::vector<std::string> lines() const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
  LogLevel previous_level_ = LogLevel::Error;
};

// Writes text to a file (creating parent folders).
void write_text(const std::filesystem::path& path, const std::string& text);

}  // namespace solver::test
