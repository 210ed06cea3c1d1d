#include "hardware/datasheet_peaks.h"

#include <array>

namespace solver::hardware {
namespace {

struct NamedPeaks {
  std::string_view nvml_name;
  DatasheetPeaks peaks;
};

// NVIDIA datasheets: H100 and H200 (Hopper), A100 (Ampere), L40S (Ada); the Ampere GA102 and
// Ada Lovelace whitepapers for the GeForce cards, where FP16 and BF16 with FP32 accumulate run
// at half the FP16-accumulate rate (the datasheets' larger FP16 figure). Datasheets quote TF32,
// FP16 and BF16 "with sparsity" for Hopper and Ada: the dense figures are half of those.
// A100 bandwidth differs by memory size and form factor.
//                                                  model              fp32   tf32   fp16     bf16     memory
constexpr std::array kPeaks{
    NamedPeaks{"NVIDIA H100 80GB HBM3", {"H100 SXM5 80GB", 67.0, 494.5, 989.0, 989.0, 3.35}},
    NamedPeaks{"NVIDIA H100 PCIe", {"H100 PCIe 80GB", 51.0, 378.0, 756.0, 756.0, 2.0}},
    NamedPeaks{"NVIDIA H200", {"H200 SXM 141GB", 67.0, 494.5, 989.0, 989.0, 4.8}},
    NamedPeaks{"NVIDIA A100-SXM4-80GB", {"A100 SXM4 80GB", 19.5, 156.0, 312.0, 312.0, 2.039}},
    NamedPeaks{"NVIDIA A100-SXM4-40GB", {"A100 SXM4 40GB", 19.5, 156.0, 312.0, 312.0, 1.555}},
    NamedPeaks{"NVIDIA A100 80GB PCIe", {"A100 PCIe 80GB", 19.5, 156.0, 312.0, 312.0, 1.935}},
    NamedPeaks{"NVIDIA A100-PCIE-40GB", {"A100 PCIe 40GB", 19.5, 156.0, 312.0, 312.0, 1.555}},
    NamedPeaks{"NVIDIA L40S", {"L40S", 91.6, 183.0, 362.05, 362.05, 0.864}},
    NamedPeaks{"NVIDIA GeForce RTX 4090", {"GeForce RTX 4090", 82.6, 82.6, 165.2, 165.2, 1.008}},
    NamedPeaks{"NVIDIA GeForce RTX 3090", {"GeForce RTX 3090", 35.6, 35.6, 71.0, 71.0, 0.936}},
};

}  // namespace

std::optional<DatasheetPeaks> datasheet_peaks(std::string_view nvml_name) {
  for (const NamedPeaks& entry : kPeaks)
    if (entry.nvml_name == nvml_name) return entry.peaks;
  return std::nullopt;
}

std::optional<double> pcie_peak_gb_per_s(unsigned generation, unsigned width) {
  // Transfer rate per lane in GT/s and the encoding's payload share.
  constexpr std::array<double, 5> kGigatransfers{2.5, 5.0, 8.0, 16.0, 32.0};
  if (generation < 1 || generation > kGigatransfers.size() || width == 0) return std::nullopt;
  const double payload = generation <= 2 ? 8.0 / 10.0 : 128.0 / 130.0;
  return kGigatransfers[generation - 1] * payload / 8.0 * width;
}

}  // namespace solver::hardware
