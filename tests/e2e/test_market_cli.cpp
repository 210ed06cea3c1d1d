// `solver market serve | submit | status | cancel` as a person runs them: the real binary
// serving on a free port, tasks submitted and followed through it, SIGTERM ending it cleanly.
#include <signal.h>

#include <catch2/catch.hpp>

#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

namespace {

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
  BackgroundProcess serve({solver_binary().string(), "market", "serve", "--port", "0", "--db", (dir / "market.db").string()},
                          dir / "serve.log");
  const std::string url = serve.wait_for_match(R"(listening on (http://127\.0\.0\.1:\d+))", 20).value_or("");
  INFO("serve log:\n" << serve.output());
  REQUIRE(!url.empty());
  // Its stdout (in the same log) is the URL alone on a line, for scripts.
  CHECK_THAT(serve.output(), Catch::StartsWith(url + "\n") || Catch::Contains("\n" + url + "\n"));

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

  serve.signal(SIGTERM);
  CHECK(serve.wait(10) == 0);
  CHECK_THAT(serve.output(), Catch::Contains("stopped"));
}
