// What counts as "the same" when a replay is compared with a bundle: shared by verify, profile
// and dispute so that they judge alike.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "common/records.h"

namespace solver::proof::detail {

// Same build, device and settings (the shard count among them): a replay must then reproduce
// the bundle bit for bit.
inline bool same_runtime(const RuntimeInfo& a, const RuntimeInfo& b) {
  return a.solver_version == b.solver_version && a.torch_version == b.torch_version && a.device == b.device &&
         a.threads == b.threads && a.deterministic == b.deterministic && a.shards == b.shards;
}

// Relative tolerances. Learning rates: the schedule calls libm (cos, pow), whose last bit may
// differ between a solver's and a verifier's machines; a forged lr that close changes nothing.
// Losses across runtimes: reductions in another order move a float loss by a few ulps.
inline constexpr double kLearningRateTolerance = 1e-9;
inline constexpr double kCrossRuntimeLossTolerance = 1e-3;
// A test accuracy measured on another (covered) runtime: predictions at a near tie may flip;
// one percentage point is dozens of flips on a test set of thousands.
inline constexpr double kCrossRuntimeAccuracyTolerance = 0.01;

// A recorded learning rate agrees with the schedule's `expected` one within that tolerance,
// relative to the larger of it and the task's base rate (a warm-up starts near zero).
inline bool lr_agrees(double recorded, double expected, double base_lr) {
  return std::abs(recorded - expected) <= kLearningRateTolerance * std::max(std::abs(expected), base_lr);
}

// Within `relative_tolerance` of the larger; bit for bit when it is 0.
inline bool losses_agree(float recorded, float replayed, double relative_tolerance) {
  if (relative_tolerance == 0.0) return std::bit_cast<std::uint32_t>(recorded) == std::bit_cast<std::uint32_t>(replayed);
  const double scale = std::max(std::abs(static_cast<double>(recorded)), std::abs(static_cast<double>(replayed)));
  return std::abs(static_cast<double>(recorded) - static_cast<double>(replayed)) <= relative_tolerance * scale;
}

}  // namespace solver::proof::detail
