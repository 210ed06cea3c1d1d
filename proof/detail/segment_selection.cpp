#include "proof/detail/segment_selection.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "common/data_order.h"
#include "common/error.h"

namespace solver::proof::detail {
namespace {

// The faked fractions every verdict states, besides one faked segment.
constexpr double kStatedFractions[] = {0.01, 0.1, 0.5};

bool is_probability(double value) { return value > 0.0 && value <= 1.0; }

}  // namespace

void check_selection_options(const VerifyOptions& options) {
  if (options.q < 0) throw Error(ErrorKind::Usage, "verify: q must be >= 0, got " + std::to_string(options.q));
  if (options.random_count < 0)
    throw Error(ErrorKind::Usage, "verify: the random segment count must be >= 0, got " + std::to_string(options.random_count));
  if (options.catch_probability && !is_probability(*options.catch_probability))
    throw Error(ErrorKind::Usage,
                fmt::format("verify: the catch probability must be above 0 and at most 1, got {}", *options.catch_probability));
  if (!is_probability(options.faked_fraction))
    throw Error(ErrorKind::Usage,
                fmt::format("verify: the faked fraction must be above 0 and at most 1, got {}", options.faked_fraction));
}

std::vector<SegmentChoice> select_segments(std::span<const double> change_scores, std::span<const std::int64_t> epoch_of,
                                           const VerifyOptions& options, std::uint64_t random_seed) {
  if (change_scores.size() != epoch_of.size())
    throw Error(ErrorKind::Internal, fmt::format("select_segments: {} change scores for {} epochs", change_scores.size(),
                                                 epoch_of.size()));
  const std::size_t count = change_scores.size();
  std::vector<SegmentChoice> chosen;
  if (count == 0) return chosen;
  if (options.selection == SegmentSelection::All) {
    for (std::size_t i = 0; i < count; ++i) chosen.push_back({i, "all"});
    return chosen;
  }
  std::vector<bool> taken(count, false);
  if (options.selection == SegmentSelection::TopQ) {
    // Per epoch rather than over the whole run: early epochs' changes dwarf later ones, so a
    // global top-q would only ever replay the start of training.
    // A NaN score ranks first: a state that cannot be measured is the most suspicious.
    auto rank_key = [&](std::size_t segment) {
      const double score = change_scores[segment];
      return std::isnan(score) ? std::numeric_limits<double>::infinity() : score;
    };
    std::map<std::int64_t, std::vector<std::size_t>> by_epoch;
    for (std::size_t i = 0; i < count; ++i) by_epoch[epoch_of[i]].push_back(i);
    for (auto& [epoch, members] : by_epoch) {
      std::ranges::stable_sort(members, std::ranges::greater{}, rank_key);
      const std::size_t top = std::min(members.size(), static_cast<std::size_t>(options.q));
      for (std::size_t rank = 0; rank < top; ++rank) {
        chosen.push_back({members[rank], "top-q"});
        taken[members[rank]] = true;
      }
    }
  }
  // The final model is what the submitter receives: it is always replayed.
  if (!taken[count - 1]) {
    chosen.push_back({count - 1, "final"});
    taken[count - 1] = true;
  }
  std::vector<std::size_t> rest;
  for (std::size_t i = 0; i < count; ++i)
    if (!taken[i]) rest.push_back(i);

  const auto segments_total = static_cast<std::int64_t>(count);
  const auto always_replayed = static_cast<std::int64_t>(chosen.size());
  const std::int64_t wanted =
      options.catch_probability
          ? draws_for_catch_probability(segments_total, always_replayed,
                                        faked_segments_for(options.faked_fraction, segments_total), *options.catch_probability)
          : options.random_count;
  // Drawn after the bundle was committed, from the verifier's seed: a solver cannot know
  // which segments will be replayed, and the same seed picks the same segments again.
  const std::size_t draws = std::min(rest.size(), static_cast<std::size_t>(std::max<std::int64_t>(wanted, 0)));
  for (std::size_t draw = 0; draw < draws; ++draw) {
    const std::size_t pick = derive_seed(random_seed, kStreamVerifier, draw) % rest.size();
    chosen.push_back({rest[pick], "random"});
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(pick));
  }
  std::ranges::sort(chosen, {}, &SegmentChoice::segment);
  return chosen;
}

double catch_probability(std::int64_t segments_total, std::int64_t always_replayed, std::int64_t random_draws,
                         std::int64_t faked) {
  if (segments_total < 0 || always_replayed < 0 || always_replayed > segments_total || random_draws < 0 || faked < 0)
    throw Error(ErrorKind::Internal, fmt::format("catch_probability: N {}, A {}, r {}, f {} out of range", segments_total,
                                                 always_replayed, random_draws, faked));
  if (faked == 0) return 0.0;
  const std::int64_t hideouts = segments_total - always_replayed;  // where a forger can fake unseen
  if (faked > hideouts) return 1.0;
  const std::int64_t draws = std::min(random_draws, hideouts);
  if (draws == 0) return 0.0;
  if (draws > hideouts - faked) return 1.0;  // the draws cannot all miss
  // C(M-f, r) / C(M, r) = prod_{i<r} (1 - f/(M-i)) = prod_{j<f} (1 - r/(M-j)): the shorter
  // product, summed as logs so that neither a tiny miss chance nor a tiny catch chance rounds away.
  const std::int64_t terms = std::min(draws, faked);
  const std::int64_t other = std::max(draws, faked);
  double log_miss = 0.0;
  for (std::int64_t i = 0; i < terms; ++i)
    log_miss += std::log1p(-static_cast<double>(other) / static_cast<double>(hideouts - i));
  return -std::expm1(log_miss);
}

std::int64_t draws_for_catch_probability(std::int64_t segments_total, std::int64_t always_replayed, std::int64_t faked,
                                         double target) {
  if (!is_probability(target))
    throw Error(ErrorKind::Internal, fmt::format("draws_for_catch_probability: target {} is not in (0, 1]", target));
  // The chance grows with the draws and is 1 once they cover every hideout: bisect.
  std::int64_t low = 0;
  std::int64_t high = std::max<std::int64_t>(segments_total - always_replayed, 0);
  while (low < high) {
    const std::int64_t middle = low + (high - low) / 2;
    if (catch_probability(segments_total, always_replayed, middle, faked) >= target)
      high = middle;
    else
      low = middle + 1;
  }
  return low;
}

std::int64_t faked_segments_for(double fraction, std::int64_t segments_total) {
  // ceil, except that a product a rounding error above an integer (0.1 * 30) stays that integer.
  const double exact = fraction * static_cast<double>(segments_total);
  const double nearest = std::round(exact);
  const double faked = std::abs(exact - nearest) <= 1e-9 * std::max(1.0, exact) ? nearest : std::ceil(exact);
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(faked));
}

Detection detection_of(std::span<const SegmentChoice> chosen, std::int64_t segments_total, const VerifyOptions& options) {
  Detection detection;
  for (const SegmentChoice& choice : chosen)
    (choice.chosen_by == "random" ? detection.random_draws : detection.always_replayed) += 1;
  auto chance = [&](double fraction, std::int64_t faked) {
    return Detection::Chance{fraction, faked,
                             catch_probability(segments_total, detection.always_replayed, detection.random_draws, faked)};
  };
  detection.chances.push_back(chance(0.0, 1));
  std::vector<double> fractions(std::begin(kStatedFractions), std::end(kStatedFractions));
  if (options.catch_probability && std::ranges::find(fractions, options.faked_fraction) == fractions.end())
    fractions.push_back(options.faked_fraction);
  std::ranges::sort(fractions);
  for (const double fraction : fractions) detection.chances.push_back(chance(fraction, faked_segments_for(fraction, segments_total)));
  return detection;
}

nlohmann::json detection_to_json(const Detection& detection) {
  nlohmann::json fractions = nlohmann::json::array();
  double one_segment = 0.0;
  for (const Detection::Chance& chance : detection.chances) {
    if (chance.faked_fraction == 0.0)
      one_segment = chance.probability;
    else
      fractions.push_back(
          {{"fraction", chance.faked_fraction}, {"segments", chance.faked_segments}, {"probability", chance.probability}});
  }
  return {{"always_replayed", detection.always_replayed},
          {"random_draws", detection.random_draws},
          {"one_segment", one_segment},
          {"faked_fractions", std::move(fractions)}};
}

}  // namespace solver::proof::detail
