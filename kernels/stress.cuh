// Host launchers for stress.cu. Plain C++17 with no CUDA types, for the reason distance.cuh
// gives. Every function throws Error(Cuda) naming the failed CUDA call, its file and line.
#pragma once

#include <cstddef>
#include <cstdint>

namespace solver::kernels {

struct StressRun {
  std::size_t threads = 0;
  std::uint64_t timed_launches = 0;
  double seconds = 0.0;
  std::uint64_t checked_values = 0;
  std::uint64_t mismatched_values = 0;
};

// Full-wave launches on `device` for about `seconds` after one untimed launch; thread t
// compares its value with expected[t % seed_count] (host memory, seed_count floats).
StressRun stress_run_on_device(int device, double seconds, int iterations, const float* expected, std::size_t seed_count);

// One launch of thread_count threads (thread t from the seeds of thread t); values to host memory.
void stress_values_on_device(int device, std::size_t thread_count, int iterations, float* values);

}  // namespace solver::kernels
