// Which tensors of a checkpoint are the model's parameters, the distance between two parameter
// sets (the rule behind the manifest's "update" distances), and where two whole states first
// differ. The bundle writer records distances with this code and the verifier recomputes them
// with it and demands exact equality, so both must take the same tensors in the same order.
// Invariant: parameters are the F32 tensors named "param.*", fed to the accumulator in the
// order they appear in the later state; changing either rule changes the bits of every
// recorded distance.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "checkpoint/safetensors.h"
#include "kernels/distance.h"

namespace solver::proof {

inline constexpr std::string_view kParameterPrefix = "param.";

bool is_parameter(const checkpoint::Tensor& tensor);

// l1, l2, linf and cosine between the parameters of `before` and `after` (other tensors are
// ignored). Throws Error(Input) naming the tensor when the two parameter sets differ in names,
// or a parameter in shape.
kernels::WeightDistance parameter_distance(std::span<const checkpoint::Tensor> before,
                                           std::span<const checkpoint::Tensor> after);

// Where two training states first differ, in any bit: a tensor of `expected` that `found`
// lacks or holds other bytes of ("param.w", "param.w (missing)"), a tensor only `found` has
// ("... (unexpected)"), or a metadata key (metadata = true). nullopt when they are bitwise equal.
struct StateDifference {
  std::string name;
  bool metadata = false;
};
std::optional<StateDifference> first_difference(const checkpoint::Checkpoint& expected, const checkpoint::Checkpoint& found);

}  // namespace solver::proof
