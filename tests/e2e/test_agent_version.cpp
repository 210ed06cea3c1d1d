// A market that accepts only newer agents (`solver market serve --min-agent-version`), against a
// real `solver agent`: the agent claims nothing, says why once in its log, in status.json and in
// `solver status`, and `solver doctor` FAILs its version row; once the market accepts this
// version, the task that waited is claimed and completed as usual.
#include <signal.h>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

#include "common/version.h"
#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"

namespace solver::test {
namespace {

using json = nlohmann::json;

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

TEST_CASE("agent: a market that accepts only newer agents gets no claims from this one, until it accepts its version", "[e2e][agent]") {
  ScratchDir dir("agent-outdated");
  const auto key = make_key(dir / "solver");
  const int port = free_port();
  auto market = std::make_unique<Market>(dir.path(), port, 300, std::vector<std::string>{"--min-agent-version", "99.0.0"});
  const std::string url = market->url();
  const std::string task_id = submit(url, key, write_task(dir.path(), "task", small_task("agent-outdated", 40, 20)));
  const auto config = agent_config(dir.path(), "solver", url, {"solve", "verify"});
  const std::string why = "this agent is " + std::string(solver_version()) + "; the market accepts 99.0.0 or newer: upgrade solver";

  {
    BackgroundProcess agent(agent_argv(config, key, false), dir / "agent.log");
    REQUIRE(agent.wait_for_output(why, 30));
    std::this_thread::sleep_for(std::chrono::seconds(3));  // several polls, 0.2 to 1 s apart
    INFO(agent.output());
    CHECK(occurrences(agent.output(), why) == 1);  // logged once, not at every poll
    CHECK(task_status(url, key, task_id)["state"] == "queued");
    CHECK(read_json(dir / "solver" / "status.json")["outdated"] == why);
    const CommandResult shown = run_solver({"status", "--work-dir", (dir / "solver").string()});
    CHECK(shown.exit_code == 0);
    CHECK_THAT(shown.output, Catch::Contains("outdated: " + why));
    agent.signal(SIGTERM);
    REQUIRE(agent.wait(10) == 0);
  }

  const CommandResult doctor = run_solver({"doctor", "--config", config.string(), "--key", key.string(), "--json"});
  INFO(doctor.output);
  CHECK(doctor.exit_code == 1);
  const json report = json::parse(doctor.output.substr(doctor.output.find('{')));
  bool found = false;
  for (const json& row : report.at("checks")) {
    if (row.at("check") != "version") continue;
    found = true;
    CHECK(row["status"] == "FAIL");
    CHECK_THAT(row["detail"].get<std::string>(), Catch::Contains(why.substr(0, why.find(": upgrade"))));
    CHECK(row["fix"] == "upgrade solver to 99.0.0 or newer");
  }
  CHECK(found);

  // The market's operator sets the minimum to this very version: the agent claims and trains as usual.
  market->process().signal(SIGTERM);
  REQUIRE(market->process().wait(10) == 0);
  market.reset();
  market = std::make_unique<Market>(dir.path(), port, 300, std::vector<std::string>{"--min-agent-version", std::string(solver_version())});
  const CommandResult solved = run_command(agent_argv(config, key));
  INFO(solved.output);
  REQUIRE(solved.exit_code == 0);
  CHECK_THAT(solved.output, Catch::Contains("task=" + task_id + " completed"));
  CHECK(task_status(url, key, task_id)["state"] == "completed");
  CHECK(read_json(dir / "solver" / "status.json")["outdated"] == "");
}

TEST_CASE("market: a malformed --min-agent-version is refused at start, naming the value", "[e2e][market]") {
  ScratchDir dir("market-bad-min-version");
  const CommandResult result = run_solver({"market", "serve", "--db", (dir / "market.db").string(), "--port", "0",
                                           "--min-agent-version", "0.2-beta"});
  CHECK(result.exit_code == 78);
  CHECK_THAT(result.output, Catch::Contains("--min-agent-version: \"0.2-beta\" is not a version"));
}

}  // namespace
}  // namespace solver::test
