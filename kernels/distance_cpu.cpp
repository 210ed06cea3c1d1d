// The CPU twin of the weight-distance kernel. It defines the result bit for bit: the lane
// assignment, the per-lane order and the pairwise tree below are the specification that
// distance.cu reproduces. Compiled with -ffp-contract=off: a fused multiply-add would round
// once instead of twice and the kernel (built with --fmad=false) would no longer match.
#include "kernels/distance.h"

#include <cmath>
#include <string>

#include "common/error.h"
#include "kernels/detail/distance_sums.h"

namespace solver::kernels {
namespace {

// Quantities kept per lane, each in its own block of kDistanceLanes doubles.
enum Quantity : std::size_t { kAbsDiff, kSquaredDiff, kDot, kASquared, kBSquared, kQuantityCount };

static_assert((kDistanceLanes & (kDistanceLanes - 1)) == 0, "the pairwise tree needs a power-of-two lane count");

// Sums one quantity's lanes: lane i += lane i+h for h = L/2, L/4, ..., 1; the total ends in lane 0.
double tree_sum(std::vector<double> lanes) {
  for (std::size_t half = kDistanceLanes / 2; half >= 1; half /= 2)
    for (std::size_t lane = 0; lane < half; ++lane) lanes[lane] += lanes[lane + half];
  return lanes[0];
}

}  // namespace

WeightDistance weight_distance_from_sums(const DistanceSums& sums) {
  WeightDistance distance;
  distance.l1 = sums.abs_diff;
  distance.l2 = std::sqrt(sums.squared_diff);
  distance.linf = sums.linf;
  // sqrt(a2 * b2) rather than sqrt(a2) * sqrt(b2): for identical inputs it gives exactly a2,
  // so cosine is exactly 1. Float inputs cannot make the product overflow or underflow.
  const bool a_zero = sums.a_squared == 0.0;
  const bool b_zero = sums.b_squared == 0.0;
  if (a_zero && b_zero) {
    distance.cosine = 1.0;
  } else if (a_zero || b_zero) {
    distance.cosine = 0.0;
  } else {
    distance.cosine = sums.dot / std::sqrt(sums.a_squared * sums.b_squared);
  }
  return distance;
}

DistanceAccumulator::DistanceAccumulator() : lanes_(kQuantityCount * kDistanceLanes, 0.0) {}

void DistanceAccumulator::add(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size())
    throw Error(ErrorKind::Input, "weight distance: the two weight spans must have the same size, got " +
                                      std::to_string(a.size()) + " and " + std::to_string(b.size()));
  double* abs_diff = lanes_.data() + kAbsDiff * kDistanceLanes;
  double* squared_diff = lanes_.data() + kSquaredDiff * kDistanceLanes;
  double* dot = lanes_.data() + kDot * kDistanceLanes;
  double* a_squared = lanes_.data() + kASquared * kDistanceLanes;
  double* b_squared = lanes_.data() + kBSquared * kDistanceLanes;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::size_t lane = static_cast<std::size_t>((next_index_ + i) % kDistanceLanes);
    const double x = a[i];
    const double y = b[i];
    const double d = x - y;
    const double magnitude = std::fabs(d);
    abs_diff[lane] += magnitude;
    squared_diff[lane] += d * d;
    dot[lane] += x * y;
    a_squared[lane] += x * x;
    b_squared[lane] += y * y;
    // Written so a NaN never becomes the max, the same comparison the kernel makes.
    if (linf_ < magnitude) linf_ = magnitude;
  }
  next_index_ += a.size();
}

WeightDistance DistanceAccumulator::finish() const {
  const auto quantity = [this](Quantity which) {
    const auto begin = lanes_.begin() + static_cast<std::ptrdiff_t>(which * kDistanceLanes);
    return tree_sum(std::vector<double>(begin, begin + static_cast<std::ptrdiff_t>(kDistanceLanes)));
  };
  DistanceSums sums;
  sums.abs_diff = quantity(kAbsDiff);
  sums.squared_diff = quantity(kSquaredDiff);
  sums.dot = quantity(kDot);
  sums.a_squared = quantity(kASquared);
  sums.b_squared = quantity(kBSquared);
  sums.linf = linf_;
  return weight_distance_from_sums(sums);
}

WeightDistance weight_distance_cpu(std::span<const float> a, std::span<const float> b) {
  DistanceAccumulator accumulator;
  accumulator.add(a, b);
  return accumulator.finish();
}

}  // namespace solver::kernels
