// A training state judged part by part. A checkpoint holds the parameters ("param.*"), the
// buffers ("buffer.*") and the optimizer's slots ("optim.<parameter>.<slot>"); each part (the
// parameters, the buffers, and each slot kind: Adam's exp_avg and exp_avg_sq, SGD's
// momentum_buffer) is measured apart and judged against its own threshold, so that no part can
// hide its change behind a larger one (docs/profiling.md). Tensors that are not float32
// (integer counters) have no distance: they must be equal.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "checkpoint/safetensors.h"
#include "kernels/distance.h"

namespace solver::proof {

// The four metrics as one value each. `cosine` holds 1 - cosine similarity, so that every
// field grows with the difference.
struct MetricValues {
  double l1 = 0.0;
  double l2 = 0.0;
  double linf = 0.0;
  double cosine = 0.0;
};

MetricValues as_spread(const kernels::WeightDistance& distance);
MetricValues largest(const MetricValues& a, const MetricValues& b);

// "param", "buffer", or "optim.<slot>" (the last dotted component of an optimizer tensor's name).
std::string state_part(std::string_view tensor_name);

// Part -> distance over that part's float32 tensors, fed in the order they appear in `after`.
using PartDistances = std::map<std::string, kernels::WeightDistance>;

// Bounds for judging a replay against a claimed state on another runtime, from a profile:
// one set of metrics per part, and one for the per-step losses.
struct StateThresholds {
  std::map<std::string, MetricValues> parts;
  double loss = 0.0;  // bounds |replayed - recorded| / max(|replayed|, |recorded|) of each step's loss

  // The first part whose distance exceeds its threshold, or that has none, as
  // "optim.exp_avg: l2 0.3 > threshold 0.01"; nullopt when every part is within bounds.
  std::optional<std::string> exceeded_by(const PartDistances& distances) const;
};

// The distance of each part between two states of the same layout (see layout_difference).
// Throws Error(Input) naming the tensor when a float32 tensor of `after` is missing from
// `before` or has another shape.
PartDistances part_distances(const checkpoint::Checkpoint& before, const checkpoint::Checkpoint& after);
// Each part's l1, l2 and linf norms (the distance from zero); cosine unused.
std::map<std::string, MetricValues> part_norms(const checkpoint::Checkpoint& state);

// Where `found` departs from the layout of `expected`: the same tensor names in the same order,
// each with the same dtype and shape, and the same metadata keys (values may differ). Returns
// the first departure as text ("tensor optim.fc.weight.exp_avg: shape [3] instead of [4, 3]").
std::optional<std::string> layout_difference(const checkpoint::Checkpoint& expected, const checkpoint::Checkpoint& found);

// The largest safetensors file a state of `layout`'s shape can honestly be: its tensor bytes
// plus a header twice the size of its own encoding (digits of offsets and metadata vary) and 4 KiB.
std::uint64_t safetensors_size_bound(const checkpoint::Checkpoint& layout);

}  // namespace solver::proof
