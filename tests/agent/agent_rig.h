// A rig for the agent library's tests: a market in-process on 127.0.0.1, a submitter, and one
// rig's agent services (its store a folder the test chooses), all in a scratch folder.
#pragma once

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agent/agent_config.h"
#include "agent/detail/agent_controls.h"
#include "agent/detail/gpu_steward.h"
#include "agent/detail/services.h"
#include "agent/detail/status_board.h"
#include "common/files.h"
#include "common/keys.h"
#include "market/server.h"
#include "net/fetch.h"
#include "net/market_client.h"
#include "net/store.h"
#include "tests/test_support.h"

namespace solver::test {

// Whether `condition` holds within `within`, asked every 50 ms.
template <typename Condition>
bool eventually(Condition condition, std::chrono::seconds within = std::chrono::seconds(30)) {
  for (const auto until = std::chrono::steady_clock::now() + within; std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(std::chrono::milliseconds(50)))
    if (condition()) return true;
  return condition();
}

// Long enough for a GPU steward's next NVML reading.
inline void await_next_reading() {
  std::this_thread::sleep_for(agent::detail::GpuSteward::kReadInterval + std::chrono::milliseconds(200));
}

inline net::RetryPolicy quick_retries() {
  return net::RetryPolicy{.max_attempts = 2, .initial_delay = std::chrono::milliseconds(10), .max_delay = std::chrono::milliseconds(50)};
}

// 60 steps of the reference MLP, a checkpoint every 20.
inline nlohmann::json small_task(std::uint64_t seed) {
  nlohmann::json task = nlohmann::json::parse(read_file(source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["seed"] = seed;
  task["training"].erase("epochs");
  task["training"]["steps"] = 60;
  task["proof"]["checkpoint_every"] = 20;
  return task;
}

// The market, its submitter and the rig's services; `lease` submits a task and leases it to the rig.
struct Rig {
  explicit Rig(const std::string& label) : dir(label) {
    market::MarketServerOptions options;
    options.db_path = dir / "market.db";
    options.port = 0;
    server = std::make_unique<market::MarketServer>(options);
    server->start();
    submitter = std::make_unique<net::MarketClient>(net::MarketClientOptions{server->url(), quick_retries()}, submitter_key);
    worker = std::make_unique<net::MarketClient>(net::MarketClientOptions{server->url(), quick_retries()}, worker_key);
    worker->register_worker({"test-rig", {"solve"}, {{"cpu", "test"}}, 0, 8192, {"mlp"}});
    settings.work_dir = dir / "work";
    settings.cache_dir = dir / "cache";
    settings.threads = 2;
    settings.heartbeat_seconds = 1;
    std::filesystem::create_directories(tasks_dir());
    cache = std::make_unique<net::FileCache>(net::FetchOptions{
        .cache_dir = settings.cache_dir, .policy = net::UrlPolicy{.allow_local_files = true}, .retry = quick_retries()});
  }

  std::filesystem::path tasks_dir() const { return settings.work_dir / "tasks"; }

  agent::detail::AgentServices services(net::BundleStore& store) {
    return agent::detail::AgentServices{worker_key, stop, *worker, store, *cache, publish_mutex, status, 3, controls};
  }

  // Submits a task and leases it to the rig.
  net::Lease lease(const nlohmann::json& task) {
    task_id = submitter->submit_task(task);
    const std::optional<net::Lease> lease = worker->claim_task();
    REQUIRE(lease);
    REQUIRE(lease->task_id == task_id);
    return *lease;
  }

  std::string market_state() { return submitter->task_status(task_id)["state"].get<std::string>(); }

  ScratchDir dir;
  SigningKey submitter_key = SigningKey::generate();
  SigningKey worker_key = SigningKey::generate();
  std::atomic<bool> stop{false};
  std::unique_ptr<market::MarketServer> server;
  std::unique_ptr<net::MarketClient> submitter, worker;
  agent::AgentConfig settings;
  std::unique_ptr<net::FileCache> cache;
  std::mutex publish_mutex;
  agent::detail::StatusBoard status{dir / "status.json", agent::detail::StatusIdentity{"test-rig", "", ""}, {"cpu"}, stop};
  agent::detail::AgentControls controls{{"cpu"}};
  std::string task_id;
};

}  // namespace solver::test
