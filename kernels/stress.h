// A compute stress test in the spirit of gpu-burn: keep every SM's FP32 pipes busy with long
// chains of dependent fused multiply-adds, and check every result, because a GPU that
// computes wrong under heat or power load is the worst kind of solver (its proofs fail
// verification, or worse, its training silently diverges). The CPU twin defines each
// thread's value; IEEE fma is exactly rounded on both sides, so the kernel must match it bit
// for bit, and any difference is a hardware fault, not rounding.
//
// Thread t runs kStressChains chains; chain k starts at stress_seed(t, k) (detail/stress_seed.h)
// and applies x = fma(x, x, -1.9) `iterations` times, a chaotic map that stays within
// [-1.9, 1.71], so an error anywhere in the chain shows in the end; the thread's value is
// the chains' final values summed in order ((x0 + x1) + x2) + ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace solver::kernels {

// What run_stress_cuda launches: each launch is one full wave of threads doing
// kStressIterations iterations (about 1 ms on an H100-class GPU), and thread t starts from the
// seeds of thread t % kStressSeedCount, so a twin of kStressSeedCount threads (about 0.2 s on
// one CPU core) gives the expected value of every thread of every launch.
inline constexpr int kStressIterations = 16384;
inline constexpr std::size_t kStressSeedCount = 1024;

// CPU twin: the value of threads 0 .. thread_count-1 after `iterations` iterations, one
// float per thread. Throws Error(Config) for negative iterations or more than 2^32 threads.
std::vector<float> stress_cpu(std::size_t thread_count, int iterations);

struct StressResult {
  int device = 0;
  std::size_t threads = 0;        // per launch: one full wave of the device
  int iterations = 0;             // per chain
  std::uint64_t launches = 0;     // timed launches, after one untimed launch
  double seconds = 0.0;           // of the timed launches, by CUDA events
  double tflops = 0.0;            // sustained FP32 FMA throughput, 2 FLOP per FMA (the final sums are not counted)
  std::uint64_t checked_values = 0;     // thread values compared with the twin, all launches (the untimed one too)
  std::uint64_t mismatched_values = 0;  // of those, how many differed in any bit: non-zero means a faulty GPU
};

// Launches the stress kernel on `device` again and again for about `seconds` (whole batches
// of about 50 ms, so it may run a little over), each thread comparing its value with the twin
// on the device. Blocks. Throws Error(Config) for seconds that are not positive and finite or
// a device number out of range, Error(Cuda) without a CUDA device or when a CUDA call fails.
StressResult run_stress_cuda(int device, double seconds);

// One launch of thread_count threads, thread t from the seeds of thread t, returning every
// thread's value: comparable bit for bit with stress_cpu(thread_count, iterations).
// Throws as stress_cpu and run_stress_cuda do.
std::vector<float> stress_cuda(int device, std::size_t thread_count, int iterations);

}  // namespace solver::kernels
