#include "common/data_order.h"

#include <numeric>
#include <string>
#include <utility>

#include "common/error.h"

namespace solver {
namespace {
constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
}

std::uint64_t splitmix64_mix(std::uint64_t x) {
  std::uint64_t z = x + kGamma;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  return splitmix64_mix(splitmix64_mix(splitmix64_mix(seed) ^ stream) ^ counter);
}

std::vector<std::uint32_t> epoch_permutation(std::uint64_t seed, std::uint64_t epoch, std::uint32_t n) {
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::uint64_t state = derive_seed(seed, kStreamData, epoch);
  for (std::uint32_t i = n; i-- > 1;) {
    // mix(state) is the SplitMix64 output after advancing state by gamma.
    const std::uint64_t draw = splitmix64_mix(state);
    state += kGamma;
    const auto j = static_cast<std::uint32_t>(draw % (static_cast<std::uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

DataOrder::DataOrder(std::uint64_t seed, std::uint32_t sample_count, std::uint32_t batch_size)
    : seed_(seed), sample_count_(sample_count), batch_size_(batch_size) {
  if (batch_size == 0 || batch_size > sample_count)
    throw Error(ErrorKind::Input, "batch size " + std::to_string(batch_size) + " must be between 1 and the " +
                                      std::to_string(sample_count) + " training samples");
}

std::span<const std::uint32_t> DataOrder::batch(std::int64_t step) {
  if (step < 1) throw Error(ErrorKind::Internal, "steps are numbered from 1, got " + std::to_string(step));
  const std::int64_t epoch = (step - 1) / steps_per_epoch();
  const std::int64_t within = (step - 1) % steps_per_epoch();
  if (epoch != cached_epoch_) {
    permutation_ = epoch_permutation(seed_, static_cast<std::uint64_t>(epoch), sample_count_);
    cached_epoch_ = epoch;
  }
  return std::span<const std::uint32_t>(permutation_).subspan(static_cast<size_t>(within) * batch_size_, batch_size_);
}

}  // namespace solver
