#include "proof/state_distance.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"

namespace solver::proof {
namespace {

}  // namespace

MetricValues as_spread(const kernels::WeightDistance& distance) {
  // Rounding can put a cosine similarity a hair above 1.
  return {distance.l1, distance.l2, distance.linf, std::max(0.0, 1.0 - distance.cosine)};
}

MetricValues largest(const MetricValues& a, const MetricValues& b) {
  return {std::max(a.l1, b.l1), std::max(a.l2, b.l2), std::max(a.linf, b.linf), std::max(a.cosine, b.cosine)};
}

std::string state_part(std::string_view tensor_name) {
  if (tensor_name.starts_with("optim.")) return "optim." + std::string(tensor_name.substr(tensor_name.rfind('.') + 1));
  return std::string(tensor_name.substr(0, tensor_name.find('.')));
}

std::optional<std::string> StateThresholds::exceeded_by(const PartDistances& distances) const {
  for (const auto& [part, distance] : distances) {
    const auto threshold = parts.find(part);
    if (threshold == parts.end()) return part + ": the profile has no threshold for this part of the state";
    const MetricValues value = as_spread(distance);
    const std::pair<const char*, std::pair<double, double>> checks[] = {{"l1", {value.l1, threshold->second.l1}},
                                                                        {"l2", {value.l2, threshold->second.l2}},
                                                                        {"linf", {value.linf, threshold->second.linf}},
                                                                        {"1-cosine", {value.cosine, threshold->second.cosine}}};
    for (const auto& [metric, check] : checks)
      if (!(check.first <= check.second)) return fmt::format("{}: {} {} > threshold {}", part, metric, check.first, check.second);
  }
  return std::nullopt;
}

PartDistances part_distances(const checkpoint::Checkpoint& before, const checkpoint::Checkpoint& after) {
  std::map<std::string, kernels::DistanceAccumulator> accumulators;
  for (const checkpoint::Tensor& tensor : after.tensors) {
    if (tensor.dtype != checkpoint::DType::F32) continue;
    const checkpoint::Tensor* earlier = before.find(tensor.name);
    if (earlier == nullptr || earlier->dtype != checkpoint::DType::F32)
      throw Error(ErrorKind::Input, "tensor " + tensor.name + " is new: the earlier state has no float32 tensor of that name");
    if (earlier->shape != tensor.shape)
      throw Error(ErrorKind::Input, "tensor " + tensor.name + " changed shape from " + checkpoint::shape_text(earlier->shape) + " to " +
                                        checkpoint::shape_text(tensor.shape));
    accumulators[state_part(tensor.name)].add(earlier->as_f32(), tensor.as_f32());
  }
  PartDistances distances;
  for (const auto& [part, accumulator] : accumulators) distances[part] = accumulator.finish();
  return distances;
}

std::map<std::string, MetricValues> part_norms(const checkpoint::Checkpoint& state) {
  checkpoint::Checkpoint zeros;
  for (const checkpoint::Tensor& tensor : state.tensors) {
    checkpoint::Tensor zero = tensor;
    std::ranges::fill(zero.data, std::byte{0});
    zeros.tensors.push_back(std::move(zero));
  }
  std::map<std::string, MetricValues> norms;
  for (const auto& [part, distance] : part_distances(zeros, state)) norms[part] = {distance.l1, distance.l2, distance.linf, 0.0};
  return norms;
}

std::optional<std::string> layout_difference(const checkpoint::Checkpoint& expected, const checkpoint::Checkpoint& found) {
  const std::size_t common = std::min(expected.tensors.size(), found.tensors.size());
  for (std::size_t i = 0; i < common; ++i) {
    const checkpoint::Tensor& want = expected.tensors[i];
    const checkpoint::Tensor& have = found.tensors[i];
    if (want.name != have.name)
      return "tensor " + std::to_string(i) + " is " + have.name + ", expected " + want.name;
    if (want.dtype != have.dtype)
      return "tensor " + have.name + ": dtype " + std::string(checkpoint::dtype_name(have.dtype)) + " instead of " +
             std::string(checkpoint::dtype_name(want.dtype));
    if (want.shape != have.shape)
      return "tensor " + have.name + ": shape " + checkpoint::shape_text(have.shape) + " instead of " + checkpoint::shape_text(want.shape);
  }
  if (found.tensors.size() > common) return "tensor " + found.tensors[common].name + " is not part of the task's state";
  if (expected.tensors.size() > common) return "tensor " + expected.tensors[common].name + " is missing";
  for (const auto& [key, value] : found.metadata)
    if (!expected.metadata.contains(key)) return "metadata entry " + key + " is not part of the task's state";
  for (const auto& [key, value] : expected.metadata)
    if (!found.metadata.contains(key)) return "metadata entry " + key + " is missing";
  return std::nullopt;
}

std::uint64_t safetensors_size_bound(const checkpoint::Checkpoint& layout) {
  // The same names, dtypes and metadata without the data (a copy of the state would double it).
  checkpoint::Checkpoint header_only;
  header_only.metadata = layout.metadata;
  std::uint64_t data_bytes = 0;
  for (const checkpoint::Tensor& tensor : layout.tensors) {
    data_bytes += tensor.data.size();
    header_only.tensors.push_back({tensor.name, tensor.dtype, {0}, {}});
  }
  const std::uint64_t header_bytes = checkpoint::encode_safetensors(header_only).size();
  return data_bytes + 2 * header_bytes + 4096;
}

}  // namespace solver::proof
