// The NCCL all-reduce bandwidth: nccl-tests' bus factor, the errors for a missing or wrong
// NCCL library and for bad arguments (all without a GPU), and, on machines with a GPU and
// NCCL, a checked all-reduce on one device and across every visible device.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/all_reduce.h"
#include "kernels/distance.h"
#include "tests/kernels/gpu_guard.h"
#include "tests/test_support.h"

using solver::ErrorKind;
using solver::kernels::all_reduce_bus_factor;
using solver::kernels::AllReduceBandwidth;
using solver::kernels::measure_all_reduce;
using solver::kernels::nccl_unavailable_reason;

namespace {

constexpr std::size_t kTestBytes = std::size_t{64} << 20;

// Points SOLVER_NCCL_LIBRARY at `library` for one test and restores the previous value (or
// its absence) afterwards, so other tests see the environment they started with.
class ScopedNcclLibrary {
 public:
  explicit ScopedNcclLibrary(const std::string& library) {
    if (const char* previous = std::getenv(kVariable)) previous_ = previous;
    ::setenv(kVariable, library.c_str(), 1);
  }
  ~ScopedNcclLibrary() {
    if (previous_) ::setenv(kVariable, previous_->c_str(), 1);
    else ::unsetenv(kVariable);
  }
  ScopedNcclLibrary(const ScopedNcclLibrary&) = delete;
  ScopedNcclLibrary& operator=(const ScopedNcclLibrary&) = delete;

 private:
  static constexpr const char* kVariable = "SOLVER_NCCL_LIBRARY";
  std::optional<std::string> previous_;
};

std::optional<solver::Error> all_reduce_error(const std::vector<int>& devices, std::size_t bytes, int repeats) {
  return solver::test::error_of([&] { measure_all_reduce(devices, bytes, repeats); });
}

// A version such as "2.21.5". Only the GPU tests use it, and builds without CUDA leave them out.
[[maybe_unused]] bool is_version(const std::string& text) { return std::regex_match(text, std::regex(R"(\d+\.\d+\.\d+)")); }

}  // namespace

TEST_CASE("The all-reduce bus factor is nccl-tests' 2(n-1)/n", "[kernels]") {
  CHECK(all_reduce_bus_factor(1) == 0.0);
  CHECK(all_reduce_bus_factor(2) == 1.0);
  CHECK(all_reduce_bus_factor(4) == 1.5);
  CHECK(all_reduce_bus_factor(8) == 1.75);
  CHECK(all_reduce_bus_factor(0) == 0.0);
}

TEST_CASE("A missing NCCL library is reported with its name, the dlopen error and the variable to set", "[kernels]") {
  const std::string library = "/nonexistent-for-solver-tests/libnccl.so.2";
  const ScopedNcclLibrary scoped(library);
  const std::optional<std::string> reason = nccl_unavailable_reason();
  REQUIRE(reason.has_value());
  const std::optional<solver::Error> error = all_reduce_error({0}, kTestBytes, 1);
  REQUIRE(error.has_value());
  CHECK(error->kind() == ErrorKind::Cuda);
#ifndef SOLVER_HAVE_CUDA
  CHECK_THAT(*reason, Catch::Contains("this build has no CUDA"));
  CHECK_THAT(error->what(), Catch::Contains("this build has no CUDA"));
#else
  CHECK_THAT(*reason, Catch::Contains(library) && Catch::Contains("No such file") && Catch::Contains("SOLVER_NCCL_LIBRARY"));
  CHECK_THAT(error->what(), Catch::Contains(library) && Catch::Contains("No such file") &&
                                Catch::Contains("SOLVER_NCCL_LIBRARY"));
#endif
}

TEST_CASE("A library without NCCL's entry points is reported, not called", "[kernels]") {
#ifndef SOLVER_HAVE_CUDA
  WARN("skipped: this build has no CUDA");
#else
  const ScopedNcclLibrary scoped("libz.so.1");
  const std::optional<std::string> reason = nccl_unavailable_reason();
  REQUIRE(reason.has_value());
  CHECK_THAT(*reason, Catch::Contains("libz.so.1") && Catch::Contains("lacks NCCL's entry point ncclGetVersion"));
#endif
}

TEST_CASE("Bad device lists, sizes and repeat counts are refused before any CUDA or NCCL call", "[kernels]") {
#ifndef SOLVER_HAVE_CUDA
  WARN("skipped: this build has no CUDA");
#else
  // With no loadable NCCL, an argument checked only after loading would fail as Cuda instead.
  const ScopedNcclLibrary scoped("/nonexistent-for-solver-tests/libnccl.so.2");
  const auto require_config_error = [](const std::vector<int>& devices, std::size_t bytes, int repeats,
                                       const std::string& expected_text) {
    const std::optional<solver::Error> error = all_reduce_error(devices, bytes, repeats);
    REQUIRE(error.has_value());
    INFO(error->what());
    CHECK(error->kind() == ErrorKind::Config);
    CHECK_THAT(error->what(), Catch::Contains(expected_text));
  };
  require_config_error({}, kTestBytes, 1, "device list is empty");
  require_config_error({-1}, kTestBytes, 1, "device ordinal -1 is negative");
  require_config_error({0, 1, 0}, kTestBytes, 1, "device 0 is listed twice");
  require_config_error({0}, 0, 1, "0 bytes per rank; expected a positive multiple of 4");
  require_config_error({0}, 6, 1, "6 bytes per rank; expected a positive multiple of 4");
  require_config_error({0}, kTestBytes, 0, "0 repeats; expected at least 1");
  require_config_error(std::vector<int>(257, 0), kTestBytes, 1, "257 devices given; expected at most 256");
#endif
}

TEST_CASE("A one-rank all-reduce on device 0 gives checked sums and no bus traffic", "[kernels][gpu]") {
#ifndef SOLVER_HAVE_CUDA
  WARN("skipped: this build has no CUDA kernels");
#else
  if (solver::test::no_gpu_here()) return;
  if (const auto reason = nccl_unavailable_reason()) {
    WARN("skipped: " << *reason);
    return;
  }
  const std::vector<int> devices{0};
  const AllReduceBandwidth result = measure_all_reduce(devices, kTestBytes, 3);
  WARN("1 rank, " << result.bytes << " bytes: " << result.seconds * 1e3 << " ms, algbw " << result.algbw_gb_per_s
                  << " GB/s, NCCL " << result.nccl_version);
  CHECK(result.ranks == 1);
  CHECK(result.bytes == kTestBytes);
  CHECK(result.seconds > 0.0);
  CHECK(result.algbw_gb_per_s == Approx(kTestBytes / result.seconds / 1e9));
  CHECK(result.busbw_gb_per_s == 0.0);
  CHECK(is_version(result.nccl_version));

  const int absent = solver::kernels::cuda_device_count();
  const std::optional<solver::Error> error = all_reduce_error({absent}, kTestBytes, 1);
  REQUIRE(error.has_value());
  CHECK(error->kind() == ErrorKind::Config);
  CHECK_THAT(error->what(), Catch::Contains("device ordinal " + std::to_string(absent) + " is not visible"));
#endif
}

TEST_CASE("An all-reduce across every visible GPU reports busbw as algbw times 2(n-1)/n", "[kernels][gpu]") {
#ifndef SOLVER_HAVE_CUDA
  WARN("skipped: this build has no CUDA kernels");
#else
  const int count = solver::kernels::cuda_device_count();
  if (count < 2) {
    WARN("skipped: fewer than two CUDA devices on this machine (" << count << ")");
    return;
  }
  if (const auto reason = nccl_unavailable_reason()) {
    WARN("skipped: " << *reason);
    return;
  }
  std::vector<int> devices;
  for (int device = 0; device < count; ++device) devices.push_back(device);
  const AllReduceBandwidth result = measure_all_reduce(devices, kTestBytes, 3);
  WARN(result.ranks << " ranks, " << result.bytes << " bytes: " << result.seconds * 1e3 << " ms, algbw "
                    << result.algbw_gb_per_s << " GB/s, busbw " << result.busbw_gb_per_s << " GB/s, NCCL "
                    << result.nccl_version);
  CHECK(result.ranks == count);
  CHECK(result.seconds > 0.0);
  CHECK(result.algbw_gb_per_s > 0.0);
  CHECK(result.busbw_gb_per_s == Approx(result.algbw_gb_per_s * all_reduce_bus_factor(count)));
  CHECK(is_version(result.nccl_version));
#endif
}
