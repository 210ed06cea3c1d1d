// Host launchers for distance.cu. Plain C++17 with no CUDA types, so C++20 files can call
// them and distance.cu (CMake 3.25 compiles CUDA as C++17) can define them; distance.h,
// which needs std::span, stays out of the .cu. Every function throws Error(Cuda) naming the
// failed CUDA call, its file and line.
#pragma once

#include <cstddef>

#include "kernels/detail/distance_sums.h"

namespace solver::kernels {

// kDistanceLanes of distance.h, which this header cannot include (it needs C++20);
// distance_cuda.cpp checks at compile time that the two agree.
inline constexpr std::size_t kCudaDistanceLanes = std::size_t{1} << 14;

// Number of CUDA devices the runtime sees; 0 when there is no driver or no device (never throws).
int cuda_runtime_device_count();

// The sums of distance.h's lane order for n floats at device pointers a and b (device or
// managed memory; host pointers are refused before any launch). Blocks until done.
DistanceSums distance_sums_cuda(const float* a, const float* b, std::size_t n);

// n floats copied from host memory to a fresh device allocation, freed on destruction:
// lets tests and benchmarks that hold host weights call the device kernel.
class DeviceFloats {
 public:
  DeviceFloats(const float* host, std::size_t n);
  ~DeviceFloats();
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  const float* data() const { return device_; }
  std::size_t size() const { return size_; }

 private:
  float* device_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace solver::kernels
