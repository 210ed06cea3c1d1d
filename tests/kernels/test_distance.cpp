// The weight-distance twin against a straightforward double computation, its fixed-order
// guarantees (bitwise repeatable, independent of how the data is split across add() calls),
// and, on machines with a GPU, the CUDA kernel against the twin bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/distance.h"
#ifdef SOLVER_HAVE_CUDA
#include "kernels/distance.cuh"
#include "tests/kernels/gpu_guard.h"
#endif

using solver::kernels::DistanceAccumulator;
using solver::kernels::kDistanceLanes;
using solver::kernels::WeightDistance;
using solver::kernels::weight_distance_cpu;

namespace {

std::vector<float> random_weights(std::size_t n, std::uint32_t seed, float scale) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> weights(n);
  for (float& weight : weights) weight = normal(generator);
  return weights;
}

// Same values but a small update, the shape of a real checkpoint-to-checkpoint distance.
std::vector<float> perturbed(const std::vector<float>& weights, std::uint32_t seed) {
  const std::vector<float> noise = random_weights(weights.size(), seed, 1e-3f);
  std::vector<float> result(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) result[i] = weights[i] + noise[i];
  return result;
}

// One left-to-right pass with long double sums: a different order and precision from the twin.
WeightDistance naive_distance(const std::vector<float>& a, const std::vector<float>& b) {
  long double l1 = 0, l2 = 0, linf = 0, dot = 0, a2 = 0, b2 = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const long double d = static_cast<long double>(a[i]) - b[i];
    l1 += std::fabs(d);
    l2 += d * d;
    linf = std::max(linf, std::fabs(d));
    dot += static_cast<long double>(a[i]) * b[i];
    a2 += static_cast<long double>(a[i]) * a[i];
    b2 += static_cast<long double>(b[i]) * b[i];
  }
  return {static_cast<double>(l1), static_cast<double>(std::sqrt(l2)), static_cast<double>(linf),
          static_cast<double>(dot / std::sqrt(a2 * b2))};
}

double relative_difference(double x, double y) {
  return x == y ? 0.0 : std::fabs(x - y) / std::max(std::fabs(x), std::fabs(y));
}

bool bitwise_equal(const WeightDistance& x, const WeightDistance& y) {
  return std::bit_cast<std::uint64_t>(x.l1) == std::bit_cast<std::uint64_t>(y.l1) &&
         std::bit_cast<std::uint64_t>(x.l2) == std::bit_cast<std::uint64_t>(y.l2) &&
         std::bit_cast<std::uint64_t>(x.linf) == std::bit_cast<std::uint64_t>(y.linf) &&
         std::bit_cast<std::uint64_t>(x.cosine) == std::bit_cast<std::uint64_t>(y.cosine);
}

std::string describe(const WeightDistance& distance) {
  char text[160];
  std::snprintf(text, sizeof text, "l1=%.17g l2=%.17g linf=%.17g cosine=%.17g", distance.l1, distance.l2,
                distance.linf, distance.cosine);
  return text;
}

}  // namespace

TEST_CASE("The CPU twin agrees with a naive double computation to 1e-9 relative", "[kernels]") {
  // More elements than lanes, and not a multiple of them, so lanes hold unequal counts.
  const std::size_t n = 3 * kDistanceLanes + 12345;
  const std::vector<float> a = random_weights(n, 1, 0.05f);
  const std::vector<float> b = perturbed(a, 2);

  const WeightDistance twin = weight_distance_cpu(a, b);
  const WeightDistance naive = naive_distance(a, b);
  const double max_difference =
      std::max({relative_difference(twin.l1, naive.l1), relative_difference(twin.l2, naive.l2),
                relative_difference(twin.linf, naive.linf), relative_difference(twin.cosine, naive.cosine)});
  INFO("twin:  " << describe(twin));
  INFO("naive: " << describe(naive));
  WARN("max relative difference twin vs naive: " << max_difference);
  CHECK(max_difference < 1e-9);
  CHECK(twin.linf == naive.linf);  // a max has no rounding to differ in
  CHECK(twin.l1 > 0.0);
  CHECK(twin.cosine < 1.0);
  CHECK(twin.cosine > 0.99);
}

TEST_CASE("Identical weights are at distance zero with cosine exactly one", "[kernels]") {
  const std::vector<float> a = random_weights(kDistanceLanes + 7, 3, 1.0f);
  const WeightDistance distance = weight_distance_cpu(a, a);
  CHECK(distance.l1 == 0.0);
  CHECK(distance.l2 == 0.0);
  CHECK(distance.linf == 0.0);
  CHECK(distance.cosine == 1.0);
}

TEST_CASE("Small known cases give their exact distances", "[kernels]") {
  SECTION("orthogonal vectors have cosine zero") {
    const std::vector<float> a{1, 0, 0, 0};
    const std::vector<float> b{0, 2, 0, 0};
    const WeightDistance distance = weight_distance_cpu(a, b);
    CHECK(distance.l1 == 3.0);
    CHECK(distance.l2 == std::sqrt(5.0));
    CHECK(distance.linf == 2.0);
    CHECK(distance.cosine == 0.0);
  }
  SECTION("opposite vectors have cosine minus one") {
    const std::vector<float> a{3, 4};
    const std::vector<float> b{-3, -4};
    const WeightDistance distance = weight_distance_cpu(a, b);
    CHECK(distance.l1 == 14.0);
    CHECK(distance.l2 == 10.0);
    CHECK(distance.linf == 8.0);
    CHECK(distance.cosine == -1.0);
  }
  SECTION("two zero vectors count as identical") {
    const std::vector<float> zeros(10, 0.0f);
    const WeightDistance distance = weight_distance_cpu(zeros, zeros);
    CHECK(distance.l1 == 0.0);
    CHECK(distance.cosine == 1.0);
  }
  SECTION("one zero vector has cosine zero") {
    const std::vector<float> zeros(2, 0.0f);
    const std::vector<float> b{3, 4};
    const WeightDistance distance = weight_distance_cpu(zeros, b);
    CHECK(distance.l1 == 7.0);
    CHECK(distance.l2 == 5.0);
    CHECK(distance.linf == 4.0);
    CHECK(distance.cosine == 0.0);
  }
  SECTION("no elements at all count as identical") {
    const WeightDistance distance = weight_distance_cpu({}, {});
    CHECK(distance.l1 == 0.0);
    CHECK(distance.l2 == 0.0);
    CHECK(distance.cosine == 1.0);
  }
}

TEST_CASE("Splitting the weights across add() calls gives bitwise the same result", "[kernels]") {
  const std::size_t n = 2 * kDistanceLanes + 999;
  const std::vector<float> a = random_weights(n, 4, 0.1f);
  const std::vector<float> b = perturbed(a, 5);
  const WeightDistance whole = weight_distance_cpu(a, b);

  // Cut points that land inside lanes, on a lane boundary, and make an empty piece.
  const std::vector<std::size_t> cuts{0, 1, 100, 100, kDistanceLanes, kDistanceLanes + 3, n - 1, n};
  DistanceAccumulator pieces;
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const std::span<const float> all_a(a), all_b(b);
    pieces.add(all_a.subspan(cuts[i], cuts[i + 1] - cuts[i]), all_b.subspan(cuts[i], cuts[i + 1] - cuts[i]));
  }
  const WeightDistance split = pieces.finish();
  INFO("whole: " << describe(whole));
  INFO("split: " << describe(split));
  CHECK(bitwise_equal(whole, split));
}

TEST_CASE("The twin is bitwise identical from run to run", "[kernels]") {
  const std::vector<float> a = random_weights(kDistanceLanes * 2 + 5, 6, 0.2f);
  const std::vector<float> b = perturbed(a, 7);
  const WeightDistance first = weight_distance_cpu(a, b);
  for (int run = 0; run < 3; ++run) CHECK(bitwise_equal(first, weight_distance_cpu(a, b)));
}

TEST_CASE("Weight spans of different sizes are refused", "[kernels]") {
  const std::vector<float> a(4, 1.0f), b(5, 1.0f);
  DistanceAccumulator accumulator;
  try {
    accumulator.add(a, b);
    FAIL("add() accepted spans of sizes 4 and 5");
  } catch (const solver::Error& error) {
    CHECK(error.kind() == solver::ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::Contains("4") && Catch::Contains("5") && Catch::Contains("same size"));
  }
}

TEST_CASE("Device counting never fails, and the kernel refuses to run without a device", "[kernels]") {
  const int devices = solver::kernels::cuda_device_count();
  CHECK(devices >= 0);
  CHECK(solver::kernels::cuda_available() == (devices > 0));
  if (devices == 0) {
    const std::vector<float> a{1.0f};
    CHECK_THROWS_MATCHES(solver::kernels::weight_distance_cuda(a.data(), a.data(), a.size()), solver::Error,
                         Catch::Predicate<solver::Error>(
                             [](const solver::Error& error) { return error.kind() == solver::ErrorKind::Cuda; },
                             "an Error of kind Cuda"));
  }
}

TEST_CASE("The CUDA kernel equals the CPU twin bit for bit", "[kernels][gpu]") {
#ifndef SOLVER_HAVE_CUDA
  WARN("skipped: this build has no CUDA kernels");
#else
  if (solver::test::no_gpu_here()) return;
  using solver::kernels::DeviceFloats;
  // Sizes: fewer elements than lanes, exactly the lanes, and several passes over them.
  for (const std::size_t n : {std::size_t{1000}, kDistanceLanes, 5 * kDistanceLanes + 77, std::size_t{3'000'000}}) {
    const std::vector<float> a = random_weights(n, 8, 0.05f);
    const std::vector<float> b = perturbed(a, 9);
    const DeviceFloats device_a(a.data(), n), device_b(b.data(), n);
    const WeightDistance twin = weight_distance_cpu(a, b);
    const WeightDistance kernel = solver::kernels::weight_distance_cuda(device_a.data(), device_b.data(), n);
    INFO("n = " << n);
    INFO("twin:   " << describe(twin));
    INFO("kernel: " << describe(kernel));
    CHECK(bitwise_equal(twin, kernel));
  }
  const std::vector<float> host(8, 1.0f);
  CHECK_THROWS_AS(solver::kernels::weight_distance_cuda(host.data(), host.data(), host.size()), solver::Error);
#endif
}
