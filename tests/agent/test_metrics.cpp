// The agent's metrics: the registry's text exposition (agent/metrics.h), the GPU gauges from
// NVML (the fake libnvidia-ml of tests/hardware), and a real scrape of the endpoint after a task
// job trained against an in-process market, checked by Prometheus's own `promtool check metrics`.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <regex>

#include "agent/detail/metrics_server.h"
#include "agent/detail/services.h"
#include "agent/detail/status_board.h"
#include "agent/detail/task_job.h"
#include "agent/metrics.h"
#include "common/error.h"
#include "common/files.h"
#include "common/keys.h"
#include "market/server.h"
#include "net/fetch.h"
#include "net/http.h"
#include "net/market_client.h"
#include "net/store.h"
#include "tests/agent/agent_rig.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent;
using namespace solver::agent::detail;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// The value of the sample line `series` (name and labels as written) in an exposition, or -1.
double sample(const std::string& text, const std::string& series) {
  const std::string start = series + " ";
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    if (line.starts_with(start)) return std::stod(line.substr(start.size()));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return -1;
}

std::string scrape(int port, const std::string& path = "/metrics", const std::string& method = "GET") {
  net::HttpRequest request;
  request.method = method;
  request.url = "http://127.0.0.1:" + std::to_string(port) + path;
  const net::HttpResponse response = net::perform(request);
  if (response.status != 200) return "status " + std::to_string(response.status);
  return response.body;
}

}  // namespace

TEST_CASE("metrics are exposed in the Prometheus text format 0.0.4", "[agent]") {
  Metrics metrics;
  metrics.counter("solver_things_total", "Things done.").add(3);
  metrics.counter("solver_failed_total", "Failures, by fault.", {{"fault", "task"}}).add();
  metrics.counter("solver_failed_total", "Failures, by fault.", {{"fault", "worker"}});
  metrics.gauge("solver_odd", "A help text with a \\ and a\nnewline.", {{"path", "a\"b\\c\nd"}}).set(-0.5);
  Metrics::Histogram seconds = metrics.histogram("solver_write_seconds", "Write times.", {0.1, 1});
  seconds.observe(0.05);
  seconds.observe(0.1);  // le is inclusive
  seconds.observe(0.5);
  seconds.observe(30);

  CHECK(metrics.exposition() ==
        "# HELP solver_failed_total Failures, by fault.\n"
        "# TYPE solver_failed_total counter\n"
        "solver_failed_total{fault=\"task\"} 1\n"
        "solver_failed_total{fault=\"worker\"} 0\n"
        "# HELP solver_odd A help text with a \\\\ and a\\nnewline.\n"
        "# TYPE solver_odd gauge\n"
        "solver_odd{path=\"a\\\"b\\\\c\\nd\"} -0.5\n"
        "# HELP solver_things_total Things done.\n"
        "# TYPE solver_things_total counter\n"
        "solver_things_total 3\n"
        "# HELP solver_write_seconds Write times.\n"
        "# TYPE solver_write_seconds histogram\n"
        "solver_write_seconds_bucket{le=\"0.1\"} 2\n"
        "solver_write_seconds_bucket{le=\"1\"} 3\n"
        "solver_write_seconds_bucket{le=\"+Inf\"} 4\n"
        "solver_write_seconds_sum 30.65\n"
        "solver_write_seconds_count 4\n");
  CHECK(metric_value_text(1.0 / 0.0) == "+Inf");
  CHECK(metric_value_text(0.0 / 0.0) == "NaN");
}

TEST_CASE("the metrics registry refuses names Prometheus would not accept and a name used twice as two types", "[agent]") {
  Metrics metrics;
  CHECK_THROWS_AS(metrics.counter("solver-bad", "x"), Error);
  CHECK_THROWS_AS(metrics.counter("solver_ok_total", "x", {{"le", "1"}}), Error);
  CHECK_THROWS_AS(metrics.histogram("solver_h_seconds", "x", {1, 0.5}), Error);
  metrics.counter("solver_twice", "x");
  CHECK_THROWS_AS(metrics.gauge("solver_twice", "x"), Error);
  metrics.counter("solver_twice", "x").add(2);
  CHECK(metrics.counter("solver_twice", "x").value() == 2);  // the same series again, not a new one
}

TEST_CASE("the metrics endpoint serves GET /metrics on 127.0.0.1 and nothing else", "[agent]") {
  Metrics metrics;
  metrics.counter("solver_things_total", "Things done.").add(7);
  const MetricsServer server(metrics, 0);
  CHECK(sample(scrape(server.port()), "solver_things_total") == 7);
  CHECK(scrape(server.port(), "/") == "status 404");
  CHECK(scrape(server.port(), "/metrics", "POST") == "status 405");
  // The port is taken now: a second endpoint on it is a configuration error that names it.
  try {
    const MetricsServer second(metrics, server.port());
    FAIL("a second endpoint bound a port in use");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Config);
    CHECK_THAT(error.what(), Catch::Contains("metrics.port " + std::to_string(server.port())));
  }
}

TEST_CASE("GPU metrics come from NVML at each scrape and are labelled by GPU UUID", "[agent]") {
  Metrics metrics;
  add_gpu_collector(metrics, SOLVER_FAKE_NVML);
  const std::string text = metrics.exposition();
  const std::string gpu0 = "{gpu=\"0\",uuid=\"GPU-11111111-2222-3333-4444-555555555555\",name=\"NVIDIA H100 80GB HBM3\"}";
  const std::string gpu1 = "{gpu=\"1\",uuid=\"GPU-66666666-7777-8888-9999-000000000000\",name=\"NVIDIA H100 80GB HBM3\"}";
  CHECK(sample(text, "solver_gpu_temperature_celsius" + gpu0) == 41);
  CHECK(sample(text, "solver_gpu_power_limit_watts" + gpu0) == 700);
  CHECK(sample(text, "solver_gpu_memory_total_bytes" + gpu0) == 85899345920.0);
  CHECK(sample(text, "solver_gpu_memory_used_bytes" + gpu0) == 1073741824.0);
  CHECK(sample(text, "solver_gpu_throttle_reasons" + gpu0) == 5);
  CHECK(sample(text, "solver_gpu_power_watts" + gpu0) == 412.345);
  CHECK(sample(text, "solver_gpu_utilization_ratio" + gpu0) == 0.87);
  CHECK(sample(text, "solver_gpu_memory_utilization_ratio" + gpu0) == 0.35);
  CHECK(sample(text, "solver_gpu_memory_free_bytes" + gpu0) == 85899345920.0 - 1073741824.0);
  CHECK(sample(text, "solver_gpu_ecc_enabled" + gpu0) == 1);
  CHECK(sample(text, "solver_gpu_ecc_uncorrected_errors" + gpu0) == 2);
  // GPU 1 answers no temperature and no power limit: those series are absent, its memory is not.
  CHECK(sample(text, "solver_gpu_temperature_celsius" + gpu1) == -1);
  CHECK(sample(text, "solver_gpu_power_limit_watts" + gpu1) == -1);
  CHECK(sample(text, "solver_gpu_memory_total_bytes" + gpu1) == 85899345920.0);
  // Nor has it ECC: no ECC series claims anything about it.
  CHECK(sample(text, "solver_gpu_ecc_enabled" + gpu1) == -1);
  CHECK(sample(text, "solver_gpu_ecc_uncorrected_errors" + gpu1) == -1);

  Metrics without;
  add_gpu_collector(without, "/nonexistent/libnvidia-ml.so.1");
  CHECK(without.exposition().find("solver_gpu_") == std::string::npos);
}

TEST_CASE("every GPU figure is a gauge in base units that passes promtool check metrics, and a GPU gone leaves none", "[agent]") {
  hardware::GpuInfo gpu;
  gpu.index = 3;
  gpu.name = "NVIDIA H200";
  gpu.uuid = "GPU-abcdef01-2345-6789-abcd-ef0123456789";
  gpu.memory_total_bytes = 150'000'000'000;
  gpu.memory_used_bytes = 100'000'000'000;
  gpu.memory_free_bytes = 50'000'000'000;
  gpu.pcie_generation = 5;
  gpu.pcie_width = 16;
  gpu.pcie_max_generation = 5;
  gpu.pcie_max_width = 16;
  gpu.power_limit_watts = 700;
  gpu.power_draw_watts = 512.25;
  gpu.temperature_c = 63;
  gpu.throttle_reasons = 0x4;
  gpu.utilization_gpu_percent = 97;
  gpu.utilization_memory_percent = 41;
  gpu.ecc_enabled = true;
  gpu.ecc_uncorrected_errors = 1;
  Metrics metrics;
  set_gpu_gauges(metrics, {gpu});
  const std::string text = metrics.exposition();

  test::ScratchDir dir("metrics-gpu");
  write_file_durably(dir.path() / "gpu.txt", text);
  const test::CommandResult promtool =
      test::run_command({"/bin/sh", "-c", "/usr/bin/promtool check metrics < '" + (dir.path() / "gpu.txt").string() + "'"});
  INFO(text);
  INFO(promtool.output);
  CHECK(promtool.exit_code == 0);
  const std::string labels = "{gpu=\"3\",uuid=\"GPU-abcdef01-2345-6789-abcd-ef0123456789\",name=\"NVIDIA H200\"}";
  CHECK(sample(text, "solver_gpu_temperature_celsius" + labels) == 63);
  CHECK(sample(text, "solver_gpu_power_watts" + labels) == 512.25);
  CHECK(sample(text, "solver_gpu_power_limit_watts" + labels) == 700);
  CHECK(sample(text, "solver_gpu_utilization_ratio" + labels) == 0.97);
  CHECK(sample(text, "solver_gpu_memory_utilization_ratio" + labels) == 0.41);
  CHECK(sample(text, "solver_gpu_memory_used_bytes" + labels) == 100e9);
  CHECK(sample(text, "solver_gpu_memory_free_bytes" + labels) == 50e9);
  CHECK(sample(text, "solver_gpu_memory_total_bytes" + labels) == 150e9);
  CHECK(sample(text, "solver_gpu_throttle_reasons" + labels) == 4);
  CHECK(sample(text, "solver_gpu_ecc_enabled" + labels) == 1);
  CHECK(sample(text, "solver_gpu_ecc_uncorrected_errors" + labels) == 1);
  CHECK_THAT(text, Catch::Contains("# TYPE solver_gpu_power_watts gauge\n"));

  set_gpu_gauges(metrics, {});
  CHECK(metrics.exposition().find("solver_gpu_") == std::string::npos);
}

TEST_CASE("a scrape after a task job trained passes promtool check metrics and shows the work done", "[agent][torch]") {
  test::Rig rig("metrics-scrape");
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  const MetricsServer endpoint(rig.status.metrics(), 0);
  const json task = test::small_task(1);
  REQUIRE(TaskJob::claim(rig.lease(task), rig.tasks_dir(), rig.settings, services, SlotPlace{.index = 0, .device = "cpu"}).run());

  const std::string text = scrape(endpoint.port());
  write_file_durably(rig.dir / "scrape.txt", text);
  const test::CommandResult promtool =
      test::run_command({"/bin/sh", "-c", "/usr/bin/promtool check metrics < '" + (rig.dir / "scrape.txt").string() + "'"});
  INFO(text);
  INFO(promtool.output);
  CHECK(promtool.exit_code == 0);
  CHECK(sample(text, "solver_tasks_claimed_total") == 1);
  CHECK(sample(text, "solver_tasks_completed_total") == 1);
  CHECK(sample(text, "solver_tasks_failed_total{fault=\"worker\"}") == 0);
  CHECK(sample(text, "solver_steps_trained_total") == 60);
  CHECK(sample(text, "solver_samples_trained_total") == 60 * task["training"]["batch_size"].get<double>());
  CHECK(sample(text, "solver_checkpoint_write_seconds_count") == 4);  // steps 0, 20, 40, 60
  CHECK(sample(text, "solver_publish_seconds_count") == 1);
  CHECK(sample(text, "solver_uploaded_bytes_total") > 0);
  CHECK(std::regex_search(text, std::regex("solver_build_info\\{version=\"[^\"]+\"\\} 1\n")));
}
