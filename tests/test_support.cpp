// The helpers of test_support.h: paths, scratch folders, foreground and background programs.
#include "tests/test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace solver::test {

std::filesystem::path source_dir() { return SOLVER_SOURCE_DIR; }
std::filesystem::path solver_binary() { return SOLVER_BINARY; }
std::filesystem::path fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }
std::string system_python() { return SOLVER_TEST_PYTHON; }

ScratchDir::ScratchDir(const std::string& label) {
  std::random_device random;
  path_ = std::filesystem::temp_directory_path() /
          ("solver-test-" + label + "-" + std::to_string(::getpid()) + "-" + std::to_string(random()));
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

CommandResult run_command(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  CommandResult result;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) result.output.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

namespace {

// "NAME=value" -> "NAME"
std::string_view variable_name(std::string_view variable) { return variable.substr(0, variable.find('=')); }

}  // namespace

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
                                     const std::vector<std::string>& extra_env)
    : log_file_(log_file) {
  if (argv.empty()) throw std::invalid_argument("BackgroundProcess: no program to run");
  // Everything the child needs is built before fork: between fork and execve only async-signal-safe
  // calls are allowed (another thread of the test process may hold malloc's lock at the fork).
  std::vector<char*> arguments;
  for (const std::string& argument : argv) arguments.push_back(const_cast<char*>(argument.c_str()));
  arguments.push_back(nullptr);
  std::vector<char*> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    const auto replaced = [&](const std::string& extra) { return variable_name(extra) == variable_name(*variable); };
    if (std::none_of(extra_env.begin(), extra_env.end(), replaced)) environment.push_back(*variable);
  }
  for (const std::string& variable : extra_env) environment.push_back(const_cast<char*>(variable.c_str()));
  environment.push_back(nullptr);
  const std::string exec_failed = "BackgroundProcess: cannot execute " + argv[0] + "\n";

  if (log_file.has_parent_path()) std::filesystem::create_directories(log_file.parent_path());
  const int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + log_file.string() + ": " + std::strerror(errno));
  log_start_ = static_cast<std::uintmax_t>(::lseek(log_fd, 0, SEEK_END));
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    ::close(log_fd);
    throw std::runtime_error("fork failed while starting " + argv[0]);
  }
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the test process died before prctl took effect
    ::dup2(log_fd, STDOUT_FILENO);  // the duplicates lose O_CLOEXEC; log_fd itself closes at execve
    ::dup2(log_fd, STDERR_FILENO);
    ::execve(arguments[0], arguments.data(), environment.data());
    [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    ::_exit(127);
  }
  ::close(log_fd);
}

BackgroundProcess::~BackgroundProcess() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  wait(10.0);
}

void BackgroundProcess::signal(int signal_number) const {
  // Once reaped, the PID may already belong to another process.
  if (!exit_status_) ::kill(pid_, signal_number);
}

std::optional<int> BackgroundProcess::wait(double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (!exit_status_) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_status_;
}

bool BackgroundProcess::running() { return !wait(0.0).has_value(); }

std::string BackgroundProcess::output() const {
  std::ifstream in(log_file_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(log_start_));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string BackgroundProcess::output_tail(std::size_t max_chars) const {
  const std::string text = output();
  return text.size() > max_chars ? text.substr(text.size() - max_chars) : text;
}

std::optional<std::string> BackgroundProcess::poll_output(
    const std::function<std::optional<std::string>(const std::string&)>& found, double timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (true) {
    // Checked after seeing the exit too: the last lines may have come just before it.
    const bool exited = !running();
    if (std::optional<std::string> result = found(output())) return result;
    if (exited || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool BackgroundProcess::wait_for_output(const std::string& text, double timeout_seconds) {
  const auto contains = [&](const std::string& log) -> std::optional<std::string> {
    if (log.find(text) == std::string::npos) return std::nullopt;
    return text;
  };
  return poll_output(contains, timeout_seconds).has_value();
}

std::optional<std::string> BackgroundProcess::wait_for_match(const std::string& pattern, double timeout_seconds) {
  const std::regex regex(pattern);
  const auto matches = [&](const std::string& log) -> std::optional<std::string> {
    std::smatch match;
    if (!std::regex_search(log, match, regex)) return std::nullopt;
    return match.size() > 1 ? match[1].str() : match[0].str();
  };
  return poll_output(matches, timeout_seconds);
}

std::optional<Error> error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

std::optional<ErrorKind> error_kind_of(const std::function<void()>& action) {
  const std::optional<Error> error = error_of(action);
  return error ? std::optional<ErrorKind>(error->kind()) : std::nullopt;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

LogCapture::LogCapture() {
  for (const LogLevel level : {LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error})
    if (log_enabled(level)) {
      previous_level_ = level;
      break;
    }
  set_log_level(std::min(previous_level_, LogLevel::Info));
  set_log_sink([this](const LogRecord& record) {
    const std::lock_guard lock(mutex_);
    lines_.emplace_back(record.message);
  });
}

LogCapture::~LogCapture() {
  set_log_sink(nullptr);
  set_log_level(previous_level_);
}

std::vector<std::string> LogCapture::lines() const {
  const std::lock_guard lock(mutex_);
  return lines_;
}

}  // namespace solver::test
