// The public CUDA entry points of stream.h and stress.h for builds with CUDA: argument
// checks and the figures' accounting here, the kernels and their timing in the C++17
// launchers of stream.cu and stress.cu. no_cuda.cpp replaces this file in builds without CUDA.
#include <cmath>
#include <string>

#include "common/error.h"
#include "kernels/detail/cuda_devices.h"
#include "kernels/detail/stress_seed.h"
#include "kernels/stream.cuh"
#include "kernels/stream.h"
#include "kernels/stress.cuh"
#include "kernels/stress.h"

namespace solver::kernels {
using detail::require_cuda_device;

DeviceStreamBandwidth measure_stream_cuda(int device, std::size_t array_bytes, int repeats) {
  require_cuda_device(device, "measure_stream_cuda");
  const std::size_t count = array_bytes / sizeof(double);
  if (count == 0)
    throw Error(ErrorKind::Config, "measure_stream_cuda: an array of " + std::to_string(array_bytes) +
                                       " bytes holds no double, expected at least 8");
  if (repeats < 1)
    throw Error(ErrorKind::Config, "measure_stream_cuda: repeats must be at least 1, got " + std::to_string(repeats));
  const StreamBestSeconds best = stream_best_seconds_cuda(device, count, repeats);
  const double bytes = static_cast<double>(count * sizeof(double));
  return DeviceStreamBandwidth{device, count * sizeof(double), repeats, 2.0 * bytes / best.copy / 1e9,
                               3.0 * bytes / best.triad / 1e9};
}

std::vector<double> stream_triad_cuda(int device, std::span<const double> b, std::span<const double> c, double s) {
  require_cuda_device(device, "stream_triad_cuda");
  if (b.size() != c.size())
    throw Error(ErrorKind::Input, "stream_triad_cuda: b and c must have the same size, got " + std::to_string(b.size()) +
                                      " and " + std::to_string(c.size()));
  std::vector<double> a(b.size());
  if (!a.empty()) stream_triad_on_device(device, a.data(), b.data(), c.data(), s, a.size());
  return a;
}

StressResult run_stress_cuda(int device, double seconds) {
  require_cuda_device(device, "run_stress_cuda");
  if (!(seconds > 0.0) || !std::isfinite(seconds))
    throw Error(ErrorKind::Config, "run_stress_cuda: seconds must be positive and finite, got " + std::to_string(seconds));
  const std::vector<float> expected = stress_cpu(kStressSeedCount, kStressIterations);
  const StressRun run = stress_run_on_device(device, seconds, kStressIterations, expected.data(), expected.size());
  const double fmas = static_cast<double>(run.timed_launches) * static_cast<double>(run.threads) * kStressChains * kStressIterations;
  StressResult result;
  result.device = device;
  result.threads = run.threads;
  result.iterations = kStressIterations;
  result.launches = run.timed_launches;
  result.seconds = run.seconds;
  result.tflops = 2.0 * fmas / run.seconds / 1e12;
  result.checked_values = run.checked_values;
  result.mismatched_values = run.mismatched_values;
  return result;
}

std::vector<float> stress_cuda(int device, std::size_t thread_count, int iterations) {
  require_cuda_device(device, "stress_cuda");
  require_stress_arguments(thread_count, iterations);
  std::vector<float> values(thread_count);
  if (thread_count > 0) stress_values_on_device(device, thread_count, iterations, values.data());
  return values;
}

}  // namespace solver::kernels
