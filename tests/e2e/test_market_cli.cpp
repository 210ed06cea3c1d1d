// `solver market serve | submit | status | cancel` as a person runs them: the real binary
// serving on a free port, tasks submitted and followed through it, SIGTERM ending it cleanly.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "common/files.h"
#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

namespace {

// `solver` running in the background: stdout through a pipe, stderr into a log file.
// Killed (SIGKILL) on destruction if it is still running, so a failed REQUIRE leaves nothing behind.
class BackgroundSolver {
 public:
  BackgroundSolver(const std::vector<std::string>& arguments, const std::filesystem::path& log) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<std::string> argv{solver_binary().string()};
      argv.insert(argv.end(), arguments.begin(), arguments.end());
      std::vector<char*> args;
      for (auto& arg : argv) args.push_back(arg.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    stdout_fd_ = fds[0];
  }
  ~BackgroundSolver() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  BackgroundSolver(const BackgroundSolver&) = delete;
  BackgroundSolver& operator=(const BackgroundSolver&) = delete;

  // The next line of stdout, or "" when none came within `limit`.
  std::string read_line(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::string line;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd ready{stdout_fd_, POLLIN, 0};
      if (::poll(&ready, 1, 100) <= 0) continue;
      char c = 0;
      if (::read(stdout_fd_, &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }

  // Sends `signal` and waits up to `limit` for the exit status (-1: still running).
  int stop_with(int signal, std::chrono::milliseconds limit) {
    ::kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

std::string last_line(const std::string& output) {
  std::string text = output;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const std::size_t start = text.rfind('\n');
  return start == std::string::npos ? text : text.substr(start + 1);
}

}  // namespace

TEST_CASE("solver market serves, takes a submitted task, shows and cancels it, and stops on SIGTERM", "[e2e][market]") {
  ScratchDir dir("market-cli");
  const auto key = make_key(dir.path());
  BackgroundSolver serve({"market", "serve", "--port", "0", "--db", (dir / "market.db").string()}, dir / "serve.log");
  const std::string url = serve.read_line(std::chrono::seconds(20));
  INFO("serve log:\n" << (std::filesystem::exists(dir / "serve.log") ? solver::read_file(dir / "serve.log") : ""));
  REQUIRE(url.starts_with("http://127.0.0.1:"));

  const std::string task_file = (source_dir() / "configs/tasks/fashion-mnist-mlp.json").string();
  const CommandResult submit = run_solver({"market", "submit", task_file, "--market", url, "--key", key.string()});
  REQUIRE(submit.exit_code == 0);
  const std::string task_id = last_line(submit.output);
  CHECK(task_id.size() == 16);
  CHECK(task_id.find_first_not_of("0123456789abcdef") == std::string::npos);

  const CommandResult listed = run_solver({"-q", "market", "status", "--json", "--market", url, "--key", key.string()});
  REQUIRE(listed.exit_code == 0);
  const json tasks = json::parse(listed.output);
  REQUIRE(tasks.size() == 1);
  CHECK(tasks[0]["task_id"] == task_id);
  CHECK(tasks[0]["name"] == "fashion-mnist-mlp");
  CHECK(tasks[0]["state"] == "queued");

  const CommandResult table = run_solver({"-q", "market", "status", "--market", url, "--key", key.string()});
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.output, Catch::Contains(task_id) && Catch::Contains("queued"));

  CHECK(run_solver({"market", "cancel", task_id, "--market", url, "--key", key.string()}).exit_code == 0);
  const CommandResult cancelled = run_solver({"-q", "market", "status", task_id, "--json", "--market", url, "--key", key.string()});
  REQUIRE(cancelled.exit_code == 0);
  CHECK(json::parse(cancelled.output)["state"] == "cancelled");

  const CommandResult missing = run_solver({"market", "status", "0123456789abcdef", "--market", url, "--key", key.string()});
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.output, Catch::Contains("404 task_not_found"));

  CHECK(serve.stop_with(SIGTERM, std::chrono::seconds(10)) == 0);
  CHECK_THAT(solver::read_file(dir / "serve.log"), Catch::Contains("stopped"));
}
