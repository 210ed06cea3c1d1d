// Segment selection and the detection probability (proof/detail/segment_selection.h), on
// hand-made change scores: which segments each rule replays, that the draws are the seed's, and
// that the stated chance of catching a forger is the hypergeometric one, checked against hand
// computations and against an enumeration of every placement a forger can choose.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <set>

#include "common/data_order.h"
#include "common/error.h"
#include "proof/detail/segment_selection.h"

namespace solver::proof::detail {
namespace {

using Catch::Matchers::Contains;

std::vector<std::size_t> segments_chosen_by(const std::vector<SegmentChoice>& chosen, const std::string& rule) {
  std::vector<std::size_t> segments;
  for (const SegmentChoice& choice : chosen)
    if (choice.chosen_by == rule) segments.push_back(choice.segment);
  return segments;
}

VerifyOptions top_q(int q, int random_count) {
  VerifyOptions options;
  options.q = q;
  options.random_count = random_count;
  return options;
}

// Three epochs of three segments; the last segment (8) is its epoch's smallest change.
const std::vector<double> kScores{5, 9, 7, 1, 3, 3, 4, 8, 2};
const std::vector<std::int64_t> kEpochs{0, 0, 0, 1, 1, 1, 2, 2, 2};

TEST_CASE("Top-q replays the highest change scores of each epoch, ties going to the earlier segment", "[proof]") {
  const auto chosen = select_segments(kScores, kEpochs, top_q(2, 0), 1);
  CHECK(segments_chosen_by(chosen, "top-q") == std::vector<std::size_t>{1, 2, 4, 5, 6, 7});
  // Segments 4 and 5 tie at 3: with q = 1 the earlier one is taken.
  CHECK(segments_chosen_by(select_segments(kScores, kEpochs, top_q(1, 0), 1), "top-q") == std::vector<std::size_t>{1, 4, 7});
  // Sorted by segment, whatever rule chose each.
  CHECK(std::ranges::is_sorted(chosen, {}, &SegmentChoice::segment));
}

TEST_CASE("A change score that is not a number ranks as the largest of its epoch", "[proof]") {
  std::vector<double> scores = kScores;
  scores[3] = std::numeric_limits<double>::quiet_NaN();
  CHECK(segments_chosen_by(select_segments(scores, kEpochs, top_q(1, 0), 1), "top-q") == std::vector<std::size_t>{1, 3, 7});
}

TEST_CASE("The last segment is always replayed, and only once", "[proof]") {
  // Not among the top-q of its epoch: chosen as "final".
  const auto with_final = select_segments(kScores, kEpochs, top_q(2, 0), 1);
  CHECK(segments_chosen_by(with_final, "final") == std::vector<std::size_t>{8});
  CHECK(with_final.size() == 7);

  // Among the top-q: chosen once, as "top-q".
  std::vector<double> scores = kScores;
  scores[8] = 100;
  const auto ranked = select_segments(scores, kEpochs, top_q(2, 0), 1);
  CHECK(segments_chosen_by(ranked, "final").empty());
  CHECK(std::ranges::count(ranked, std::size_t{8}, &SegmentChoice::segment) == 1);
  CHECK(ranked.size() == 6);

  // With q = 0, and with the random rule, the final segment is still replayed.
  CHECK(segments_chosen_by(select_segments(kScores, kEpochs, top_q(0, 0), 1), "final") == std::vector<std::size_t>{8});
  VerifyOptions random = top_q(0, 3);
  random.selection = SegmentSelection::Random;
  const auto drawn = select_segments(kScores, kEpochs, random, 1);
  CHECK(segments_chosen_by(drawn, "final") == std::vector<std::size_t>{8});
  CHECK(segments_chosen_by(drawn, "random").size() == 3);
  CHECK(std::ranges::count(drawn, std::size_t{8}, &SegmentChoice::segment) == 1);

  VerifyOptions all;
  all.selection = SegmentSelection::All;
  const auto everything = select_segments(kScores, kEpochs, all, 1);
  CHECK(segments_chosen_by(everything, "all") == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("Random draws follow the verifier seed, are the same for the same seed and never repeat", "[proof]") {
  const VerifyOptions options = top_q(1, 3);
  for (const std::uint64_t seed : {0ull, 7ull, 12345678901ull}) {
    // The rule, written out: among the segments no other rule took (0 2 3 5 6 here), draw d
    // takes rest[derive_seed(seed, kStreamVerifier, d) % rest.size()] and removes it.
    std::vector<std::size_t> rest{0, 2, 3, 5, 6};
    std::vector<std::size_t> expected;
    for (std::uint64_t draw = 0; draw < 3; ++draw) {
      const std::size_t pick = derive_seed(seed, kStreamVerifier, draw) % rest.size();
      expected.push_back(rest[pick]);
      rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(pick));
    }
    std::ranges::sort(expected);
    const auto chosen = select_segments(kScores, kEpochs, options, seed);
    CHECK(segments_chosen_by(chosen, "random") == expected);
    CHECK(segments_chosen_by(select_segments(kScores, kEpochs, options, seed), "random") == expected);
  }
  // Seeds pick different segments: over 50 seeds, more than one set of draws.
  std::set<std::vector<std::size_t>> sets;
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    const auto chosen = select_segments(kScores, kEpochs, options, seed);
    std::set<std::size_t> segments;
    for (const SegmentChoice& choice : chosen) segments.insert(choice.segment);
    CHECK(segments.size() == chosen.size());  // nothing chosen twice
    sets.insert(segments_chosen_by(chosen, "random"));
  }
  CHECK(sets.size() > 1);
  // More draws than segments left: each of the rest once.
  CHECK(segments_chosen_by(select_segments(kScores, kEpochs, top_q(1, 100), 3), "random") ==
        std::vector<std::size_t>{0, 2, 3, 5, 6});
}

TEST_CASE("The catch probability matches hand-computed values", "[proof]") {
  // 8 places to hide, one draw, one faked segment: caught 1 time in 8.
  CHECK(catch_probability(10, 2, 1, 1) == Approx(1.0 / 8));
  // Two draws, two faked: 1 - C(6,2)/C(8,2) = 1 - 15/28.
  CHECK(catch_probability(10, 2, 2, 2) == Approx(13.0 / 28));
  // No draws: a forger outside the always-replayed segments is never caught.
  CHECK(catch_probability(10, 2, 0, 1) == 0.0);
  CHECK_FALSE(std::signbit(catch_probability(10, 2, 0, 1)));  // printed as 0%, not -0%
  CHECK(catch_probability(10, 2, 0, 8) == 0.0);
  // More faked than places to hide: one of them is replayed for sure.
  CHECK(catch_probability(10, 2, 0, 9) == 1.0);
  // Draws that cannot all miss: 7 draws among 8 places, 2 faked.
  CHECK(catch_probability(10, 2, 7, 2) == 1.0);
  CHECK(catch_probability(10, 2, 6, 2) == Approx(1.0 - 1.0 / 28));
  // Nothing faked, nothing to catch.
  CHECK(catch_probability(10, 2, 3, 0) == 0.0);
  // A long run: 1000 segments, 21 always replayed, 50 draws, 10% faked. 1 - prod_{i<50} (1 - 100/(979-i)).
  double miss = 1.0;
  for (int i = 0; i < 50; ++i) miss *= 1.0 - 100.0 / (979.0 - i);
  CHECK(catch_probability(1000, 21, 50, 100) == Approx(1.0 - miss).epsilon(1e-12));
  CHECK_THROWS_AS(catch_probability(10, 11, 1, 1), Error);
}

// How many of the `choose`-element subsets of [0, n) hold an element of `faked` (a bitmask).
std::int64_t subsets_hitting(int n, int choose, unsigned faked) {
  std::int64_t hits = 0;
  for (unsigned subset = 0; subset < (1u << n); ++subset)
    if (std::popcount(subset) == choose && (subset & faked) != 0) ++hits;
  return hits;
}

std::int64_t binomial(int n, int k) {
  std::int64_t result = 1;
  for (int i = 1; i <= k; ++i) result = result * (n - k + i) / i;
  return result;
}

TEST_CASE("The catch probability is the least chance over every placement of the faked segments, by enumeration", "[proof]") {
  // Segments [0, A) are always replayed, the draws are uniform among [A, N): for each placement
  // of f faked segments, the chance that a replay hits one; the forger takes the least.
  for (int n = 1; n <= 8; ++n)
    for (int always = 0; always <= n; ++always)
      for (int draws = 0; draws <= n - always; ++draws)
        for (int faked = 0; faked <= n; ++faked) {
          double least = 1.0;
          for (unsigned placement = 0; placement < (1u << n); ++placement) {
            if (std::popcount(placement) != faked) continue;
            const unsigned always_mask = (1u << always) - 1;
            const double chance =
                (placement & always_mask) != 0
                    ? 1.0
                    : static_cast<double>(subsets_hitting(n - always, draws, placement >> always)) /
                          static_cast<double>(binomial(n - always, draws));
            least = std::min(least, chance);
          }
          INFO("N " << n << ", A " << always << ", r " << draws << ", f " << faked);
          CHECK(catch_probability(n, always, draws, faked) == Approx(least).margin(1e-12));
        }
}

TEST_CASE("A target probability asks for the fewest draws that reach it", "[proof]") {
  // One faked segment among 8 hiding places: r draws catch it with r/8.
  CHECK(draws_for_catch_probability(10, 2, 1, 0.5) == 4);
  CHECK(draws_for_catch_probability(10, 2, 1, 0.51) == 5);
  CHECK(draws_for_catch_probability(10, 2, 1, 1.0) == 8);
  CHECK(draws_for_catch_probability(10, 2, 2, 1.0) == 7);
  CHECK(draws_for_catch_probability(10, 2, 9, 0.99) == 0);  // cannot hide: no draw needed
  for (const double target : {0.5, 0.9, 0.99, 0.999})
    for (const std::int64_t faked : {1, 10, 100}) {
      const std::int64_t draws = draws_for_catch_probability(1000, 21, faked, target);
      INFO("target " << target << ", faked " << faked << ", draws " << draws);
      CHECK(catch_probability(1000, 21, draws, faked) >= target);
      CHECK(catch_probability(1000, 21, draws - 1, faked) < target);
    }

  CHECK(faked_segments_for(0.1, 30) == 3);
  CHECK(faked_segments_for(0.1, 31) == 4);
  CHECK(faked_segments_for(0.01, 5) == 1);
  CHECK(faked_segments_for(0.5, 9) == 5);

  // The selection uses it in place of random_count: 9 segments, 3 top-q + final = 4 always,
  // one faked segment (10% of 9 rounds up to 1) among 5 places: 0.6 needs 3 draws.
  VerifyOptions options = top_q(1, 0);
  options.catch_probability = 0.6;
  const auto chosen = select_segments(kScores, kEpochs, options, 5);
  CHECK(segments_chosen_by(chosen, "random").size() == 3);
  const Detection detection = detection_of(chosen, 9, options);
  CHECK(detection.always_replayed == 4);
  CHECK(detection.random_draws == 3);
  REQUIRE(detection.chances.size() == 4);  // the target's fraction 0.1 is among those always stated
  CHECK(detection.chances[0].faked_segments == 1);
  CHECK(detection.chances[0].probability == Approx(0.6));
}

TEST_CASE("The detection states one faked segment and 1, 10 and 50 percent of them, and the target's fraction", "[proof]") {
  std::vector<double> scores(100, 1.0);
  std::vector<std::int64_t> epochs(100);
  for (int i = 0; i < 100; ++i) epochs[i] = i / 20;
  VerifyOptions options = top_q(2, 5);
  const auto chosen = select_segments(scores, epochs, options, 11);
  const Detection detection = detection_of(chosen, 100, options);
  CHECK(detection.always_replayed == 11);  // 2 in each of 5 epochs, and the final one
  CHECK(detection.random_draws == 5);
  REQUIRE(detection.chances.size() == 4);
  CHECK(detection.chances[0].faked_fraction == 0.0);
  CHECK(detection.chances[1].faked_fraction == 0.01);
  CHECK(detection.chances[1].faked_segments == 1);
  CHECK(detection.chances[2].faked_segments == 10);
  CHECK(detection.chances[3].faked_segments == 50);
  for (const Detection::Chance& chance : detection.chances)
    CHECK(chance.probability == catch_probability(100, 11, 5, chance.faked_segments));
  const nlohmann::json json = detection_to_json(detection);
  CHECK(json.at("always_replayed") == 11);
  CHECK(json.at("one_segment") == detection.chances[0].probability);
  CHECK(json.at("faked_fractions").size() == 3);
  CHECK(json.at("faked_fractions")[2].at("segments") == 50);

  options.catch_probability = 0.9;
  options.faked_fraction = 0.2;
  const Detection targeted = detection_of(select_segments(scores, epochs, options, 11), 100, options);
  REQUIRE(targeted.chances.size() == 5);
  CHECK(targeted.chances[3].faked_fraction == 0.2);
  CHECK(targeted.chances[3].probability >= 0.9);

  VerifyOptions all;
  all.selection = SegmentSelection::All;
  for (const Detection::Chance& chance : detection_of(select_segments(scores, epochs, all, 11), 100, all).chances)
    CHECK(chance.probability == 1.0);
}

TEST_CASE("Selection options out of range are refused, naming the option", "[proof]") {
  VerifyOptions options;
  options.catch_probability = 0.0;
  CHECK_THROWS_WITH(check_selection_options(options), Contains("catch probability must be above 0 and at most 1, got 0"));
  options.catch_probability = 1.5;
  CHECK_THROWS_WITH(check_selection_options(options), Contains("got 1.5"));
  options.catch_probability = 1.0;
  CHECK_NOTHROW(check_selection_options(options));
  options.faked_fraction = 0.0;
  CHECK_THROWS_WITH(check_selection_options(options), Contains("faked fraction must be above 0 and at most 1, got 0"));
  options = {};
  options.q = -1;
  CHECK_THROWS_WITH(check_selection_options(options), Contains("q must be >= 0, got -1"));
}

}  // namespace
}  // namespace solver::proof::detail
