// The doctor's verdicts on a GPU from what NVML read of it (agent/doctor.h gpu_health_checks):
// the reading itself needs a GPU, the judgement does not, so each case feeds a GpuInfo.
#include <catch2/catch.hpp>

#include <algorithm>

#include "agent/doctor.h"

using namespace solver;
using namespace solver::agent;

namespace {

// A data-centre GPU at work and in good health: ECC on, no errors, cool, unthrottled.
hardware::GpuInfo healthy_gpu() {
  hardware::GpuInfo gpu;
  gpu.index = 1;
  gpu.name = "NVIDIA H100 80GB HBM3";
  gpu.uuid = "GPU-66666666-7777-8888-9999-000000000000";
  gpu.memory_total_bytes = 80'000'000'000;
  gpu.memory_used_bytes = 20'000'000'000;
  gpu.memory_free_bytes = 60'000'000'000;
  gpu.temperature_c = 55;
  gpu.power_draw_watts = 412.4;
  gpu.throttle_reasons = 0;
  gpu.ecc_enabled = true;
  gpu.ecc_uncorrected_errors = 0;
  return gpu;
}

Check row(const std::vector<Check>& rows, const std::string& name) {
  const auto found = std::find_if(rows.begin(), rows.end(), [&](const Check& check) { return check.name == name; });
  INFO(name);
  REQUIRE(found != rows.end());
  return *found;
}

}  // namespace

TEST_CASE("a healthy GPU with ECC on is OK on health and ECC, its free memory and power in the detail", "[agent]") {
  const std::vector<Check> rows = gpu_health_checks("cuda:0", healthy_gpu());
  REQUIRE(rows.size() == 2);
  const Check& health = row(rows, "health cuda:0");
  CHECK(health.area == "gpu");
  CHECK(health.status == CheckStatus::Ok);
  CHECK(health.detail ==
        "NVIDIA H100 80GB HBM3 GPU-66666666-7777-8888-9999-000000000000: 60.0 of 80.0 GB free, 55 °C, drawing 412 W");
  const Check& ecc = row(rows, "ecc cuda:0");
  CHECK(ecc.status == CheckStatus::Ok);
  CHECK(ecc.detail == "on, no uncorrected errors since the driver loaded");
  CHECK(ecc.fix.empty());
}

TEST_CASE("uncorrected ECC errors since the driver loaded FAIL the GPU, with what to do", "[agent]") {
  hardware::GpuInfo gpu = healthy_gpu();
  gpu.ecc_uncorrected_errors = 3;
  const Check ecc = row(gpu_health_checks("cuda:0", gpu), "ecc cuda:0");
  CHECK(ecc.status == CheckStatus::Fail);
  CHECK(ecc.detail ==
        "3 uncorrected ECC error(s) in GPU-66666666-7777-8888-9999-000000000000's memory since the driver loaded");
  CHECK(ecc.fix == "reset the GPU or reboot; if it recurs the memory is failing — take this GPU out of devices");
}

TEST_CASE("ECC turned off on a GPU that has it is a WARN naming the nvidia-smi command for that GPU", "[agent]") {
  hardware::GpuInfo gpu = healthy_gpu();
  gpu.ecc_enabled = false;
  gpu.ecc_uncorrected_errors.reset();  // NVML counts nothing with ECC off
  const Check ecc = row(gpu_health_checks("cuda:0", gpu), "ecc cuda:0");
  CHECK(ecc.status == CheckStatus::Warn);
  CHECK_THAT(ecc.detail, Catch::StartsWith("ECC off"));
  CHECK(ecc.fix == "turn ECC on: sudo nvidia-smi -i 1 -e 1, then reboot");  // NVML's index, which nvidia-smi uses
}

TEST_CASE("a GPU without ECC (GeForce) is OK on ECC and says it is not supported, claiming nothing", "[agent]") {
  hardware::GpuInfo gpu = healthy_gpu();
  gpu.ecc_enabled.reset();
  gpu.ecc_uncorrected_errors.reset();
  const Check ecc = row(gpu_health_checks("cuda:0", gpu), "ecc cuda:0");
  CHECK(ecc.status == CheckStatus::Ok);
  CHECK_THAT(ecc.detail, Catch::StartsWith("not supported"));
}

TEST_CASE("ECC on with no error count from NVML is OK and says the count is missing", "[agent]") {
  hardware::GpuInfo gpu = healthy_gpu();
  gpu.ecc_uncorrected_errors.reset();
  const Check ecc = row(gpu_health_checks("cuda:0", gpu), "ecc cuda:0");
  CHECK(ecc.status == CheckStatus::Ok);
  CHECK(ecc.detail == "on (NVML did not report its error count)");
}

TEST_CASE("a hot GPU or one throttled for heat or power is a WARN, idling is not", "[agent]") {
  hardware::GpuInfo hot = healthy_gpu();
  hot.temperature_c = 90;
  const Check hot_row = row(gpu_health_checks("cuda:0", hot), "health cuda:0");
  CHECK(hot_row.status == CheckStatus::Warn);
  CHECK_THAT(hot_row.detail, Catch::EndsWith("; 90 °C"));
  CHECK(hot_row.fix == "improve the rig's cooling or power before it trains for days");

  hardware::GpuInfo capped = healthy_gpu();
  capped.throttle_reasons = 0x4;  // SW power cap
  const Check capped_row = row(gpu_health_checks("cuda:0", capped), "health cuda:0");
  CHECK(capped_row.status == CheckStatus::Warn);
  CHECK_THAT(capped_row.detail, Catch::Contains("clocks throttled for heat or power (reasons 0x4)"));

  hardware::GpuInfo idle = healthy_gpu();
  idle.throttle_reasons = 0x1;  // GPU idle: clocks down because there is no work
  CHECK(row(gpu_health_checks("cuda:0", idle), "health cuda:0").status == CheckStatus::Ok);
}

TEST_CASE("failing memory waiting for a GPU reset, or rows that could not be remapped, FAIL the GPU's memory row",
          "[agent]") {
  hardware::GpuInfo gpu = healthy_gpu();
  gpu.memory_repair_pending = false;
  gpu.row_remap_failed = false;
  CHECK(row(gpu_health_checks("cuda:0", gpu), "memory cuda:0").status == CheckStatus::Ok);

  gpu.memory_repair_pending = true;
  const Check pending = row(gpu_health_checks("cuda:0", gpu), "memory cuda:0");
  CHECK(pending.status == CheckStatus::Fail);
  CHECK(pending.detail ==
        "cuda:0 has failing memory that is repaired (pages retired or rows remapped) only at the next GPU reset");
  CHECK(pending.fix == "reset the GPU (sudo nvidia-smi -r -i 1, with nothing running on it) or reboot");

  gpu.row_remap_failed = true;
  const Check failed = row(gpu_health_checks("cuda:0", gpu), "memory cuda:0");
  CHECK(failed.status == CheckStatus::Fail);
  CHECK_THAT(failed.detail, Catch::Contains("could not remap a failing memory row"));
  CHECK(failed.fix == "the GPU needs repair or replacing: take it out of devices");
}
