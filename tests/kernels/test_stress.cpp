// The stress twin: what it computes (the chaotic map from the shared seeds, against a
// double-precision reference), that it is deterministic, non-trivial and bounded, and that a
// thread's value depends only on its index (what lets run_stress_cuda check every thread
// against a small table); the device entry points' refusals without a GPU; and, on machines
// with a GPU, the kernel against the twin bit for bit and a short checked stress run.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "common/error.h"
#include "kernels/detail/stress_seed.h"
#include "kernels/distance.h"
#include "kernels/stress.h"
#include "tests/kernels/gpu_guard.h"

using solver::kernels::kStressChains;
using solver::kernels::stress_cpu;
using solver::kernels::stress_seed;

namespace {

bool bitwise_equal(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("Stress seeds lie from -1 up to 1 and differ between threads and chains", "[kernels]") {
  std::set<float> seeds;
  for (std::uint32_t thread = 0; thread < 512; ++thread)
    for (int chain = 0; chain < kStressChains; ++chain) {
      const float seed = stress_seed(thread, chain);
      CHECK(seed >= -1.0f);
      CHECK(seed < 1.0f);
      seeds.insert(seed);
    }
  CHECK(seeds.size() == 512 * kStressChains);
}

TEST_CASE("The stress twin iterates x times x minus 1.9 from the seeds, as a double computation does", "[kernels]") {
  // Few iterations: the map is chaotic, so float and double drift apart by about e^0.55 per step.
  const int iterations = 10;
  const std::vector<float> twin = stress_cpu(16, iterations);
  for (std::uint32_t thread = 0; thread < 16; ++thread) {
    double sum = 0.0;
    for (int chain = 0; chain < kStressChains; ++chain) {
      double x = stress_seed(thread, chain);
      for (int iteration = 0; iteration < iterations; ++iteration) x = x * x + double{solver::kernels::kStressOffset};
      sum += x;
    }
    INFO("thread " << thread);
    CHECK(twin[thread] == Approx(sum).margin(1e-3));
  }
  // No iterations: the sum of the seeds themselves.
  const std::vector<float> seeds_only = stress_cpu(1, 0);
  float seed_sum = stress_seed(0, 0);
  for (int chain = 1; chain < kStressChains; ++chain) seed_sum += stress_seed(0, chain);
  CHECK(seeds_only[0] == seed_sum);
}

TEST_CASE("The stress twin is deterministic, bounded and different for every thread", "[kernels]") {
  const std::vector<float> first = stress_cpu(1024, 2000);
  CHECK(bitwise_equal(first, stress_cpu(1024, 2000)));
  for (const float value : first) {
    // Each chain stays in [-1.9, 1.71], so the sum of the chains stays within chains x 1.9.
    CHECK(std::isfinite(value));
    CHECK(std::fabs(value) <= kStressChains * 1.9f);
  }
  CHECK(std::set<float>(first.begin(), first.end()).size() == first.size());
}

TEST_CASE("A stress thread's value depends only on its index and the iterations", "[kernels]") {
  const std::vector<float> fewer = stress_cpu(100, 500);
  const std::vector<float> more = stress_cpu(300, 500);
  CHECK(bitwise_equal(fewer, std::vector<float>(more.begin(), more.begin() + 100)));
  CHECK_FALSE(bitwise_equal(fewer, stress_cpu(100, 501)));
}

TEST_CASE("The stress twin refuses negative iterations", "[kernels]") {
  CHECK_THROWS_MATCHES(stress_cpu(4, -1), solver::Error,
                       Catch::Predicate<solver::Error>(
                           [](const solver::Error& error) {
                             return error.kind() == solver::ErrorKind::Config && std::string(error.what()).find("-1") != std::string::npos;
                           },
                           "an Error of kind Config naming -1"));
}

TEST_CASE("The GPU stress test refuses to run without a device", "[kernels]") {
  if (solver::kernels::cuda_device_count() > 0) {
    WARN("skipped: this machine has a CUDA device");
    return;
  }
  const auto cuda_error = Catch::Predicate<solver::Error>(
      [](const solver::Error& error) { return error.kind() == solver::ErrorKind::Cuda; }, "an Error of kind Cuda");
  CHECK_THROWS_MATCHES(solver::kernels::run_stress_cuda(0, 0.1), solver::Error, cuda_error);
  CHECK_THROWS_MATCHES(solver::kernels::stress_cuda(0, 32, 10), solver::Error, cuda_error);
}

TEST_CASE("The stress kernel equals its CPU twin bit for bit", "[kernels][gpu]") {
  if (solver::test::no_gpu_here()) return;
  // A thread count that leaves the last block partly empty, and the iteration count of a launch.
  for (const int iterations : {0, 1, 2000, solver::kernels::kStressIterations}) {
    const std::size_t threads = iterations == solver::kernels::kStressIterations ? 300 : 4096 + 37;
    INFO("iterations " << iterations << ", threads " << threads);
    CHECK(bitwise_equal(solver::kernels::stress_cuda(0, threads, iterations), stress_cpu(threads, iterations)));
  }
}

TEST_CASE("A short GPU stress run finds no wrong value and reports its throughput", "[kernels][gpu]") {
  if (solver::test::no_gpu_here()) return;
  const solver::kernels::StressResult result = solver::kernels::run_stress_cuda(0, 1.0);
  WARN("device 0 stress: " << result.tflops << " TFLOP/s over " << result.seconds << " s, " << result.launches
                           << " launches of " << result.threads << " threads, " << result.mismatched_values << " of "
                           << result.checked_values << " values wrong");
  CHECK(result.mismatched_values == 0);
  CHECK(result.launches >= 1);
  CHECK(result.seconds >= 1.0);
  CHECK(result.checked_values == (result.launches + 1) * result.threads);
  CHECK(std::isfinite(result.tflops));
  CHECK(result.tflops > 0.0);
  CHECK_THROWS_AS(solver::kernels::run_stress_cuda(0, 0.0), solver::Error);
}
