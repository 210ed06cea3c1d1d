// Datasheet peaks of common NVIDIA GPUs, so `solver bench` can put a measured figure beside
// what the vendor promises. Only values copied from NVIDIA's datasheets and whitepapers, dense
// (never the "with sparsity" figures, which are twice the dense ones), at boost clocks.
// A GPU missing from the table has no peak: the report says "unknown" rather than guessing.
#pragma once

#include <optional>
#include <string_view>

namespace solver::hardware {

struct DatasheetPeaks {
  std::string_view model;         // the product as the datasheet names it ("H100 SXM5 80GB")
  double fp32_tflops = 0.0;       // plain FP32 (CUDA cores, no TF32)
  double tf32_dense_tflops = 0.0; // TF32 tensor cores, dense
  double fp16_dense_tflops = 0.0; // FP16 tensor cores, FP32 accumulate (cuBLAS's default), dense
  double bf16_dense_tflops = 0.0; // BF16 tensor cores, FP32 accumulate, dense
  double memory_tb_per_s = 0.0;   // device memory bandwidth, 1 TB = 1e12 bytes
};

// The peaks of the GPU whose NVML name (nvmlDeviceGetName) is exactly `nvml_name`; nullopt
// for any other name. Exact match on purpose: "RTX 3090 Ti" or "H200 NVL" have other peaks
// than "RTX 3090" or "H200", and a substring match would quietly lend them the wrong ones.
std::optional<DatasheetPeaks> datasheet_peaks(std::string_view nvml_name);

// The PCIe specification's data rate of a link, one direction, after line encoding
// (8b/10b to gen 2, 128b/130b from gen 3), in GB/s: gen 5 x16 = 63.0. nullopt for a
// generation outside 1 to 5 or a width of 0. Real copies reach about 80% of it at best.
std::optional<double> pcie_peak_gb_per_s(unsigned generation, unsigned width);

}  // namespace solver::hardware
