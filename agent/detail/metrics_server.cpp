#include "agent/detail/metrics_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace solver::agent::detail {

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> ended{false};
};

MetricsServer::MetricsServer(Metrics& metrics, int port) : impl_(std::make_unique<Impl>()) {
  httplib::Server& server = impl_->server;
  // A scrape is one small request: two threads, short timeouts, no request bodies.
  server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_keep_alive_max_count(10);
  server.set_payload_max_length(0);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second agent would share
  // the port (and half the scrapes) instead of failing to start.
  server.set_socket_options([](int socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.Get("/metrics", [&metrics](const httplib::Request&, httplib::Response& response) {
    response.set_content(metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const auto not_allowed = [](const httplib::Request&, httplib::Response& response) { response.status = 405; };
  server.Post("/metrics", not_allowed);
  server.Put("/metrics", not_allowed);
  server.Delete("/metrics", not_allowed);
  if (port == 0) {
    port_ = server.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw Error(ErrorKind::Config, "metrics: cannot listen on a free port of 127.0.0.1");
  } else {
    if (!server.bind_to_port("127.0.0.1", port))
      throw Error(ErrorKind::Config, "metrics.port " + std::to_string(port) +
                                         ": cannot listen on 127.0.0.1:" + std::to_string(port) +
                                         " (in use by another program, or a port below 1024 without the privilege)");
    port_ = port;
  }
  impl_->thread = std::thread([this] {
    impl_->server.listen_after_bind();
    impl_->ended = true;
  });
  // Until it runs, stop() would not reach it, and the destructor would wait forever.
  while (!impl_->server.is_running() && !impl_->ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  log_info("agent", "metrics on http://127.0.0.1:{}/metrics", port_);
}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void add_gpu_collector(Metrics& metrics, std::string nvml_library) {
  metrics.add_collector([library = std::move(nvml_library)](Metrics& into) {
    // NVML's init and shutdown are process-wide: collectors never run two at once (Metrics says so).
    const hardware::GpuInventory inventory = hardware::read_gpu_inventory(library);
    for (const char* family : {"solver_gpu_temperature_celsius", "solver_gpu_power_limit_watts",
                               "solver_gpu_memory_used_bytes", "solver_gpu_memory_total_bytes",
                               "solver_gpu_throttle_reasons"})
      into.clear_gauges(family);
    for (const hardware::GpuInfo& gpu : inventory.gpus) {
      const MetricLabels labels{{"gpu", std::to_string(gpu.index)}, {"uuid", gpu.uuid}, {"name", gpu.name}};
      if (gpu.temperature_c)
        into.gauge("solver_gpu_temperature_celsius", "GPU core temperature (NVML).", labels).set(*gpu.temperature_c);
      if (gpu.power_limit_watts)
        into.gauge("solver_gpu_power_limit_watts", "Enforced GPU power limit (NVML).", labels).set(*gpu.power_limit_watts);
      if (gpu.memory_used_bytes)
        into.gauge("solver_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels)
            .set(static_cast<double>(*gpu.memory_used_bytes));
      if (gpu.memory_total_bytes)
        into.gauge("solver_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels)
            .set(static_cast<double>(*gpu.memory_total_bytes));
      if (gpu.throttle_reasons)
        into.gauge("solver_gpu_throttle_reasons",
                   "NVML clock throttle reason bits now active (0: none; docs/agent.md names the bits).", labels)
            .set(static_cast<double>(*gpu.throttle_reasons));
    }
  });
}

}  // namespace solver::agent::detail
