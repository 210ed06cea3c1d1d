// The operator's controls of a running agent (`solver agent drain|pause|resume|disable|enable`,
// through <work_dir>/control.sock), against real `solver agent` and `solver market serve`
// processes: what each does to a task in flight, and a control socket that a broken or flooding
// client cannot harm.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <httplib.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <regex>
#include <thread>

#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"

namespace solver::test {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

CommandResult control(const std::string& command, const std::filesystem::path& work_dir, const std::string& device = "") {
  std::vector<std::string> arguments{"agent", command, "--work-dir", work_dir.string()};
  if (!device.empty()) arguments.push_back(device);
  return run_solver(arguments);
}

// A raw client of the control socket, to send what `solver agent` never would.
class RawClient {
 public:
  explicit RawClient(const std::filesystem::path& socket_path) : fd_(::socket(AF_UNIX, SOCK_STREAM, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
    const timeval timeout{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  }
  ~RawClient() { ::close(fd_); }
  void send_text(const std::string& text) const {
    for (std::size_t sent = 0; sent < text.size();) {
      const ssize_t n = ::send(fd_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the agent closed it: what follows is in the reply
      sent += static_cast<std::size_t>(n);
    }
  }
  // The next reply line; empty when the agent closed the connection instead.
  std::string reply_line() {
    char c = 0;
    std::string line;
    while (::recv(fd_, &c, 1, 0) == 1) {
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }
  // An end of file, or a reset: a unix socket closed with unread bytes (the rest of a huge line) resets.
  bool closed_by_peer() {
    char c = 0;
    const ssize_t got = ::recv(fd_, &c, 1, 0);
    return got == 0 || (got < 0 && errno == ECONNRESET);
  }

 private:
  int fd_;
};

std::string metrics_of(int port) {
  httplib::Client client("127.0.0.1", port);
  const auto reply = client.Get("/metrics");
  REQUIRE(reply);
  return reply->body;
}

TEST_CASE("agent controls: drain under a running task completes it, claims nothing else, and exits 0", "[e2e][agent][controls]") {
  ScratchDir dir("agent-drain");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string first = submit(market.url(), key, long_task(dir.path(), "drain-first"));
  const std::string second = submit(market.url(), key, long_task(dir.path(), "drain-second"));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key, /*until_idle=*/false),
                          dir / "agent.log");
  const std::optional<std::string> claimed = agent.wait_for_match("task=([A-Za-z0-9_-]+) claimed", 60);
  REQUIRE(claimed);
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  const CommandResult drained = control("drain", dir / "solver");
  INFO(drained.output);
  CHECK(drained.exit_code == 0);
  CHECK_THAT(drained.output, Catch::Contains("draining"));
  CHECK(slot_status(dir / "solver")["control"] == "draining");

  const std::optional<int> status = agent.wait(120);
  INFO(agent.output());
  REQUIRE(status == 0);  // under systemd, Restart=on-failure leaves a 0 exit stopped
  CHECK_THAT(agent.output(), Catch::Contains("task=" + *claimed + " completed") && Catch::Contains("drained"));
  const std::string other = *claimed == first ? second : first;
  CHECK_THAT(agent.output(), !Catch::Contains("task=" + other + " claimed"));
  CHECK(task_status(market.url(), key, *claimed)["state"] == "completed");
  CHECK(task_status(market.url(), key, other)["state"] == "queued");
}

TEST_CASE("agent controls: pause stops training at a checkpoint and holds the lease, and resume completes the task", "[e2e][agent][controls]") {
  ScratchDir dir("agent-pause");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0, /*lease_seconds=*/6);  // held only by the heartbeats while paused
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "pause"));
  const int metrics_port = free_port();
  BackgroundProcess agent(
      agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}, {{"metrics", {{"port", metrics_port}}}}), key),
      dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  const CommandResult paused = control("pause", dir / "solver");
  INFO(paused.output);
  CHECK(paused.exit_code == 0);
  const std::optional<std::string> stopped_at = agent.wait_for_match("stopped at checkpoint step ([0-9]+) of 6000 while held", 60);
  INFO(agent.output());
  REQUIRE(stopped_at);
  CHECK(std::stoi(*stopped_at) % 200 == 0);
  REQUIRE(agent.wait_for_output("held for the operator (paused)", 10));
  const json slot = slot_status(dir / "solver");
  CHECK(slot["control"] == "paused");
  CHECK(slot["activity"] == "held");
  CHECK_THAT(metrics_of(metrics_port), Catch::Contains("solver_agent_paused 1"));

  // Longer than the lease: only the heartbeats keep it, and no step is trained meanwhile.
  std::this_thread::sleep_for(std::chrono::seconds(8));
  CHECK(task_status(market.url(), key, task_id)["state"] == "leased");
  CHECK(agent.output().find("checkpoint step=" + std::to_string(std::stoi(*stopped_at) + 200) + " committed") ==
        std::string::npos);

  const CommandResult resumed = control("resume", dir / "solver");
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);
  const std::optional<int> status = agent.wait(120);
  INFO(agent.output());
  REQUIRE(status == 0);
  CHECK_THAT(agent.output(), Catch::Contains("resuming from checkpoint step=" + *stopped_at) &&
                                 Catch::Contains("task=" + task_id + " completed"));
  const json market_status = task_status(market.url(), key, task_id);
  CHECK(market_status["state"] == "completed");
  CHECK(market_status["attempts"] == 0);  // one lease throughout
}

TEST_CASE("agent controls: a task held past pause.release_after_seconds is released to the market without blame, and "
          "this rig claims it again once resumed", "[e2e][agent][controls]") {
  ScratchDir dir("agent-release");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "release"));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"},
                                                  {{"pause", {{"release_after_seconds", 1}}}}),
                                     key, /*until_idle=*/false),
                          dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));
  CHECK(control("pause", dir / "solver").exit_code == 0);
  INFO(agent.output());
  REQUIRE(agent.wait_for_output("given back to the market", 60));
  const json released = task_status(market.url(), key, task_id);
  CHECK(released["state"] == "queued");
  CHECK(released["attempts"] == 0);
  CHECK(released["failure_reason"].is_null());  // released, not failed: no fault on record
  CHECK_FALSE(std::filesystem::exists(dir / "solver" / "tasks" / task_id));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(agent.output().find("claimed", agent.output().find("given back")) == std::string::npos);  // paused: claims nothing

  // Not excluded, not held back: resumed, the rig claims the same task again and completes it.
  CHECK(control("resume", dir / "solver").exit_code == 0);
  CHECK(agent.wait_for_output("task=" + task_id + " completed", 120));
  const json completed = task_status(market.url(), key, task_id);
  CHECK(completed["state"] == "completed");
  CHECK(completed["attempts"] == 0);
  agent.signal(SIGTERM);
  CHECK(agent.wait(30) == 0);
}

TEST_CASE("agent controls: a disk below limits.min_free_disk_gb holds the task at a checkpoint with its lease, past "
          "pause.release_after_seconds, and with room again it completes", "[e2e][agent][controls]") {
  ScratchDir dir("agent-disk-low");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0, /*lease_seconds=*/6);  // held only by the heartbeats while the disk is low
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "disk-low"));
  const int metrics_port = free_port();
  // A release deadline of 1 s, which an operator's pause would hit: the disk hold has none.
  const auto config_with_mark = [&](double min_free_disk_gb) {
    return agent_config(dir.path(), "solver", market.url(), {"solve"},
                        {{"metrics", {{"port", metrics_port}}},
                         {"pause", {{"release_after_seconds", 1}}},
                         {"limits", {{"min_free_disk_gb", min_free_disk_gb}}}});
  };
  BackgroundProcess agent(agent_argv(config_with_mark(0), key), dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  config_with_mark(1000000);  // 1 PB: more than this disk has free
  agent.signal(SIGHUP);
  const std::optional<std::string> stopped_at =
      agent.wait_for_match("stopped at checkpoint step ([0-9]+) of 6000 while held .disk low: ", 60);
  INFO(agent.output());
  REQUIRE(stopped_at);
  CHECK(std::stoi(*stopped_at) % 200 == 0);
  REQUIRE(agent.wait_for_output("the lease is kept until the disk has room again", 10));
  const json slot = slot_status(dir / "solver");
  CHECK_THAT(slot["control"].get<std::string>(),
             Catch::StartsWith("disk low: ") && Catch::Contains("GB free, limits.min_free_disk_gb is 1000000"));
  CHECK(slot["activity"] == "held");
  CHECK_THAT(metrics_of(metrics_port), Catch::Contains("solver_agent_disk_low 1"));
  CHECK_THAT(control("resume", dir / "solver").output, Catch::Contains("was not paused"));  // not the operator's to end

  // Longer than the lease and the release deadline: the heartbeats keep the lease, and no step is trained.
  std::this_thread::sleep_for(std::chrono::seconds(8));
  CHECK(task_status(market.url(), key, task_id)["state"] == "leased");
  CHECK(slot_status(dir / "solver")["activity"] == "held");
  CHECK(agent.output().find("given back") == std::string::npos);
  CHECK(agent.output().find("checkpoint step=" + std::to_string(std::stoi(*stopped_at) + 200) + " committed") ==
        std::string::npos);

  config_with_mark(0);
  agent.signal(SIGHUP);
  const std::optional<int> status = agent.wait(120);
  INFO(agent.output());
  REQUIRE(status == 0);
  CHECK_THAT(agent.output(), Catch::Contains("training goes on") &&
                                 Catch::Contains("resuming from checkpoint step=" + *stopped_at) &&
                                 Catch::Contains("task=" + task_id + " completed"));
  const json market_status = task_status(market.url(), key, task_id);
  CHECK(market_status["state"] == "completed");
  CHECK(market_status["attempts"] == 0);  // one lease throughout
}

TEST_CASE("agent controls: a disabled device's slot takes no work until it is enabled", "[e2e][agent][controls]") {
  ScratchDir dir("agent-disable");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key, /*until_idle=*/false),
                          dir / "agent.log");
  REQUIRE(agent.wait_for_output("registered with", 60));

  const CommandResult disabled = control("disable", dir / "solver", "cpu");
  INFO(disabled.output);
  CHECK(disabled.exit_code == 0);
  const CommandResult unknown = control("disable", dir / "solver", "cuda:3");
  CHECK(unknown.exit_code == 2);
  CHECK_THAT(unknown.output, Catch::Contains("no slot of this agent trains on cuda:3"));

  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "small", small_task("disable", 300, 50)));
  std::this_thread::sleep_for(std::chrono::seconds(3));  // three turns of its 1 s polling
  CHECK(task_status(market.url(), key, task_id)["state"] == "queued");
  const json slot = slot_status(dir / "solver");
  CHECK(slot["control"] == "disabled");
  CHECK_THAT(slot["activity"].get<std::string>(), Catch::Contains("disabled by the operator"));

  CHECK(control("enable", dir / "solver", "cpu").exit_code == 0);
  INFO(agent.output());
  CHECK(agent.wait_for_output("task=" + task_id + " completed", 60));
  CHECK(slot_status(dir / "solver")["control"] == "");
  agent.signal(SIGTERM);
  CHECK(agent.wait(30) == 0);
}

TEST_CASE("agent controls: the control socket is owner-only, and garbage, huge lines or a flood of connections get "
          "error replies while the agent keeps working", "[e2e][agent][controls][hostile]") {
  ScratchDir dir("agent-socket");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const auto config = agent_config(dir.path(), "solver", market.url(), {"solve"});
  const std::filesystem::path socket_path = dir / "solver" / "control.sock";
  CHECK(control("pause", dir / "solver").exit_code == 3);  // no agent runs there
  {
    // An agent killed with -9 leaves its socket behind; the next one replaces it.
    BackgroundProcess crashed(agent_argv(config, key, /*until_idle=*/false), dir / "crashed.log");
    REQUIRE(crashed.wait_for_output("registered with", 60));
    crashed.signal(SIGKILL);
    crashed.wait(10);
    REQUIRE(std::filesystem::exists(std::filesystem::symlink_status(socket_path)));
  }
  BackgroundProcess agent(agent_argv(config, key, /*until_idle=*/false), dir / "agent.log");
  REQUIRE(agent.wait_for_output("registered with", 60));

  struct stat info {};
  REQUIRE(::lstat(socket_path.c_str(), &info) == 0);
  CHECK(S_ISSOCK(info.st_mode));
  CHECK((info.st_mode & 0777) == 0600);

  {
    RawClient client(socket_path);
    client.send_text("garbage\n");
    CHECK_THAT(client.reply_line(), Catch::Contains("\"ok\":false") && Catch::Contains("not a JSON request"));
    client.send_text(R"({"command": "fly"})" "\n");
    CHECK_THAT(client.reply_line(), Catch::Contains("unknown command \\\"fly\\\""));
    client.send_text(R"({"command": "status"})" "\n");  // the same connection still answers
    CHECK_THAT(client.reply_line(), Catch::Contains("\"ok\":true") && Catch::Contains("\"paused\":false"));
    client.send_text(std::string(100000, 'x'));
    CHECK_THAT(client.reply_line(), Catch::Contains("request longer than 4096 bytes"));
    CHECK(client.closed_by_peer());
  }
  {
    std::vector<std::unique_ptr<RawClient>> flood;
    for (int i = 0; i < 12; ++i) flood.push_back(std::make_unique<RawClient>(socket_path));
    CHECK_THAT(flood.back()->reply_line(), Catch::Contains("too many control connections"));
  }
  CHECK(run_solver({"agent", "resume", "--work-dir", (dir / "solver").string(), "--market", market.url()}).exit_code == 64);

  // It still works: a task submitted now is completed; a drain then ends it and removes the socket.
  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "small", small_task("socket", 300, 50)));
  INFO(agent.output());
  CHECK(agent.wait_for_output("task=" + task_id + " completed", 60));
  CHECK_THAT(control("drain", dir / "solver").output, Catch::Contains("draining"));
  REQUIRE(agent.wait(60) == 0);
  CHECK_THAT(agent.output(), Catch::Contains("drained"));
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(socket_path)));
}

}  // namespace
}  // namespace solver::test
