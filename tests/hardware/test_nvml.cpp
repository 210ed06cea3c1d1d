// The NVML loader and the datasheet table: a machine without NVML gets a clean report with 0
// GPUs; a (fake) NVML is read field by field, unsupported queries staying empty; peaks match
// exact GPU names only.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/files.h"
#include "hardware/datasheet_peaks.h"
#include "hardware/nvml.h"
#include "kernels/cuda_device.h"
#include "tests/kernels/gpu_guard.h"
#include "tests/test_support.h"

using namespace solver::hardware;

TEST_CASE("Without NVML the inventory says why and lists no GPU, without throwing", "[hardware]") {
  const GpuInventory inventory = read_gpu_inventory("libnvidia-ml-absent-for-this-test.so.1");
  CHECK(inventory.gpus.empty());
  CHECK(inventory.unavailable_reason.starts_with("no NVIDIA driver (NVML not found"));
  CHECK(inventory.unavailable_reason.find("libnvidia-ml-absent-for-this-test.so.1") != std::string::npos);
}

TEST_CASE("A library without NVML's entry points is reported, not called", "[hardware]") {
  const GpuInventory inventory = read_gpu_inventory("libz.so.1");
  CHECK(inventory.gpus.empty());
  CHECK(inventory.unavailable_reason.find("lacks NVML's v2 entry points") != std::string::npos);
}

TEST_CASE("The loader reads every GPU's fields from NVML and leaves unsupported ones empty", "[hardware]") {
  const GpuInventory inventory = read_gpu_inventory(SOLVER_FAKE_NVML);
  INFO(inventory.unavailable_reason);
  REQUIRE(inventory.unavailable_reason.empty());
  CHECK(inventory.driver_version == "550.54.15");
  CHECK(inventory.cuda_driver_version == "12.4");
  REQUIRE(inventory.gpus.size() == 2);

  const GpuInfo& first = inventory.gpus[0];
  CHECK(first.index == 0);
  CHECK(first.name == "NVIDIA H100 80GB HBM3");
  CHECK(first.uuid == "GPU-11111111-2222-3333-4444-555555555555");
  CHECK(first.memory_total_bytes == 85899345920ull);
  CHECK(first.memory_used_bytes == 1073741824ull);
  CHECK(first.memory_free_bytes == 85899345920ull - 1073741824ull);
  CHECK(first.pcie_generation == 5u);
  CHECK(first.pcie_width == 16u);
  CHECK(first.pcie_max_generation == 5u);
  CHECK(first.pcie_max_width == 16u);
  CHECK(first.power_limit_watts == 700.0);
  CHECK(first.power_draw_watts == 412.345);
  CHECK(first.temperature_c == 41);
  CHECK(first.utilization_gpu_percent == 87u);
  CHECK(first.utilization_memory_percent == 35u);
  CHECK(first.ecc_enabled == true);
  CHECK(first.ecc_uncorrected_errors == 2u);  // the uncorrected volatile counter, not the corrected or aggregate ones
  REQUIRE(first.throttle_reasons.has_value());  // through the pre-535 symbol: the only one the fake exports
  CHECK(throttle_reason_names(*first.throttle_reasons) == std::vector<std::string>{"gpu_idle", "sw_power_cap"});
  CHECK(first.process_ids == std::vector<unsigned>{});  // listed, and none running
  CHECK(first.memory_repair_pending == false);  // from its remapped rows (Ampere and later)
  CHECK(first.row_remap_failed == false);

  const GpuInfo& second = inventory.gpus[1];
  CHECK(second.index == 1);
  CHECK(second.uuid == "GPU-66666666-7777-8888-9999-000000000000");
  CHECK(second.pcie_generation == 1u);  // an idle GPU's downshifted link
  CHECK_FALSE(second.power_limit_watts.has_value());
  CHECK_FALSE(second.temperature_c.has_value());
  CHECK_FALSE(second.power_draw_watts.has_value());
  CHECK_FALSE(second.ecc_enabled.has_value());  // a GPU without ECC claims nothing about it
  CHECK_FALSE(second.ecc_uncorrected_errors.has_value());
  CHECK(second.throttle_reasons == 0u);
  CHECK_FALSE(second.process_ids.has_value());  // a GPU that cannot list its processes claims none
  CHECK(second.memory_repair_pending == false);  // from its retired pages (before Ampere)
  CHECK_FALSE(second.row_remap_failed.has_value());
}

TEST_CASE("The loader reads failing memory waiting for a GPU reset, and rows that could not be remapped", "[hardware]") {
  solver::test::ScratchDir dir("nvml-memory-repair");
  solver::write_file_durably(dir / "state", "row_remap_pending 1\nrow_remap_failed 1\n");
  ::setenv("SOLVER_FAKE_NVML_STATE", (dir / "state").c_str(), 1);
  const GpuInventory inventory = read_gpu_inventory(SOLVER_FAKE_NVML);
  ::unsetenv("SOLVER_FAKE_NVML_STATE");
  REQUIRE(inventory.gpus.size() == 2);
  CHECK(inventory.gpus[0].memory_repair_pending == true);
  CHECK(inventory.gpus[0].row_remap_failed == true);
  CHECK(inventory.gpus[1].memory_repair_pending == false);
}

TEST_CASE("The loader lists a GPU's compute and graphics processes, each once, past NVML's first buffer", "[hardware]") {
  solver::test::ScratchDir dir("nvml-processes");
  std::vector<unsigned> compute;
  for (unsigned pid = 1000; pid < 1040; ++pid) compute.push_back(pid);  // more than the loader's first buffer holds
  std::string state = "processes";
  for (const unsigned pid : compute) state.append(" ").append(std::to_string(pid));
  state += "\ngraphics_processes 1003 77\n";
  solver::write_file_durably(dir / "state", state);
  ::setenv("SOLVER_FAKE_NVML_STATE", (dir / "state").c_str(), 1);
  const GpuInventory inventory = read_gpu_inventory(SOLVER_FAKE_NVML);
  ::unsetenv("SOLVER_FAKE_NVML_STATE");
  REQUIRE(inventory.gpus.size() == 2);
  std::vector<unsigned> expected = compute;
  expected.insert(expected.begin(), 77);
  CHECK(inventory.gpus[0].process_ids == expected);
}

TEST_CASE("Throttle reasons are named by bit, unknown bits in hex", "[hardware]") {
  CHECK(throttle_reason_names(0).empty());
  CHECK(throttle_reason_names(0x40 | 0x20) == std::vector<std::string>{"sw_thermal_slowdown", "hw_thermal_slowdown"});
  CHECK(throttle_reason_names(0x8 | 0x400) == std::vector<std::string>{"hw_slowdown", "0x400"});
}

TEST_CASE("Datasheet peaks belong to exact NVML names only", "[hardware]") {
  const auto h100 = datasheet_peaks("NVIDIA H100 80GB HBM3");
  REQUIRE(h100.has_value());
  CHECK(h100->bf16_dense_tflops == 989.0);
  CHECK(h100->memory_tb_per_s == 3.35);
  const auto h200 = datasheet_peaks("NVIDIA H200");
  REQUIRE(h200.has_value());
  CHECK(h200->bf16_dense_tflops == 989.0);
  CHECK(h200->memory_tb_per_s == 4.8);
  CHECK(datasheet_peaks("NVIDIA A100-SXM4-80GB")->bf16_dense_tflops == 312.0);
  // Variants with other peaks must not borrow the base model's.
  CHECK_FALSE(datasheet_peaks("NVIDIA GeForce RTX 3090 Ti").has_value());
  CHECK_FALSE(datasheet_peaks("NVIDIA H200 NVL").has_value());
  CHECK_FALSE(datasheet_peaks("").has_value());
}

TEST_CASE("Datasheet tensor-core peaks are dense with FP32 accumulate, so fp32 <= tf32 < fp16 == bf16", "[hardware]") {
  // Sparsity figures are twice the dense ones, and GeForce FP16 with FP16 accumulate twice
  // the FP32-accumulate rate that cuBLAS uses: quoting either would break these checks.
  CHECK(datasheet_peaks("NVIDIA H100 80GB HBM3")->tf32_dense_tflops == 494.5);
  CHECK(datasheet_peaks("NVIDIA A100-SXM4-80GB")->tf32_dense_tflops == 156.0);
  CHECK(datasheet_peaks("NVIDIA GeForce RTX 4090")->fp16_dense_tflops == 165.2);
  for (const char* name : {"NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB",
                           "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-40GB", "NVIDIA L40S", "NVIDIA GeForce RTX 4090",
                           "NVIDIA GeForce RTX 3090"}) {
    INFO(name);
    const auto peaks = datasheet_peaks(name);
    REQUIRE(peaks.has_value());
    CHECK(peaks->fp32_tflops <= peaks->tf32_dense_tflops);
    CHECK(peaks->tf32_dense_tflops < peaks->fp16_dense_tflops);
    CHECK(peaks->fp16_dense_tflops == peaks->bf16_dense_tflops);
  }
}

TEST_CASE("PCIe peaks follow the specification's rates and encodings", "[hardware]") {
  CHECK(std::abs(*pcie_peak_gb_per_s(5, 16) - 63.015) < 0.001);
  CHECK(std::abs(*pcie_peak_gb_per_s(4, 16) - 31.508) < 0.001);
  CHECK(std::abs(*pcie_peak_gb_per_s(3, 8) - 7.877) < 0.001);
  CHECK(*pcie_peak_gb_per_s(2, 1) == 0.5);
  CHECK_FALSE(pcie_peak_gb_per_s(0, 16).has_value());
  CHECK_FALSE(pcie_peak_gb_per_s(6, 16).has_value());
  CHECK_FALSE(pcie_peak_gb_per_s(4, 0).has_value());
}

TEST_CASE("Each CUDA device finds its own NVML figures by UUID", "[hardware][gpu]") {
  if (solver::test::no_gpu_here()) return;
  const GpuInventory inventory = read_gpu_inventory();
  REQUIRE(inventory.unavailable_reason.empty());
  const int devices = solver::kernels::cuda_device_count();
  for (int device = 0; device < devices; ++device) {
    const solver::kernels::CudaDeviceProperties properties = solver::kernels::cuda_device_properties(device);
    const GpuInfo* gpu = gpu_of_cuda_device(inventory, device);
    REQUIRE(gpu != nullptr);
    CHECK(gpu->uuid == properties.uuid);
    CHECK(gpu->name == properties.name);
  }
  CHECK(gpu_of_cuda_device(inventory, devices) == nullptr);
}
