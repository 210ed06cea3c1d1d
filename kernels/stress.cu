// The stress kernel of stress.h on the GPU, reproducing the CPU twin of stress_cpu.cpp bit for
// bit: fmaf is one exactly rounded FFMA, the final sums are __fadd_rn, and the seeds come
// from the same function (detail/stress_seed.h).
//
// Shape: one full wave of threads (every SM at the occupancy the kernel allows), each
// running kStressChains independent chains interleaved, with the iteration loop unrolled so
// that loop bookkeeping takes few issue slots: the FP32 pipes see almost nothing but FFMA.
// The chains live in registers and touch memory only at the end, so the figure is the FMA
// throughput, not a memory one. Each thread checks its own value against the twin's table
// on the device, so a whole launch is checked without copying its values to the host.
#include "kernels/stress.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "kernels/detail/cuda_support.cuh"
#include "kernels/detail/stress_seed.h"

namespace solver::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
// Launches queued between two waits for the GPU: about this many seconds of work, so the
// host's wait adds little idle time and the run ends close to the requested seconds.
constexpr double kBatchSeconds = 0.05;

// expected == nullptr: values only (no check). Otherwise every thread compares its value
// with expected[thread % seed_count] bit for bit and counts a difference in *mismatches.
__global__ void stress_chains(std::size_t thread_count, int iterations, std::size_t seed_count, const float* expected,
                              float* values, unsigned long long* mismatches) {
  const std::size_t thread = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (thread >= thread_count) return;
  const std::size_t seed_thread = thread % seed_count;
  float chains[kStressChains];
#pragma unroll
  for (int chain = 0; chain < kStressChains; ++chain) chains[chain] = stress_seed(static_cast<std::uint32_t>(seed_thread), chain);
#pragma unroll 16
  for (int iteration = 0; iteration < iterations; ++iteration) {
#pragma unroll
    for (int chain = 0; chain < kStressChains; ++chain) chains[chain] = fmaf(chains[chain], chains[chain], kStressOffset);
  }
  float sum = chains[0];
#pragma unroll
  for (int chain = 1; chain < kStressChains; ++chain) sum = __fadd_rn(sum, chains[chain]);
  values[thread] = sum;
  if (expected != nullptr && __float_as_uint(sum) != __float_as_uint(expected[seed_thread])) atomicAdd(mismatches, 1ULL);
}

}  // namespace

StressRun stress_run_on_device(int device, double seconds, int iterations, const float* expected, std::size_t seed_count) {
  const ScopedDevice scoped_device(device);
  const unsigned blocks = full_wave_blocks(stress_chains, kThreadsPerBlock);
  StressRun run;
  run.threads = static_cast<std::size_t>(blocks) * kThreadsPerBlock;
  DeviceArray<float> device_expected(seed_count), values(run.threads);
  DeviceArray<unsigned long long> mismatches(1);
  device_expected.copy_from_host(expected);
  SOLVER_CUDA_CHECK(cudaMemset(mismatches.data(), 0, sizeof(unsigned long long)));
  const auto launch = [&] {
    stress_chains<<<blocks, kThreadsPerBlock>>>(run.threads, iterations, seed_count, device_expected.data(), values.data(),
                                                mismatches.data());
    SOLVER_CUDA_CHECK(cudaGetLastError());
  };

  // Untimed (the first launch loads the module), but checked like the others.
  launch();
  SOLVER_CUDA_CHECK(cudaDeviceSynchronize());

  // Batches grow to about kBatchSeconds from the time of the one before.
  CudaEvent start, end;
  std::uint64_t batch = 1;
  start.record();
  while (run.seconds < seconds) {
    for (std::uint64_t queued = 0; queued < batch; ++queued) launch();
    end.record();
    end.synchronize();
    const double elapsed = end.seconds_since(start);
    const double batch_seconds = elapsed - run.seconds;
    run.timed_launches += batch;
    run.seconds = elapsed;
    if (batch_seconds > 0.0)
      batch = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(kBatchSeconds * batch / batch_seconds)));
  }
  run.checked_values = (run.timed_launches + 1) * run.threads;
  unsigned long long mismatched = 0;
  mismatches.copy_to_host(&mismatched);
  run.mismatched_values = mismatched;
  return run;
}

void stress_values_on_device(int device, std::size_t thread_count, int iterations, float* values) {
  const ScopedDevice scoped_device(device);
  DeviceArray<float> device_values(thread_count);
  const unsigned blocks = static_cast<unsigned>((thread_count + kThreadsPerBlock - 1) / kThreadsPerBlock);
  stress_chains<<<blocks, kThreadsPerBlock>>>(thread_count, iterations, thread_count, nullptr, device_values.data(), nullptr);
  SOLVER_CUDA_CHECK(cudaGetLastError());
  device_values.copy_to_host(values);
}

}  // namespace solver::kernels
