// The STREAM twins against the plain formulas (and the double rounding that tells the triad
// from a fused multiply-add), the device entry points' refusals without a GPU, and, on
// machines with a GPU, the triad kernel against its twin bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/distance.h"
#include "kernels/stream.h"
#include "tests/kernels/gpu_guard.h"

using solver::kernels::stream_copy_cpu;
using solver::kernels::stream_triad_cpu;

namespace {

// Doubles over many magnitudes and both signs, so products and sums round in every way.
std::vector<double> random_doubles(std::size_t n, std::uint32_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> exponent(-20, 20);
  std::vector<double> values(n);
  for (double& value : values) value = std::ldexp(normal(generator), exponent(generator));
  return values;
}

bool is_cuda_error(const solver::Error& error) { return error.kind() == solver::ErrorKind::Cuda; }

}  // namespace

TEST_CASE("The STREAM copy twin copies every element", "[kernels]") {
  const std::vector<double> b = random_doubles(1001, 1);
  std::vector<double> a(b.size(), 0.0);
  stream_copy_cpu(a, b);
  CHECK(a == b);
}

TEST_CASE("The STREAM triad twin computes b plus s times c on known values", "[kernels]") {
  const std::vector<double> b{1.0, 2.0, -3.0, 0.0, 1e300};
  const std::vector<double> c{0.5, -0.25, 4.0, 7.0, 0.0};
  std::vector<double> a(b.size(), -1.0);
  stream_triad_cpu(a, b, c, 3.0);
  CHECK(a == std::vector<double>{2.5, 1.25, 9.0, 21.0, 1e300});
}

TEST_CASE("The STREAM triad twin rounds the product before the sum, as the kernel does", "[kernels]") {
  // s*c = 1 + 2^-29 + 2^-60 exactly; rounded to a double it loses the 2^-60, so b + s*c is
  // exactly 2^-29. A fused multiply-add would keep it and give 2^-29 + 2^-60.
  const double s = 1.0 + std::ldexp(1.0, -30);
  const std::vector<double> b{-1.0}, c{s};
  std::vector<double> a(1);
  stream_triad_cpu(a, b, c, s);
  CHECK(a[0] == std::ldexp(1.0, -29));
  CHECK(a[0] != std::fma(s, s, -1.0));
}

TEST_CASE("The STREAM twins refuse arrays of different sizes", "[kernels]") {
  std::vector<double> a(4);
  const std::vector<double> three(3), four(4);
  CHECK_THROWS_MATCHES(stream_copy_cpu(a, three), solver::Error,
                       Catch::Predicate<solver::Error>(
                           [](const solver::Error& error) {
                             return error.kind() == solver::ErrorKind::Input && std::string(error.what()).find("4") != std::string::npos &&
                                    std::string(error.what()).find("3") != std::string::npos;
                           },
                           "an Error of kind Input naming both sizes"));
  CHECK_THROWS_AS(stream_triad_cpu(a, four, three, 1.0), solver::Error);
  CHECK_THROWS_AS(stream_triad_cpu(a, three, four, 1.0), solver::Error);
}

TEST_CASE("The device STREAM refuses to run without a device", "[kernels]") {
  if (solver::kernels::cuda_device_count() > 0) {
    WARN("skipped: this machine has a CUDA device");
    return;
  }
  const std::vector<double> b{1.0}, c{2.0};
  const auto cuda_error = Catch::Predicate<solver::Error>(is_cuda_error, "an Error of kind Cuda");
  CHECK_THROWS_MATCHES(solver::kernels::measure_stream_cuda(0, std::size_t{1} << 20, 1), solver::Error, cuda_error);
  CHECK_THROWS_MATCHES(solver::kernels::stream_triad_cuda(0, b, c, 3.0), solver::Error, cuda_error);
}

TEST_CASE("The STREAM triad kernel equals its CPU twin bit for bit", "[kernels][gpu]") {
  if (solver::test::no_gpu_here()) return;
  const double s = 1.0 / 3.0;  // inexact, so every product rounds
  // Sizes: one element, less than a wave, and several grid strides.
  for (const std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{3'000'001}}) {
    const std::vector<double> b = random_doubles(n, 2), c = random_doubles(n, 3);
    std::vector<double> twin(n);
    stream_triad_cpu(twin, b, c, s);
    const std::vector<double> kernel = solver::kernels::stream_triad_cuda(0, b, c, s);
    INFO("n = " << n);
    REQUIRE(kernel.size() == n);
    CHECK(std::memcmp(kernel.data(), twin.data(), n * sizeof(double)) == 0);
  }
}

TEST_CASE("The device STREAM gives positive figures and checks its arguments", "[kernels][gpu]") {
  if (solver::test::no_gpu_here()) return;
  const int devices = solver::kernels::cuda_device_count();
  const solver::kernels::DeviceStreamBandwidth bandwidth = solver::kernels::measure_stream_cuda(0, std::size_t{256} << 20, 5);
  WARN("device 0 STREAM on 256 MiB arrays: copy " << bandwidth.copy_gb_per_s << " GB/s, triad " << bandwidth.triad_gb_per_s
                                                   << " GB/s");
  CHECK(bandwidth.array_bytes == std::size_t{256} << 20);
  CHECK(std::isfinite(bandwidth.copy_gb_per_s));
  CHECK(bandwidth.copy_gb_per_s > 0.0);
  CHECK(std::isfinite(bandwidth.triad_gb_per_s));
  CHECK(bandwidth.triad_gb_per_s > 0.0);
  const auto config_error = Catch::Predicate<solver::Error>(
      [](const solver::Error& error) { return error.kind() == solver::ErrorKind::Config; }, "an Error of kind Config");
  CHECK_THROWS_MATCHES(solver::kernels::measure_stream_cuda(0, 4, 1), solver::Error, config_error);
  CHECK_THROWS_MATCHES(solver::kernels::measure_stream_cuda(0, 1 << 20, 0), solver::Error, config_error);
  CHECK_THROWS_MATCHES(solver::kernels::measure_stream_cuda(devices, 1 << 20, 1), solver::Error, config_error);
}
