// Weight distance: l1, l2, linf and cosine between two weight sets in one pass.
// Used for the manifest's update distances and by `solver verify` to compare a replay with a
// claimed checkpoint. The reduction order is fixed (below) so that the result is the same
// bit for bit run to run, and the CUDA kernel reproduces the CPU twin exactly.
//
// Order: element g of the concatenated weights (g counts across all add() calls) goes to
// lane g % kDistanceLanes; each lane accumulates its elements in increasing g, in double,
// with no fused multiply-add; then lanes are summed by a pairwise tree (lane i += lane i+h
// for h = kDistanceLanes/2, /4, ..., 1). linf is a max, so its order does not matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace solver::kernels {

inline constexpr std::size_t kDistanceLanes = 1 << 14;

struct WeightDistance {
  double l1 = 0.0;      // sum |a - b|
  double l2 = 0.0;      // sqrt(sum (a - b)^2)
  double linf = 0.0;    // max |a - b|
  double cosine = 1.0;  // a.b / (|a| |b|); 1 when both are zero, 0 when only one is
};

// CPU twin: defines what the kernel computes. Feed tensors in a fixed order (the caller's
// order is part of the result's bits). Not thread-safe; one accumulator per comparison.
class DistanceAccumulator {
 public:
  DistanceAccumulator();
  void add(std::span<const float> a, std::span<const float> b);  // sizes must match
  WeightDistance finish() const;

 private:
  std::uint64_t next_index_ = 0;
  // Per lane: sum|d|, sum d^2, sum a*b, sum a^2, sum b^2.
  std::vector<double> lanes_;
  double linf_ = 0.0;
};

WeightDistance weight_distance_cpu(std::span<const float> a, std::span<const float> b);

// True when this build has CUDA kernels and a usable GPU driver with at least one device.
bool cuda_available();
// Number of CUDA devices the CUDA runtime sees; 0 without a driver or without CUDA in this
// build. What the kernels can use: a CPU-only LibTorch sees none of them, so training asks
// train::torch_cuda_device_count() instead.
int cuda_device_count();

// The CUDA kernel: a and b are device pointers to n floats. Blocks until done.
// Throws Error(Cuda) when CUDA is unavailable or a call fails.
WeightDistance weight_distance_cuda(const float* a, const float* b, std::size_t n);

}  // namespace solver::kernels
