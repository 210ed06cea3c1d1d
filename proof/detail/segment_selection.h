// Which segments a verifier replays, and the chance that they catch a forger who faked some
// (docs/bundle-format.md, "Verifying"). The forger wrote every file, so it can compute any
// ranking of them and avoid what a ranking always replays; only the verifier's random draws,
// from a seed the forger cannot know, are a risk it cannot dodge.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proof/verify.h"

namespace solver::proof::detail {

struct SegmentChoice {
  std::size_t segment = 0;
  std::string chosen_by;  // "top-q", "final", "random" or "all"
};

// Throws Error(Usage) naming the first selection option out of range.
void check_selection_options(const VerifyOptions& options);

// change_scores[i]: how much the training state changed over segment i (higher = more
// suspicious; NaN ranks as the most suspicious); epoch_of[i]: the epoch segment i belongs to.
//   TopQ    per epoch the options.q highest scores (ties: the earlier segment), the last segment
//           ("final", unless top-q took it), and random draws among the rest;
//   Random  the last segment and random draws among the rest;
//   All     every segment.
// The draws: options.random_count of them, or with options.catch_probability the fewest that
// reach it (draws_for_catch_probability); draw d picks rest[derive_seed(seed, kStreamVerifier, d)
// % rest.size()] and removes it. Sorted by segment.
std::vector<SegmentChoice> select_segments(std::span<const double> change_scores, std::span<const std::int64_t> epoch_of,
                                           const VerifyOptions& options, std::uint64_t random_seed);

// The chance that the replays catch a forger who faked `faked` of `segments_total` segments and
// put them where the verifier is least likely to look: outside the `always_replayed` ones, among
// which `random_draws` are drawn without replacement. 1 - C(N-A-f, r) / C(N-A, r); 1 when
// f > N-A (a faked segment must then be among the always-replayed ones). Assumes a replayed
// faked segment is caught.
double catch_probability(std::int64_t segments_total, std::int64_t always_replayed, std::int64_t random_draws,
                         std::int64_t faked);

// The fewest draws (at most N-A) for which catch_probability reaches `target` in (0, 1].
std::int64_t draws_for_catch_probability(std::int64_t segments_total, std::int64_t always_replayed, std::int64_t faked,
                                         double target);

// ceil(fraction * segments_total), at least 1: the segments a forger faking that share of the
// training fakes.
std::int64_t faked_segments_for(double fraction, std::int64_t segments_total);

// What the choice of segments catches: one faked segment, then 1%, 10% and 50% of them (and
// options.faked_fraction when a target probability was asked for).
Detection detection_of(std::span<const SegmentChoice> chosen, std::int64_t segments_total, const VerifyOptions& options);

// {"always_replayed": A, "random_draws": r, "one_segment": p,
//  "faked_fractions": [{"fraction": 0.01, "segments": f, "probability": p}, ...]}
nlohmann::json detection_to_json(const Detection& detection);

}  // namespace solver::proof::detail
