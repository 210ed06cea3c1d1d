// `solver market serve | submit | status | cancel`: the reference market server, and a small
// command-line client for submitters (docs/market-protocol.md, docs/cli.md).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent_config.h"
#include "agent/exit_status.h"
#include "cli/command.h"
#include "cli/common.h"
#include "cli/signals.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/task.h"
#include "market/server.h"
#include "net/market_client.h"

namespace solver::cli {
namespace {

using nlohmann::json;

struct MarketServeOptions {
  std::filesystem::path db = "market.db";
  std::string host = "127.0.0.1";
  int port = 8470;  // 0: any free port
  std::int64_t lease_seconds = 300;
  std::int64_t fault_hold_seconds = 60;
  std::string min_agent_version;  // empty: any
};

// What submit, status and cancel share.
struct MarketClientCommandOptions {
  std::string market_url;                         // empty: default_market_url()
  std::optional<std::filesystem::path> key_file;  // empty: default_key_path()
  bool json = false;
};

// The market URL: $SOLVER_MARKET, else the agent's default (http://127.0.0.1:8470).
std::string default_market_url() {
  return agent::market_url_from_environment().value_or(agent::AgentConfig{}.market_url);
}

net::MarketClientOptions client_options(const MarketClientCommandOptions& options) {
  net::MarketClientOptions client;
  client.base_url = options.market_url.empty() ? default_market_url() : options.market_url;
  client.retry.max_attempts = 3;  // a person is waiting: a few quick tries, then a clear error
  client.retry.max_delay = std::chrono::milliseconds(2'000);
  client.timeout = std::chrono::milliseconds(15'000);
  return client;
}

std::string text_or_dash(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump();
}

std::string progress_text(const json& progress) {
  if (!progress.is_object()) return "-";
  return std::to_string(progress.value("step", 0)) + "/" + std::to_string(progress.value("total_steps", 0));
}

std::string loss_text(const json& progress) {
  if (!progress.is_object() || !progress.contains("loss") || !progress["loss"].is_number()) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4f", progress["loss"].get<double>());
  return buffer;
}

void print_task_table(const json& tasks) {
  std::printf("%-16s  %-24s  %-9s  %8s  %13s  %8s  %s\n", "TASK", "NAME", "STATE", "ATTEMPTS", "STEP", "LOSS", "SOLVER");
  for (const json& task : tasks) {
    const std::string solver = task.value("solver", json()).is_string() ? task["solver"].get<std::string>().substr(0, 12) : "-";
    std::printf("%-16s  %-24s  %-9s  %8lld  %13s  %8s  %s\n", text_or_dash(task.value("task_id", json())).c_str(),
                text_or_dash(task.value("name", json())).substr(0, 24).c_str(), text_or_dash(task.value("state", json())).c_str(),
                static_cast<long long>(task.value("attempts", 0)), progress_text(task.value("progress", json())).c_str(),
                loss_text(task.value("progress", json())).c_str(), solver.c_str());
  }
}

void print_task_details(const json& status) {
  std::printf("task        %s (%s)\n", text_or_dash(status.value("task_id", json())).c_str(), text_or_dash(status.value("name", json())).c_str());
  std::printf("state       %s, attempts %lld\n", text_or_dash(status.value("state", json())).c_str(),
              static_cast<long long>(status.value("attempts", 0)));
  std::printf("task sha256 %s\n", text_or_dash(status.value("task_sha256", json())).c_str());
  std::printf("submitter   %s\n", text_or_dash(status.value("submitter", json())).c_str());
  std::printf("solver      %s\n", text_or_dash(status.value("solver", json())).c_str());
  const json progress = status.value("progress", json());
  std::printf("progress    step %s, loss %s\n", progress_text(progress).c_str(), loss_text(progress).c_str());
  std::printf("commitments %zu\n", status.value("commitments", json::array()).size());
  const json completion = status.value("completion", json());
  if (completion.is_object())
    std::printf("bundle      %s (manifest %s)\n", text_or_dash(completion.value("bundle_address", json())).c_str(),
                text_or_dash(completion.value("manifest_sha256", json())).c_str());
  if (status.value("failure_reason", json()).is_string())
    std::printf("failure     %s\n", status["failure_reason"].get<std::string>().c_str());
  for (const json& verdict : status.value("verdicts", json::array()))
    std::printf("verdict     %s by %s: %s\n", verdict.value("accepted", false) ? "accepted" : "rejected",
                text_or_dash(verdict.value("verifier", json())).substr(0, 12).c_str(), text_or_dash(verdict.value("reason", json())).c_str());
}

// Serves until SIGINT or SIGTERM, then stops cleanly; prints the bound URL on stdout.
int market_serve_command(const MarketServeOptions& options) {
  market::MarketServerOptions server_options;
  server_options.db_path = options.db;
  server_options.host = options.host;
  server_options.port = options.port;
  server_options.lease_seconds = options.lease_seconds;
  server_options.fault_hold_seconds = options.fault_hold_seconds;
  server_options.min_agent_version = options.min_agent_version;
  market::MarketServer server(server_options);
  StopSignals signals;
  server.start();
  // The bound URL on stdout, alone on its line: with --port 0 it is how a script finds the market.
  std::printf("%s\n", server.url().c_str());
  std::fflush(stdout);
  server.serve_forever(&StopSignals::flag());
  return agent::kExitOk;
}

int market_submit_command(const MarketClientCommandOptions& options, const std::filesystem::path& task_file) {
  const Task task = load_task_file(task_file);  // validated here, so a bad task never leaves the machine
  const SigningKey key = SigningKey::load(options.key_file.value_or(default_key_path()));
  net::MarketClient client(client_options(options), key);
  const std::string task_id = client.submit_task(task_to_json(task));
  log_info("market", "submitted task {} ({}) to {}", task_id, task.id, client_options(options).base_url);
  std::printf("%s\n", task_id.c_str());
  return agent::kExitOk;
}

int market_status_command(const MarketClientCommandOptions& options, const std::optional<std::string>& task_id) {
  const SigningKey key = SigningKey::load(options.key_file.value_or(default_key_path()));
  net::MarketClient client(client_options(options), key);
  const json result = task_id ? client.task_status(*task_id) : client.list_tasks();
  if (options.json) {
    std::printf("%s\n", result.dump(2).c_str());
  } else if (task_id) {
    print_task_details(result);
  } else {
    print_task_table(result);
  }
  return agent::kExitOk;
}

int market_cancel_command(const MarketClientCommandOptions& options, const std::string& task_id) {
  const SigningKey key = SigningKey::load(options.key_file.value_or(default_key_path()));
  net::MarketClient client(client_options(options), key);
  client.cancel_task(task_id);
  std::printf("cancelled %s\n", task_id.c_str());
  return agent::kExitOk;
}

void add_market_client_options(CLI::App& command, MarketClientCommandOptions& options) {
  command.add_option("--market", options.market_url, "Market URL (default: $SOLVER_MARKET or http://127.0.0.1:8470)");
  command.add_option("--key", options.key_file, "Key that signs the requests (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
}

Command add_market_serve_command(CLI::App& market) {
  auto options = std::make_shared<MarketServeOptions>();
  CLI::App* command = market.add_subcommand("serve", "Run the market server until SIGINT or SIGTERM (prints its URL)");
  command->add_option("--db", options->db, "SQLite database file")->capture_default_str();
  command->add_option("--host", options->host, "Address to listen on")->capture_default_str();
  command->add_option("--port", options->port, "Port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  command->add_option("--fault-hold-seconds", options->fault_hold_seconds,
                      "A worker's first hold after repeated failures not down to their tasks; doubles after")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  command->add_option("--lease-seconds", options->lease_seconds, "How long a claim lasts without a heartbeat")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  command->add_option("--min-agent-version", options->min_agent_version,
                      "Lowest agent version allowed to claim work, e.g. 0.2.0 (default: any); advertised in GET /v1/health");
  return {command, [options] { return market_serve_command(*options); }};
}

Command add_market_submit_command(CLI::App& market) {
  auto options = std::make_shared<MarketClientCommandOptions>();
  auto task_file = std::make_shared<std::filesystem::path>();
  CLI::App* command = market.add_subcommand("submit", "Validate a task file and submit it; prints the task id");
  command->add_option("task", *task_file, "Task file (JSON, docs/task-format.md)")->required();
  add_market_client_options(*command, *options);
  return {command, [options, task_file] { return market_submit_command(*options, *task_file); }};
}

Command add_market_status_command(CLI::App& market) {
  auto options = std::make_shared<MarketClientCommandOptions>();
  auto task_id = std::make_shared<std::optional<std::string>>();
  CLI::App* command = market.add_subcommand("status", "Show one task, or list all");
  command->add_option("task_id", *task_id, "Task id (default: all tasks)");
  command->add_flag("--json", options->json, "Print the market's JSON");
  add_market_client_options(*command, *options);
  return {command, [options, task_id] { return market_status_command(*options, *task_id); }};
}

Command add_market_cancel_command(CLI::App& market) {
  auto options = std::make_shared<MarketClientCommandOptions>();
  auto task_id = std::make_shared<std::string>();
  CLI::App* command = market.add_subcommand("cancel", "Cancel a queued or running task you submitted");
  command->add_option("task_id", *task_id, "Task id")->required();
  add_market_client_options(*command, *options);
  return {command, [options, task_id] { return market_cancel_command(*options, *task_id); }};
}

}  // namespace

Command add_market_command(CLI::App& parent) {
  CLI::App* command = parent.add_subcommand("market", "The reference market: serve it, submit tasks, follow and cancel them");
  command->require_subcommand(1);
  const std::vector<Command> subcommands = {add_market_serve_command(*command), add_market_submit_command(*command),
                                            add_market_status_command(*command), add_market_cancel_command(*command)};
  return {command, [subcommands] { return run_chosen(subcommands); }};
}

}  // namespace solver::cli
