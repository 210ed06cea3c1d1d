// The raw sums a weight distance is computed from, shared by the CPU twin and the CUDA
// launcher so that both turn sums into l2 and cosine with the same final arithmetic.
// Plain C++17 (no std::span): distance.cu includes it through distance.cuh.
#pragma once

namespace solver::kernels {

struct WeightDistance;

// Each sum is over all elements in the lane order of distance.h; d = double(a) - double(b).
struct DistanceSums {
  double abs_diff = 0.0;      // sum |d|
  double squared_diff = 0.0;  // sum d*d
  double dot = 0.0;           // sum a*b
  double a_squared = 0.0;     // sum a*a
  double b_squared = 0.0;     // sum b*b
  double linf = 0.0;          // max |d|
};

// l2 = sqrt(squared_diff); cosine = dot / sqrt(a_squared * b_squared), with the zero-vector
// conventions of WeightDistance. Defined in distance_cpu.cpp.
WeightDistance weight_distance_from_sums(const DistanceSums& sums);

}  // namespace solver::kernels
