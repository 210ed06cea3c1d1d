// The data order: which training samples make up each step's batch, recomputable by any
// verifier in any language from the task seed alone. The algorithm is specified in
// docs/bundle-format.md ("Seeds and data order"); changing any constant here breaks every
// bundle ever written, so a change needs a new kDataOrderGenerator name.
//
//   mix(x)        = the SplitMix64 output for state x: z = x + 0x9E3779B97F4A7C15;
//                   z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
//                   return z ^ z>>31                                   (all mod 2^64)
//   derive_seed(seed, stream, counter) = mix(mix(mix(seed) ^ stream) ^ counter)
//   epoch e order = Fisher-Yates over [0, n): state = derive_seed(seed, kStreamData, e);
//                   for i = n-1 down to 1: j = mix(state) % (i+1); state += 0x9E3779B97F4A7C15;
//                   swap(a[i], a[j])        (mix(state), mix(state+gamma)... is SplitMix64's stream)
//   step s (1-based) = epoch (s-1) / (n / B), batch (s-1) % (n / B): a[b*B, (b+1)*B)
//                   (the last partial batch of each epoch is dropped)
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace solver {

inline constexpr std::string_view kDataOrderGenerator = "splitmix64-fisher-yates/1";

// Independent streams derived from the one task seed.
inline constexpr std::uint64_t kStreamInit = 1;      // model initialisation
inline constexpr std::uint64_t kStreamData = 2;      // data order, counter = epoch
inline constexpr std::uint64_t kStreamStep = 3;      // per-step RNG (dropout...), counter = step
inline constexpr std::uint64_t kStreamVerifier = 4;  // unused by solvers; verifiers' own draws
// Data parallel: shard s > 0 of step t seeds with derive_seed(step t's seed, kStreamShard, s).
inline constexpr std::uint64_t kStreamShard = 5;

std::uint64_t splitmix64_mix(std::uint64_t x);
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter);

// The sample order of one epoch: a permutation of [0, n).
std::vector<std::uint32_t> epoch_permutation(std::uint64_t seed, std::uint64_t epoch, std::uint32_t n);

// Batches of a task's training run, by 1-based step. Caches the current epoch's permutation,
// so walking steps in order costs one shuffle per epoch. Not thread-safe.
class DataOrder {
 public:
  DataOrder(std::uint64_t seed, std::uint32_t sample_count, std::uint32_t batch_size);

  std::int64_t steps_per_epoch() const { return sample_count_ / batch_size_; }
  // The sample indices of step `step` (>= 1). The span lives until the next call.
  std::span<const std::uint32_t> batch(std::int64_t step);

 private:
  std::uint64_t seed_;
  std::uint32_t sample_count_;
  std::uint32_t batch_size_;
  std::int64_t cached_epoch_ = -1;
  std::vector<std::uint32_t> permutation_;
};

}  // namespace solver
