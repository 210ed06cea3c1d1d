// See parameters.h: one definition of "the parameters" and of their distance for the bundle
// writer, the verifier and anyone recomputing a manifest.
#include "proof/parameters.h"

#include <algorithm>
#include <map>
#include <string>

#include "common/error.h"

namespace solver::proof {
namespace {

}  // namespace

bool is_parameter(const checkpoint::Tensor& tensor) {
  return tensor.dtype == checkpoint::DType::F32 && tensor.name.starts_with(kParameterPrefix);
}

kernels::WeightDistance parameter_distance(std::span<const checkpoint::Tensor> before,
                                           std::span<const checkpoint::Tensor> after) {
  std::map<std::string_view, const checkpoint::Tensor*> before_by_name;
  for (const checkpoint::Tensor& tensor : before)
    if (is_parameter(tensor)) before_by_name.emplace(tensor.name, &tensor);

  kernels::DistanceAccumulator accumulator;
  std::size_t matched = 0;
  for (const checkpoint::Tensor& tensor : after) {
    if (!is_parameter(tensor)) continue;
    const auto found = before_by_name.find(tensor.name);
    if (found == before_by_name.end())
      throw Error(ErrorKind::Input, "parameter " + tensor.name + " is new: the earlier state has no F32 tensor of that name");
    const checkpoint::Tensor& earlier = *found->second;
    if (earlier.shape != tensor.shape)
      throw Error(ErrorKind::Input, "parameter " + tensor.name + " changed shape from " + checkpoint::shape_text(earlier.shape) +
                                        " to " + checkpoint::shape_text(tensor.shape));
    accumulator.add(earlier.as_f32(), tensor.as_f32());
    ++matched;
  }
  if (matched != before_by_name.size())
    for (const auto& [name, tensor] : before_by_name) {
      const bool kept = std::any_of(after.begin(), after.end(), [&](const checkpoint::Tensor& candidate) {
        return is_parameter(candidate) && candidate.name == name;
      });
      if (!kept) throw Error(ErrorKind::Input, "parameter " + std::string(name) + " is missing from the later state");
    }
  return accumulator.finish();
}

std::optional<StateDifference> first_difference(const checkpoint::Checkpoint& expected, const checkpoint::Checkpoint& found) {
  for (const checkpoint::Tensor& tensor : expected.tensors) {
    const checkpoint::Tensor* other = found.find(tensor.name);
    if (other == nullptr) return StateDifference{tensor.name + " (missing)"};
    if (other->dtype != tensor.dtype || other->shape != tensor.shape || other->data != tensor.data)
      return StateDifference{tensor.name};
  }
  for (const checkpoint::Tensor& tensor : found.tensors)
    if (expected.find(tensor.name) == nullptr) return StateDifference{tensor.name + " (unexpected)"};
  if (expected.metadata != found.metadata)
    for (const auto& [key, value] : expected.metadata)
      if (!found.metadata.contains(key) || found.metadata.at(key) != value) return StateDifference{key, true};
  for (const auto& [key, value] : found.metadata)
    if (!expected.metadata.contains(key)) return StateDifference{key, true};
  return std::nullopt;
}

}  // namespace solver::proof
