// The constants and the seeds of the stress chains, shared by the CPU twin (stress_cpu.cpp)
// and the kernel (stress.cu) so that both start from the same bits, and the argument checks
// both entry points make. Plain C++17; under nvcc the seed function is compiled for the
// device too.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define SOLVER_HOST_DEVICE __host__ __device__
#else
#define SOLVER_HOST_DEVICE
#endif

namespace solver::kernels {

// Independent chains per thread: while one chain waits for its FMA's result (4 cycles),
// the others issue, so even a thread alone keeps the FP32 pipe busy.
inline constexpr int kStressChains = 8;

// x -> x*x + c with c = -1.9 is chaotic on [c, c*c + c] = [-1.9, 1.71] and maps that interval
// into itself with a margin of 0.25 at the top (its repelling fixed point is 1.966), far more
// than any rounding: the values stay bounded for any number of iterations, and one wrong bit
// anywhere in the chain grows until the final value differs.
inline constexpr float kStressOffset = -1.9f;

// The start of chain `chain` of thread `thread`: a 32-bit hash (the "lowbias32" mix) of the
// pair, turned into a float in [-1, 1) on a 2^-22 grid, where the conversion is exact.
SOLVER_HOST_DEVICE inline float stress_seed(std::uint32_t thread, int chain) {
  std::uint32_t h = thread * static_cast<std::uint32_t>(kStressChains) + static_cast<std::uint32_t>(chain);
  h ^= h >> 16;
  h *= 0x7feb352dU;
  h ^= h >> 15;
  h *= 0x846ca68bU;
  h ^= h >> 16;
  return static_cast<float>(h >> 9) * (1.0f / 4194304.0f) - 1.0f;
}

// Throws Error(Config) for negative iterations or more than 2^32 threads (a thread's seed
// takes its index as 32 bits). Defined in stress_cpu.cpp.
void require_stress_arguments(std::size_t thread_count, int iterations);

}  // namespace solver::kernels

#undef SOLVER_HOST_DEVICE
