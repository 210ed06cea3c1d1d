#include "agent/detail/metrics_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <optional>
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

void set_gpu_gauges(Metrics& metrics, const std::vector<hardware::GpuInfo>& gpus) {
  struct Figure {
    const char* name;
    const char* help;
    std::optional<double> (*of)(const hardware::GpuInfo&);
  };
  static constexpr auto percent = [](const std::optional<unsigned>& value) -> std::optional<double> {
    if (!value) return std::nullopt;
    return *value / 100.0;
  };
  static constexpr auto number = [](const auto& value) -> std::optional<double> {
    if (!value) return std::nullopt;
    return static_cast<double>(*value);
  };
  static const Figure kFigures[] = {
      {"solver_gpu_temperature_celsius", "GPU core temperature (NVML).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.temperature_c); }},
      {"solver_gpu_power_watts", "Power the GPU board draws now (NVML).",
       [](const hardware::GpuInfo& gpu) { return gpu.power_draw_watts; }},
      {"solver_gpu_power_limit_watts", "Enforced GPU power limit (NVML).",
       [](const hardware::GpuInfo& gpu) { return gpu.power_limit_watts; }},
      {"solver_gpu_utilization_ratio", "Share of NVML's last sample period in which a kernel ran on the GPU (0 to 1).",
       [](const hardware::GpuInfo& gpu) { return percent(gpu.utilization_gpu_percent); }},
      {"solver_gpu_memory_utilization_ratio",
       "Share of NVML's last sample period in which GPU memory was read or written (0 to 1).",
       [](const hardware::GpuInfo& gpu) { return percent(gpu.utilization_memory_percent); }},
      {"solver_gpu_memory_used_bytes", "GPU memory in use (NVML).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.memory_used_bytes); }},
      {"solver_gpu_memory_free_bytes", "GPU memory free (NVML).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.memory_free_bytes); }},
      {"solver_gpu_memory_total_bytes", "GPU memory in all (NVML).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.memory_total_bytes); }},
      {"solver_gpu_throttle_reasons", "NVML clock throttle reason bits now active (0: none; docs/agent.md names the bits).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.throttle_reasons); }},
      {"solver_gpu_ecc_enabled", "1 when the GPU's ECC is on, 0 when off; absent on GPUs without ECC (NVML).",
       [](const hardware::GpuInfo& gpu) -> std::optional<double> {
         if (!gpu.ecc_enabled) return std::nullopt;
         return *gpu.ecc_enabled ? 1.0 : 0.0;
       }},
      {"solver_gpu_ecc_uncorrected_errors",
       "Uncorrected ECC errors in GPU memory since the driver loaded (NVML's volatile count; above 0: take the GPU out).",
       [](const hardware::GpuInfo& gpu) { return number(gpu.ecc_uncorrected_errors); }},
  };
  for (const Figure& figure : kFigures) metrics.clear_gauges(figure.name);
  for (const hardware::GpuInfo& gpu : gpus) {
    const MetricLabels labels{{"gpu", std::to_string(gpu.index)}, {"uuid", gpu.uuid}, {"name", gpu.name}};
    for (const Figure& figure : kFigures)
      if (const std::optional<double> value = figure.of(gpu)) metrics.gauge(figure.name, figure.help, labels).set(*value);
  }
}

void add_gpu_collector(Metrics& metrics, std::string nvml_library) {
  metrics.add_collector([library = std::move(nvml_library)](Metrics& into) {
    // NVML's init and shutdown are process-wide: collectors never run two at once (Metrics says so).
    set_gpu_gauges(into, hardware::read_gpu_inventory(library).gpus);
  });
}

}  // namespace solver::agent::detail
