// The guard of the [gpu] tests: they compare CUDA kernels with their CPU twins where there is a
// GPU, and pass with a warning where there is none (CI, most machines).
#pragma once

#include <catch2/catch.hpp>

#include "kernels/distance.h"

namespace solver::test {

// True, after a WARN saying why, when this build has no CUDA kernels or this machine no CUDA device.
inline bool no_gpu_here() {
  if (kernels::cuda_available()) return false;
  WARN("skipped: no CUDA device on this machine, or no CUDA kernels in this build");
  return true;
}

}  // namespace solver::test
