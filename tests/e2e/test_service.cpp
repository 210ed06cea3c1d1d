// `solver agent` as systemd runs it, without systemd: the notify protocol read from a datagram
// socket the test binds where NOTIFY_SOCKET points (READY, STATUS, WATCHDOG, STOPPING), and the
// log formats: journald's priority prefixes when stderr is the journal's stream, JSON lines for
// log shippers.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/notify_socket.h"

namespace solver::test {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// A line as the text format writes it: "2024-05-01T12:34:56.789Z INFO  agent ...".
const std::regex kTimestampedLine("(^|\n)[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z [A-Z]+ +[a-z]+ ");

std::string device_inode(const std::filesystem::path& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return fmt::format("{}:{}", status.st_dev, status.st_ino);
}

TEST_CASE("agent under systemd's notify protocol: READY after registering, STATUS with the task, WATCHDOG while it "
          "works, STOPPING on SIGTERM", "[e2e][agent]") {
  ScratchDir dir("agent-notify");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  // About 5 s of training on one thread: several watchdog periods.
  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "long", small_task("agent-notify", 6000, 200)));
  NotifySocket notify(dir / "notify.sock");
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key, false),
                          dir / "agent.log", {notify.env(), "WATCHDOG_USEC=2000000"});
  INFO(agent.output_tail());

  REQUIRE(notify.wait_for_line("READY=1", 60));
  CHECK_THAT(agent.output(), Catch::Contains("registered with " + market.url()));
  const auto training = notify.wait_for(
      [&](const std::string& line) { return line.rfind("STATUS=training task " + task_id + " step ", 0) == 0; }, 60);
  REQUIRE(training);
  CHECK_THAT(*training, Catch::Contains(" on cpu;") && Catch::Contains("0 tasks completed"));

  // Pinged every half of WATCHDOG_USEC while the agent trains.
  const auto watching_from = Clock::now();
  for (int ping = 0; ping < 3; ++ping) REQUIRE(notify.wait_for_line("WATCHDOG=1", 3));
  CHECK(std::chrono::duration<double>(Clock::now() - watching_from).count() >= 1.5);

  REQUIRE(agent.wait_for_output("task=" + task_id + " completed", 120));
  REQUIRE(notify.wait_for(
      [](const std::string& line) { return line.rfind("STATUS=", 0) == 0 && line.find("; 1 tasks completed") != std::string::npos; },
      5));
  REQUIRE(notify.wait_for_line("WATCHDOG=1", 3));  // an idle agent is alive too

  agent.signal(SIGTERM);
  REQUIRE(notify.wait_for_line("STOPPING=1", 10));
  CHECK(agent.wait(30) == 0);
  // READY came once, before any watchdog ping.
  const auto& lines = notify.lines();
  CHECK(std::count(lines.begin(), lines.end(), "READY=1") == 1);
  CHECK(std::find(lines.begin(), lines.end(), "READY=1") < std::find(lines.begin(), lines.end(), "WATCHDOG=1"));
}

TEST_CASE("agent: with stderr on the journal's stream, log lines carry syslog priorities and no timestamp", "[e2e][agent]") {
  ScratchDir dir("agent-journal");
  const auto key = make_key(dir / "solver");
  const std::filesystem::path log = dir / "journal.log";
  write_text(log, "");
  // No market listens there: the agent logs its start (info), then retries (warning).
  const auto config = agent_config(dir.path(), "solver", "http://127.0.0.1:" + std::to_string(free_port()), {"solve"});
  BackgroundProcess agent(agent_argv(config, key), log, {"JOURNAL_STREAM=" + device_inode(log)});
  REQUIRE(agent.wait_for_output("unreachable", 30));
  agent.signal(SIGTERM);
  CHECK(agent.wait(30) == 0);
  const std::string output = agent.output();
  INFO(output);
  CHECK_THAT(output, Catch::Contains("<6>INFO  agent      solver starting"));
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) CHECK(std::regex_search(line, std::regex("^<[3-7]>")));
  CHECK_THAT(output, Catch::Contains("\n<4>WARN  agent      market http://127.0.0.1:"));
  CHECK_FALSE(std::regex_search(output, kTimestampedLine));  // journald stamps the time itself

  // Inherited by a process whose stderr went elsewhere, JOURNAL_STREAM is not taken for the journal.
  BackgroundProcess elsewhere(agent_argv(config, key), dir / "file.log", {"JOURNAL_STREAM=" + device_inode(log)});
  REQUIRE(elsewhere.wait_for_output("unreachable", 30));
  elsewhere.signal(SIGTERM);
  CHECK(elsewhere.wait(30) == 0);
  CHECK(std::regex_search(elsewhere.output(), kTimestampedLine));
  CHECK_THAT(elsewhere.output(), !Catch::Contains("<6>"));
}

TEST_CASE("solver --log-format json writes one JSON object a line, with the task it is about", "[e2e][agent]") {
  ScratchDir dir("agent-json-log");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "task", small_task("agent-json", 300, 50)));
  std::vector<std::string> argv = agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key);
  argv.insert(argv.begin() + 1, {"--log-format", "json"});
  const CommandResult result = run_command(argv);
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  std::istringstream lines(result.output);
  int parsed = 0;
  bool completion_seen = false;
  for (std::string line; std::getline(lines, line); ++parsed) {
    INFO(line);
    const json record = json::parse(line);  // throws, failing the test, on a line that is not JSON
    CHECK(record["time"].get<std::string>().size() == 24);
    CHECK((record["level"] == "debug" || record["level"] == "info" || record["level"] == "warn" || record["level"] == "error"));
    CHECK(record["component"].is_string());
    CHECK(record["message"].is_string());
    if (record["message"].get<std::string>().rfind("task=" + task_id + " completed", 0) == 0)
      completion_seen = record.value("task", "") == task_id;
  }
  CHECK(parsed > 3);
  CHECK(completion_seen);
}

}  // namespace
}  // namespace solver::test
