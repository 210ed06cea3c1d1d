// The CPU twin of the stress kernel: it defines every thread's value bit for bit. std::fma is
// one exactly rounded operation, the same as the kernel's fmaf; the final sums are plain
// float adds, not contracted (-ffp-contract=off), as the kernel's __fadd_rn.
#include <cmath>
#include <limits>
#include <string>

#include "common/error.h"
#include "kernels/detail/stress_seed.h"
#include "kernels/stress.h"

namespace solver::kernels {

void require_stress_arguments(std::size_t thread_count, int iterations) {
  if (iterations < 0)
    throw Error(ErrorKind::Config, "stress: iterations must be 0 or more, got " + std::to_string(iterations));
  if (thread_count > std::size_t{std::numeric_limits<std::uint32_t>::max()} + 1)
    throw Error(ErrorKind::Config, "stress: at most 2^32 threads (a thread's seed takes its index as 32 bits), got " +
                                       std::to_string(thread_count));
}

std::vector<float> stress_cpu(std::size_t thread_count, int iterations) {
  require_stress_arguments(thread_count, iterations);
  std::vector<float> values(thread_count);
  for (std::size_t thread = 0; thread < thread_count; ++thread) {
    float chains[kStressChains];
    for (int chain = 0; chain < kStressChains; ++chain) chains[chain] = stress_seed(static_cast<std::uint32_t>(thread), chain);
    for (int iteration = 0; iteration < iterations; ++iteration)
      for (float& x : chains) x = std::fma(x, x, kStressOffset);
    float sum = chains[0];
    for (int chain = 1; chain < kStressChains; ++chain) sum += chains[chain];
    values[thread] = sum;
  }
  return values;
}

}  // namespace solver::kernels
