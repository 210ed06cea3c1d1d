// `solver verify`: check a bundle and print the verdict as a table (or JSON).
// Exit status: 0 accepted, 1 rejected, 2 could not verify (the bundle is unreadable), 78 the
// --profile file is unusable or was measured for another task.
#include <fmt/format.h>

#include <cstdio>

#include "agent/commands.h"
#include "agent/replayer.h"
#include "common/task.h"
#include "proof/profile.h"
#include "proof/verify.h"

namespace solver::agent {
namespace {

proof::SegmentSelection parse_selection(const std::string& name) {
  if (name == "all") return proof::SegmentSelection::All;
  if (name == "random") return proof::SegmentSelection::Random;
  return proof::SegmentSelection::TopQ;
}

void print_table(const proof::Verdict& verdict) {
  if (!verdict.segments.empty()) {
    std::printf("%-16s %-7s %12s %12s %10s %11s %s\n", "segment", "chosen", "l2", "linf", "cosine", "threshold", "result");
    for (const auto& segment : verdict.segments) {
      const std::string steps = fmt::format("steps {}-{}", segment.first_step, segment.last_step);
      const std::string threshold = segment.threshold == 0.0 ? "bitwise" : fmt::format("{:.3g}", segment.threshold);
      std::printf("%-16s %-7s %12.4g %12.4g %10.6f %11s %s\n", steps.c_str(), segment.chosen_by.c_str(), segment.distance.l2,
                  segment.distance.linf, segment.distance.cosine, threshold.c_str(), segment.passed ? "pass" : "FAIL");
    }
    std::printf("replayed %zu of %lld segments (%.1f%% of training) in %.1f s (training took %.1f s); verifier seed %llu; %s\n",
                verdict.segments.size(), static_cast<long long>(verdict.segments_total), verdict.replayed_fraction * 100.0,
                verdict.replay_seconds, verdict.train_seconds, static_cast<unsigned long long>(verdict.random_seed),
                verdict.same_runtime ? "same build and device: bitwise equality required"
                                     : "different build or device: distance threshold applies");
  } else {
    // Said even when nothing was replayed, so that the cost of a verdict is always visible.
    std::printf("replayed 0 of %lld segments%s\n", static_cast<long long>(verdict.segments_total),
                verdict.accepted ? "" : ": rejected by the checks that need no training");
  }
  if (verdict.accepted) {
    std::printf("verdict: ACCEPTED\n");
    return;
  }
  std::printf("verdict: REJECTED\n");
  for (const auto& failure : verdict.failures) std::printf("  - %s\n", failure.c_str());
}

}  // namespace

int verify_command(const VerifyCommandOptions& options) {
  proof::VerifyOptions verify;
  verify.selection = parse_selection(options.segments);
  verify.q = options.q;
  verify.random_count = options.random_count;
  verify.random_seed = options.random_seed;
  verify.delta = options.delta;
  if (options.profile_file) {
    const proof::ProfileThresholds profile = proof::read_profile_thresholds(*options.profile_file);
    proof::check_profile_applies(profile, *options.profile_file, options.bundle_dir);
    verify.delta = profile.thresholds.l2;
    verify.delta_l1 = profile.thresholds.l1;
    verify.delta_linf = profile.thresholds.linf;
    verify.delta_cosine = profile.thresholds.cosine;
  }
  verify.expected_public_key = options.expected_key;
  if (options.task_file) verify.expected_task_sha256 = task_sha256(load_task_file(*options.task_file));

  const proof::Verdict verdict = proof::verify_bundle(options.bundle_dir, verify, trainer_replayer_factory(options.device));
  if (options.json) {
    std::printf("%s\n", verdict.to_json().dump(2).c_str());
  } else {
    print_table(verdict);
  }
  return verdict.accepted ? kExitOk : kExitRejected;
}

}  // namespace solver::agent
