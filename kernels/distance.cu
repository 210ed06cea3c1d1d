// Weight distance on the GPU: the five sums of detail/distance_sums.h over two float arrays
// a[N] and b[N] (N = element count), bit-identical to the CPU twin in distance_cpu.cpp.
//
// Shape: L = kDistanceLanes lanes (16384). Kernel 1 runs L threads; thread j is lane j and
// walks elements j, j+L, j+2L... in increasing order, so neighbouring threads read
// neighbouring floats (coalesced) and each lane's order is the twin's order. Kernel 2 is one
// block that reduces the L lanes by the twin's pairwise tree (lane i += lane i+h, h = L/2..1),
// level by level with a barrier between levels. The lane count is part of the result's
// definition, not a tuning knob: a different L would give different rounding. Every add and
// multiply is an explicit round-to-nearest intrinsic (and the target builds with
// --fmad=false) so nothing is contracted into an FMA the CPU does not do.
#include "kernels/distance.cuh"

#include <cuda_runtime.h>

#include <string>

#include "common/error.h"
#include "kernels/detail/cuda_support.cuh"

namespace solver::kernels {
namespace {

constexpr std::size_t kLanes = kCudaDistanceLanes;
constexpr unsigned kLaneThreadsPerBlock = 256;
constexpr unsigned kTreeThreads = 1024;

// Per-lane quantities, each a block of kLanes doubles (the twin's layout).
enum Quantity : std::size_t { kAbsDiff, kSquaredDiff, kDot, kASquared, kBSquared, kLinf, kQuantityCount };

__global__ void accumulate_lanes(const float* a, const float* b, std::size_t n, double* lanes) {
  const std::size_t lane = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane >= kLanes) return;
  double abs_diff = 0.0, squared_diff = 0.0, dot = 0.0, a_squared = 0.0, b_squared = 0.0, linf = 0.0;
  for (std::size_t i = lane; i < n; i += kLanes) {
    const double x = a[i];
    const double y = b[i];
    const double d = __dsub_rn(x, y);
    const double magnitude = fabs(d);
    abs_diff = __dadd_rn(abs_diff, magnitude);
    squared_diff = __dadd_rn(squared_diff, __dmul_rn(d, d));
    dot = __dadd_rn(dot, __dmul_rn(x, y));
    a_squared = __dadd_rn(a_squared, __dmul_rn(x, x));
    b_squared = __dadd_rn(b_squared, __dmul_rn(y, y));
    if (linf < magnitude) linf = magnitude;  // the twin's comparison: NaN never becomes the max
  }
  lanes[kAbsDiff * kLanes + lane] = abs_diff;
  lanes[kSquaredDiff * kLanes + lane] = squared_diff;
  lanes[kDot * kLanes + lane] = dot;
  lanes[kASquared * kLanes + lane] = a_squared;
  lanes[kBSquared * kLanes + lane] = b_squared;
  lanes[kLinf * kLanes + lane] = linf;
}

// One block: each tree level is finished by every thread before the next starts.
__global__ void reduce_lanes(double* lanes) {
  for (std::size_t half = kLanes / 2; half >= 1; half /= 2) {
    for (std::size_t lane = threadIdx.x; lane < half; lane += blockDim.x) {
      for (std::size_t quantity = kAbsDiff; quantity < kLinf; ++quantity) {
        double* sums = lanes + quantity * kLanes;
        sums[lane] = __dadd_rn(sums[lane], sums[lane + half]);
      }
      double* maxima = lanes + kLinf * kLanes;
      if (maxima[lane] < maxima[lane + half]) maxima[lane] = maxima[lane + half];
    }
    __syncthreads();
  }
}

void require_device_pointer(const void* pointer, const char* name) {
  cudaPointerAttributes attributes{};
  SOLVER_CUDA_CHECK(cudaPointerGetAttributes(&attributes, pointer));
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
    throw Error(ErrorKind::Cuda, std::string("weight_distance_cuda: ") + name +
                                     " must point to device or managed memory (a host pointer would fault the kernel)");
}

class DeviceLanes {
 public:
  DeviceLanes() { SOLVER_CUDA_CHECK(cudaMalloc(&lanes_, kQuantityCount * kLanes * sizeof(double))); }
  ~DeviceLanes() { cudaFree(lanes_); }
  DeviceLanes(const DeviceLanes&) = delete;
  DeviceLanes& operator=(const DeviceLanes&) = delete;
  double* get() const { return lanes_; }

 private:
  double* lanes_ = nullptr;
};

}  // namespace

int cuda_runtime_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls do not report it
    return 0;
  }
  return count;
}

DistanceSums distance_sums_cuda(const float* a, const float* b, std::size_t n) {
  DistanceSums sums;
  if (n == 0) return sums;  // the twin's result for no elements: all sums zero
  if (a == nullptr || b == nullptr)
    throw Error(ErrorKind::Cuda, "weight_distance_cuda: a and b must be device pointers, got null for " +
                                     std::to_string(n) + " elements");
  require_device_pointer(a, "a");
  require_device_pointer(b, "b");

  DeviceLanes lanes;
  accumulate_lanes<<<kLanes / kLaneThreadsPerBlock, kLaneThreadsPerBlock>>>(a, b, n, lanes.get());
  SOLVER_CUDA_CHECK(cudaGetLastError());
  reduce_lanes<<<1, kTreeThreads>>>(lanes.get());
  SOLVER_CUDA_CHECK(cudaGetLastError());

  double totals[kQuantityCount];
  for (std::size_t quantity = 0; quantity < kQuantityCount; ++quantity)
    SOLVER_CUDA_CHECK(cudaMemcpy(&totals[quantity], lanes.get() + quantity * kLanes, sizeof(double),
                                 cudaMemcpyDeviceToHost));
  sums.abs_diff = totals[kAbsDiff];
  sums.squared_diff = totals[kSquaredDiff];
  sums.dot = totals[kDot];
  sums.a_squared = totals[kASquared];
  sums.b_squared = totals[kBSquared];
  sums.linf = totals[kLinf];
  return sums;
}

DeviceFloats::DeviceFloats(const float* host, std::size_t n) : size_(n) {
  SOLVER_CUDA_CHECK(cudaMalloc(&device_, n * sizeof(float)));
  try {
    SOLVER_CUDA_CHECK(cudaMemcpy(device_, host, n * sizeof(float), cudaMemcpyHostToDevice));
  } catch (...) {
    cudaFree(device_);  // the destructor does not run for a constructor that throws
    throw;
  }
}

DeviceFloats::~DeviceFloats() { cudaFree(device_); }

}  // namespace solver::kernels
