// `solver bench` end to end: quick mode keeps its time promise and prints valid JSON whose
// figures are positive and finite; without NVML the GPU section is a clean "0 GPUs"; a GPU
// that is not there is exit status 69. Speeds are not asserted, only the quick-mode promise
// (30 s on 2 cores), checked loosely because other tests may share the cores.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>

#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

namespace {

void check_positive_finite(const json& figure, const std::string& name) {
  INFO(name << " = " << figure.dump());
  REQUIRE(figure.is_number());
  const double value = figure.get<double>();
  CHECK(std::isfinite(value));
  CHECK(value > 0.0);
}

}  // namespace

TEST_CASE("solver bench --quick --json measures the host in time and prints positive figures", "[e2e]") {
  ScratchDir dir("bench");
  ScratchDir saved("bench-saved");
  const auto started = std::chrono::steady_clock::now();
  const CommandResult result =
      run_solver({"-q", "bench", "--quick", "--json", "--dir", dir.path().string(), "--save", (saved / "bench.json").string()});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  REQUIRE(result.exit_code == 0);
  CHECK(seconds < 60.0);

  const json report = json::parse(result.output);
  CHECK(report["mode"] == "quick");
  CHECK(read_json(saved / "bench.json") == report);  // --save keeps what was printed, for the agent
  for (const char* name : {"matmul_fp32_gflops", "matmul_flop_per_product", "memory_copy_gb_per_s", "memory_triad_gb_per_s", "sha256_gb_per_s"})
    check_positive_finite(report["cpu"][name], name);
  CHECK(report["cpu"]["matmul_flop_per_product"] == 2.0 * std::pow(report["cpu"]["matmul_n"].get<double>(), 3));
  CHECK(report["cpu"]["matmul_peak_gflops"].is_null());
  check_positive_finite(report["disk"]["write_fsync_gb_per_s"], "disk write");
  CHECK(report["disk"]["dir"] == dir.path().string());
  check_positive_finite(report["training"]["samples_per_s"], "training");
  CHECK(report["training"]["task_id"] == "fashion-mnist-mlp");
  CHECK(std::filesystem::is_empty(dir.path()));  // the disk test's file is gone

  CHECK(report["gpu_count"] == report["gpus"].size());
  if (!report["nvml"]["available"].get<bool>()) {
    CHECK(report["gpu_count"] == 0);
    CHECK(report["nvml"]["unavailable_reason"].get<std::string>().starts_with("no NVIDIA driver (NVML not found"));
  }
  if (report["cuda_device_count"] == 0) CHECK(report["gpu_benchmark"]["skipped_reason"].get<std::string>().starts_with("no CUDA device"));
}

TEST_CASE("solver bench's table says when there is no GPU, and a missing GPU is exit status 69", "[e2e]") {
  ScratchDir dir("bench-table");
  const CommandResult version = run_solver({"version", "--json"});
  REQUIRE(version.exit_code == 0);
  if (json::parse(version.output)["cuda_devices"] != 0) return;  // a GPU machine: the case below does not apply

  const CommandResult table = run_solver({"bench", "--quick", "--dir", dir.path().string()});
  REQUIRE(table.exit_code == 0);
  CHECK(table.output.find("matmul fp32 (CPU)") != std::string::npos);
  CHECK(table.output.find("GPU measurements: skipped: no CUDA device") != std::string::npos);

  const CommandResult gpu = run_solver({"bench", "--quick", "--device", "cuda:0", "--dir", dir.path().string()});
  CHECK(gpu.exit_code == 69);
  CHECK(gpu.output.find("CUDA is unavailable") != std::string::npos);
}
