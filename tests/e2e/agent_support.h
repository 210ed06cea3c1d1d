// Shared pieces of the agent's end-to-end tests: `solver market serve` and `solver agent` as
// real processes on 127.0.0.1, their configs, and the market's view of a task.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/test_support.h"

namespace solver::test {

// A port that was free a moment ago (for a market that must come back on the same address).
int free_port();

// `solver market serve` in the background; `extra_args` are more of its flags.
class Market {
 public:
  Market(const std::filesystem::path& dir, int port, int lease_seconds = 300, const std::vector<std::string>& extra_args = {});
  const std::string& url() const { return url_; }
  BackgroundProcess& process() { return process_; }

 private:
  BackgroundProcess process_;
  std::string url_;
};

// One agent's config, written to dir/<name>.json: a work dir of its own, a shared cache and
// store, local task files allowed, fast polling and heartbeats; `changes` replaces top-level fields.
std::filesystem::path agent_config(const std::filesystem::path& dir, const std::string& name, const std::string& url,
                                   const std::vector<std::string>& roles,
                                   const nlohmann::json& changes = nlohmann::json::object());

std::vector<std::string> agent_argv(const std::filesystem::path& config, const std::filesystem::path& key,
                                    bool until_idle = true);

// Submits a task file with `solver market submit`; returns its id.
std::string submit(const std::string& url, const std::filesystem::path& key, const std::filesystem::path& task_file);

// A task of about 5 s of training on one thread, a checkpoint every 200 steps, written to
// dir/<id>.json: long enough to act on the agent in the middle of it.
std::filesystem::path long_task(const std::filesystem::path& dir, const std::string& id);

// The first slot of `solver status --work-dir WORK_DIR --json`.
nlohmann::json slot_status(const std::filesystem::path& work_dir);

// `solver market status TASK --json`.
nlohmann::json task_status(const std::string& url, const std::filesystem::path& key, const std::string& task_id);

}  // namespace solver::test
