// The data order against an independent Python implementation written only from the
// specification in common/data_order.h (tests/python/data_order.py): a verifier in another
// language must get the same batches bit for bit. Plus the properties the trainer relies on.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "common/data_order.h"
#include "tests/test_support.h"

using solver::DataOrder;
using solver::epoch_permutation;

namespace {

nlohmann::json python_answers(const std::vector<std::string>& queries) {
  std::vector<std::string> argv{solver::test::system_python(),
                                (solver::test::source_dir() / "tests/python/data_order.py").string()};
  argv.insert(argv.end(), queries.begin(), queries.end());
  const solver::test::CommandResult result = solver::test::run_command(argv);
  INFO("python output (first 2000 chars): " << result.output.substr(0, 2000));
  REQUIRE(result.exit_code == 0);
  return nlohmann::json::parse(result.output);
}

std::vector<std::uint32_t> as_vector(std::span<const std::uint32_t> span) { return {span.begin(), span.end()}; }

}  // namespace

TEST_CASE("SplitMix64 matches its published first outputs", "[common]") {
  // The reference splitmix64.c seeded with 1234567: next() returns mix(state) and then
  // advances by gamma, so the outputs are mix(1234567), mix(1234567 + gamma), ...
  constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
  CHECK(solver::splitmix64_mix(1234567) == 6457827717110365317ULL);
  CHECK(solver::splitmix64_mix(1234567 + kGamma) == 3203168211198807973ULL);
}

TEST_CASE("Permutations and batches equal the independent Python implementation", "[common]") {
  struct PermutationCase {
    std::uint64_t seed, epoch;
    std::uint32_t n;
  };
  const std::vector<PermutationCase> permutations{
      {20261125, 0, 60000}, {20261125, 1, 60000}, {0, 0, 1}, {0, 0, 2}, {7, 3, 10}, {18446744073709551615ULL, 5, 1000}};
  struct BatchCase {
    std::uint64_t seed;
    std::uint32_t n, batch_size;
    std::int64_t step;
  };
  // n = 1000, B = 64: 15 steps per epoch, 40 samples dropped; steps 15 and 16 straddle epochs.
  const std::vector<BatchCase> batches{
      {20261125, 60000, 64, 1}, {20261125, 60000, 64, 937}, {20261125, 60000, 64, 938},
      {42, 1000, 64, 15},       {42, 1000, 64, 16},         {42, 1000, 64, 31}};
  struct DeriveCase {
    std::uint64_t seed, stream, counter;
  };
  const std::vector<DeriveCase> derivations{{0, 0, 0}, {20261125, solver::kStreamData, 1}, {1, solver::kStreamInit, 0}};

  std::vector<std::string> queries;
  for (const auto& c : permutations) queries.push_back("perm:" + std::to_string(c.seed) + ":" + std::to_string(c.epoch) + ":" + std::to_string(c.n));
  for (const auto& c : batches)
    queries.push_back("batch:" + std::to_string(c.seed) + ":" + std::to_string(c.n) + ":" + std::to_string(c.batch_size) + ":" +
                      std::to_string(c.step));
  for (const auto& c : derivations)
    queries.push_back("derive:" + std::to_string(c.seed) + ":" + std::to_string(c.stream) + ":" + std::to_string(c.counter));
  const nlohmann::json expected = python_answers(queries);

  std::size_t query = 0;
  for (const auto& c : permutations) {
    INFO(queries[query]);
    CHECK(epoch_permutation(c.seed, c.epoch, c.n) == expected[queries[query++]].get<std::vector<std::uint32_t>>());
  }
  for (const auto& c : batches) {
    INFO(queries[query]);
    DataOrder order(c.seed, c.n, c.batch_size);
    CHECK(as_vector(order.batch(c.step)) == expected[queries[query++]].get<std::vector<std::uint32_t>>());
  }
  for (const auto& c : derivations) {
    INFO(queries[query]);
    CHECK(solver::derive_seed(c.seed, c.stream, c.counter) == expected[queries[query++]].get<std::uint64_t>());
  }
}

TEST_CASE("An epoch's order is a permutation, and epochs differ", "[common]") {
  const std::vector<std::uint32_t> first = epoch_permutation(99, 0, 5000);
  std::vector<std::uint32_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::uint32_t> identity(5000);
  std::iota(identity.begin(), identity.end(), 0u);
  CHECK(sorted == identity);
  CHECK(first != identity);
  CHECK(first != epoch_permutation(99, 1, 5000));
  CHECK(first != epoch_permutation(100, 0, 5000));
  CHECK(first == epoch_permutation(99, 0, 5000));
}

TEST_CASE("Steps walk each epoch's permutation in batches and move to the next epoch at its end", "[common]") {
  constexpr std::uint32_t kSamples = 1000;
  constexpr std::uint32_t kBatch = 64;
  DataOrder order(42, kSamples, kBatch);
  REQUIRE(order.steps_per_epoch() == 15);

  const std::vector<std::uint32_t> epoch0 = epoch_permutation(42, 0, kSamples);
  const std::vector<std::uint32_t> epoch1 = epoch_permutation(42, 1, kSamples);
  std::vector<std::uint32_t> walked;
  for (std::int64_t step = 1; step <= 15; ++step) {
    const auto batch = order.batch(step);
    REQUIRE(batch.size() == kBatch);
    walked.insert(walked.end(), batch.begin(), batch.end());
  }
  // The first 15 * 64 samples of epoch 0, in order; the last 40 are dropped.
  CHECK(walked == std::vector<std::uint32_t>(epoch0.begin(), epoch0.begin() + 15 * kBatch));
  CHECK(as_vector(order.batch(16)) == std::vector<std::uint32_t>(epoch1.begin(), epoch1.begin() + kBatch));
  // Going back across the boundary recomputes the earlier epoch.
  CHECK(as_vector(order.batch(15)) == std::vector<std::uint32_t>(epoch0.begin() + 14 * kBatch, epoch0.begin() + 15 * kBatch));
}
