// Changes the fake NVML's GPUs while a test runs (tests/hardware/fake_nvml.cpp): writes its
// state file and names it in $SOLVER_FAKE_NVML_STATE until destroyed, when the fake's canned
// GPUs come back.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "common/files.h"

namespace solver::test {

inline constexpr const char* kFakeGpu0Uuid = "GPU-11111111-2222-3333-4444-555555555555";

// Fake GPU 0 as a test sets it: healthy and cool unless told otherwise.
struct FakeGpu0 {
  int temperature_c = 41;
  std::uint64_t throttle_reasons = 0;
  std::uint64_t ecc_uncorrected = 0;
  bool row_remap_pending = false;  // failing memory rows wait for a GPU reset to be remapped
  bool row_remap_failed = false;   // no spare rows were left to remap one
  int gpu_count = 2;  // fewer: the GPUs past it fell off the bus
  std::vector<unsigned> processes;           // PIDs with a compute context on it
  std::vector<unsigned> graphics_processes;  // PIDs with a graphics context on it
};

class FakeNvmlState {
 public:
  explicit FakeNvmlState(std::filesystem::path file) : file_(std::move(file)) {
    set({});
    ::setenv("SOLVER_FAKE_NVML_STATE", file_.c_str(), 1);
  }
  ~FakeNvmlState() { ::unsetenv("SOLVER_FAKE_NVML_STATE"); }
  FakeNvmlState(const FakeNvmlState&) = delete;
  FakeNvmlState& operator=(const FakeNvmlState&) = delete;

  // Atomic: the fake, read from another thread, never sees half a file.
  void set(const FakeGpu0& gpu) {
    write_file_durably(file_, fmt::format("gpu_count {}\ntemperature_c {}\nthrottle_reasons {:#x}\necc_uncorrected {}\n"
                                          "processes {}\ngraphics_processes {}\nrow_remap_pending {:d}\n"
                                          "row_remap_failed {:d}\n",
                                          gpu.gpu_count, gpu.temperature_c, gpu.throttle_reasons, gpu.ecc_uncorrected,
                                          fmt::join(gpu.processes, " "), fmt::join(gpu.graphics_processes, " "),
                                          gpu.row_remap_pending, gpu.row_remap_failed));
  }

 private:
  std::filesystem::path file_;
};

}  // namespace solver::test
