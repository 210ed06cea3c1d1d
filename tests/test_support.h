// Helpers shared by the test suites: where things are, scratch folders, running programs.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace solver::test {

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

// A program running in the background with its output (stdout and stderr) going to a log file;
// killed with SIGKILL on destruction if still running, so a failing test leaves no process behind.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
                    const std::vector<std::string>& extra_env = {});
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  int pid() const { return pid_; }
  void signal(int signal_number) const;
  // Waits up to `timeout_seconds` for the exit; returns the status (128+N when killed by signal
  // N), or nullopt if still running.
  std::optional<int> wait(double timeout_seconds);
  bool running();
  std::string output() const;  // the log so far
  // Polls the log until it contains `text` (true) or `timeout_seconds` pass or the process exits (false).
  bool wait_for_output(const std::string& text, double timeout_seconds);

 private:
  int pid_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path log_file_;
};

// The kind of the solver::Error that `action` throws; nullopt when it throws none.
std::optional<ErrorKind> error_kind_of(const std::function<void()>& action);

// Writes text to a file (creating parent folders).
void write_text(const std::filesystem::path& path, const std::string& text);

}  // namespace solver::test
