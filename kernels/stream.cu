// STREAM's copy and triad on the GPU, reproducing the CPU twins of stream_cpu.cpp: the triad
// is a multiply rounded then an add rounded (__dmul_rn, __dadd_rn, and --fmad=false for
// the rest), so its result is the twin's bit for bit.
//
// Shape: a grid-stride loop, thread g handling elements g, g+G, g+2G... (G = all threads of
// one full wave). Each iteration moves one element per thread, so a warp reads and writes 32
// neighbouring doubles: coalesced 256-byte accesses, which is what lets a memory-bound kernel
// reach the DRAM bandwidth. One wave striding over the array keeps every SM streaming without
// the launch of millions of short-lived blocks, and works for any array size. The loop is
// counted and the pointers __restrict__ (the arrays never overlap), so the compiler can
// unroll it and issue the loads of several iterations before their stores: one load in flight
// per thread would not cover the latency of HBM at full bandwidth.
#include "kernels/stream.cuh"

#include <cuda_runtime.h>

#include <string>

#include "common/error.h"
#include "kernels/detail/cuda_support.cuh"

namespace solver::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
// Initial values as in hardware/host_benchmark.cpp; the triad leaves a = kB + kScalar * kC = 3.5 exactly.
constexpr double kA = 1.0, kB = 2.0, kC = 0.5, kScalar = 3.0;

__device__ std::size_t first_index() { return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ std::size_t grid_stride() { return static_cast<std::size_t>(gridDim.x) * blockDim.x; }

__global__ void fill_arrays(double* a, double* b, double* c, std::size_t count) {
  for (std::size_t i = first_index(); i < count; i += grid_stride()) {
    a[i] = kA;
    b[i] = kB;
    c[i] = kC;
  }
}

// How many elements this thread handles in a grid-stride loop over `count`: a counted loop,
// which the compiler can unroll without an exit test between the iterations.
__device__ std::size_t grid_stride_steps(std::size_t count) {
  const std::size_t first = first_index();
  return first < count ? (count - first + grid_stride() - 1) / grid_stride() : 0;
}

__global__ void stream_copy(double* __restrict__ a, const double* __restrict__ b, std::size_t count) {
  const std::size_t first = first_index(), stride = grid_stride(), steps = grid_stride_steps(count);
#pragma unroll 4
  for (std::size_t step = 0; step < steps; ++step) a[first + step * stride] = b[first + step * stride];
}

__global__ void stream_triad(double* __restrict__ a, const double* __restrict__ b, const double* __restrict__ c, double s,
                             std::size_t count) {
  const std::size_t first = first_index(), stride = grid_stride(), steps = grid_stride_steps(count);
#pragma unroll 4
  for (std::size_t step = 0; step < steps; ++step) {
    const std::size_t i = first + step * stride;
    a[i] = __dadd_rn(b[i], __dmul_rn(s, c[i]));
  }
}

// Launches `kernel` on `blocks` blocks of the current device; throws when the launch fails.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, unsigned blocks, Args... args) {
  kernel<<<blocks, kThreadsPerBlock>>>(args...);
  SOLVER_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

StreamBestSeconds stream_best_seconds_cuda(int device, std::size_t count, int repeats) {
  const ScopedDevice scoped_device(device);
  DeviceArray<double> a(count), b(count), c(count);
  // Computed before timing: a host call between an event and its kernel would idle the GPU in the timed span.
  const unsigned copy_blocks = full_wave_blocks(stream_copy, kThreadsPerBlock);
  const unsigned triad_blocks = full_wave_blocks(stream_triad, kThreadsPerBlock);
  launch(fill_arrays, full_wave_blocks(fill_arrays, kThreadsPerBlock), a.data(), b.data(), c.data(), count);
  // Untimed: the first launch of a kernel loads its module.
  launch(stream_copy, copy_blocks, a.data(), b.data(), count);
  launch(stream_triad, triad_blocks, a.data(), b.data(), c.data(), kScalar, count);

  CudaEvent start, end;
  const auto timed = [&](auto&& run_kernel) {
    start.record();
    run_kernel();
    end.record();
    end.synchronize();
    return end.seconds_since(start);
  };
  StreamBestSeconds best{1e300, 1e300};
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const double copy = timed([&] { launch(stream_copy, copy_blocks, a.data(), b.data(), count); });
    const double triad = timed([&] { launch(stream_triad, triad_blocks, a.data(), b.data(), c.data(), kScalar, count); });
    if (copy < best.copy) best.copy = copy;
    if (triad < best.triad) best.triad = triad;
  }

  // The check keeps the figures honest: a kernel that did not run would time as fast.
  double first = 0.0, last = 0.0;
  SOLVER_CUDA_CHECK(cudaMemcpy(&first, a.data(), sizeof first, cudaMemcpyDeviceToHost));
  SOLVER_CUDA_CHECK(cudaMemcpy(&last, a.data() + count - 1, sizeof last, cudaMemcpyDeviceToHost));
  if (first != kB + kScalar * kC || last != kB + kScalar * kC)
    throw Error(ErrorKind::Internal, "device STREAM triad on device " + std::to_string(device) + ": expected " +
                                         std::to_string(kB + kScalar * kC) + " in a, got " + std::to_string(first) +
                                         " first and " + std::to_string(last) + " last");
  return best;
}

void stream_triad_on_device(int device, double* a, const double* b, const double* c, double s, std::size_t count) {
  const ScopedDevice scoped_device(device);
  DeviceArray<double> device_a(count), device_b(count), device_c(count);
  device_b.copy_from_host(b);
  device_c.copy_from_host(c);
  launch(stream_triad, full_wave_blocks(stream_triad, kThreadsPerBlock), device_a.data(), device_b.data(), device_c.data(), s,
         count);
  device_a.copy_to_host(a);
}

}  // namespace solver::kernels
