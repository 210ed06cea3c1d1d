// The agent's Prometheus endpoint (docs/agent.md, "Metrics"): GET /metrics on 127.0.0.1 only,
// served by cpp-httplib on two threads of its own. Loopback only, because the figures (tasks,
// leases, GPUs) are the operator's business: a scraper elsewhere reaches them through its own
// tunnel or proxy. Anything but GET /metrics is answered 404 or 405.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/metrics.h"
#include "hardware/nvml.h"

namespace solver::agent::detail {

class MetricsServer {
 public:
  // Listens on 127.0.0.1:`port` (0: a free port, for tests) and serves `metrics`, which must
  // outlive the server. Throws Error(Config) naming the port when it cannot be bound.
  MetricsServer(Metrics& metrics, int port);
  ~MetricsServer();  // stops listening and joins its threads
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// Replaces the solver_gpu_* gauges with one series per GPU in `gpus` (labelled `gpu`, `uuid`,
// `name`) for each figure NVML gave; a GPU gone since the last call leaves no series behind.
void set_gpu_gauges(Metrics& metrics, const std::vector<hardware::GpuInfo>& gpus);

// Registers a collector that reads the GPU inventory through NVML (`nvml_library`) at each
// scrape and sets the solver_gpu_* gauges with set_gpu_gauges; a machine without NVML has none.
void add_gpu_collector(Metrics& metrics, std::string nvml_library = std::string(hardware::kNvmlLibrary));

}  // namespace solver::agent::detail
