// Which tensors of a checkpoint are the model's parameters, and the distance between two
// parameter sets: the rule behind the manifest's "update" distances. The bundle writer records
// them with this function and the verifier recomputes them with it and demands exact
// equality, so both must take the same tensors in the same order. Invariant: parameters are the F32 tensors named "param.*", fed to
// the accumulator in the order they appear in the later state; changing either rule changes
// the bits of every recorded distance.
#pragma once

#include <span>
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

}  // namespace solver::proof
