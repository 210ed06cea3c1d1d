// cuda_device_properties: the SM count and compute capability `solver bench` prints.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "kernels/cuda_device.h"
#include "kernels/distance.h"
#include "tests/kernels/gpu_guard.h"

using solver::kernels::cuda_device_properties;

TEST_CASE("Device properties without a CUDA device are a GPU error, naming why", "[kernels]") {
  if (solver::kernels::cuda_available()) {
    WARN("skipped: this machine has a CUDA device");
    return;
  }
  CHECK_THROWS_MATCHES(cuda_device_properties(0), solver::Error,
                       Catch::Predicate<solver::Error>([](const solver::Error& error) { return error.kind() == solver::ErrorKind::Cuda; },
                                                       "an Error of kind Cuda"));
}

TEST_CASE("Every visible GPU reports its SMs, compute capability and memory", "[kernels][gpu]") {
  if (solver::test::no_gpu_here()) return;
  const int devices = solver::kernels::cuda_device_count();
  for (int device = 0; device < devices; ++device) {
    const solver::kernels::CudaDeviceProperties properties = cuda_device_properties(device);
    WARN("cuda:" << device << " " << properties.name << ": " << properties.sm_count << " SMs, compute capability "
                 << properties.compute_major << "." << properties.compute_minor);
    CHECK(properties.device == device);
    CHECK_FALSE(properties.name.empty());
    CHECK(properties.sm_count > 0);
    CHECK(properties.compute_major >= 5);
    CHECK(properties.memory_bytes > 0);
  }
  CHECK_THROWS_AS(cuda_device_properties(devices), solver::Error);
}
