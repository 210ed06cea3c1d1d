// `solver verify`: check a bundle and print the verdict as a table (or JSON).
// Exit status: 0 accepted, 1 rejected, 2 could not verify (the bundle is unreadable), 3 not
// judged here (the bundle's runtime is neither this verifier's nor covered by a --profile), 78
// a --profile file is unusable or was measured for another task.
#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/exit_status.h"
#include "agent/replayer.h"
#include "cli/command.h"
#include "common/task.h"
#include "proof/profile.h"
#include "proof/verify.h"

namespace solver::cli {
namespace {

struct VerifyCommandOptions {
  std::filesystem::path bundle_dir;
  std::string segments = "top-q";  // top-q | random | all
  int q = 2;
  int random_count = 1;
  std::optional<double> catch_probability;  // instead of random_count: draws enough to catch...
  double faked_fraction = 0.1;              // ...a forger who faked this share of the segments
  std::optional<std::uint64_t> random_seed;
  // `solver profile` outputs: the runtimes each covers, with its thresholds (bundles from other
  // runtimes than this verifier's are judged only when one covers them)
  std::vector<std::filesystem::path> profile_files;
  int max_threads = 4;  // caps on the bundle's runtime.threads and runtime.shards
  int max_shards = 64;
  std::string task_file;                   // require the bundle to be for this task; empty: any
  std::optional<std::string> expected_key;  // require this solver public key (hex)
  std::string device = "cpu";
  bool json = false;
};

proof::SegmentSelection parse_selection(const std::string& name) {
  if (name == "all") return proof::SegmentSelection::All;
  if (name == "random") return proof::SegmentSelection::Random;
  return proof::SegmentSelection::TopQ;
}

// The StuckStepHandler of verify's replays: a step of the bundle's model still running past its
// limit (docs/bundle-format.md, "Replay budget") cannot be interrupted, and the bundle is judged
// by it, so the rejection is printed (as the table's verdict line, or as JSON) and the process
// ends at once with the rejected status.
[[noreturn]] void reject_for_stuck_step(const Error& reason, bool json) {
  const std::string failure = fmt::format("replay budget: {}: the model's step did not finish, and a verifier does not "
                                          "wait past its limit", reason.what());
  if (json) {
    std::printf("%s\n", nlohmann::json{{"accepted", false}, {"failures", {failure}}}.dump(2).c_str());
  } else {
    std::printf("verdict: REJECTED\n  - %s\n", failure.c_str());
  }
  std::fflush(stdout);
  std::_Exit(agent::kExitRejected);
}

// A chance just under 1 is not shown as a certainty.
std::string percent(double probability) {
  if (probability >= 1.0) return "100%";
  const double shown = probability * 100.0;
  if (shown > 99.9) return ">99.9%";
  if (probability > 0.0 && shown < 0.1) return "<0.1%";
  return fmt::format("{:.1f}%", shown);
}

// "1 segment: 12.5%, 1% of them (1): 12.5%, 10% (3): 33.3%, ..."
std::string detection_text(const proof::Detection& detection) {
  std::string text;
  bool first_fraction = true;
  for (const proof::Detection::Chance& chance : detection.chances) {
    if (!text.empty()) text += ", ";
    if (chance.faked_fraction == 0.0) {
      text += fmt::format("1 segment: {}", percent(chance.probability));
      continue;
    }
    text += fmt::format("{:g}%{} ({}): {}", chance.faked_fraction * 100.0, first_fraction ? " of them" : "",
                        chance.faked_segments, percent(chance.probability));
    first_fraction = false;
  }
  return text;
}

void print_table(const proof::Verdict& verdict) {
  if (!verdict.segments.empty()) {
    // The parameters' distance stands for the state here; the verdict's JSON has every part's.
    std::printf("%-16s %-7s %12s %12s %10s %9s %s\n", "segment", "chosen", "params l2", "linf", "cosine", "judged", "result");
    for (const auto& segment : verdict.segments) {
      const std::string steps = fmt::format("steps {}-{}", segment.first_step, segment.last_step);
      const auto parameters = segment.distances.find("param");
      const kernels::WeightDistance distance = parameters == segment.distances.end() ? kernels::WeightDistance{} : parameters->second;
      std::printf("%-16s %-7s %12.4g %12.4g %10.6f %9s %s\n", steps.c_str(), segment.chosen_by.c_str(), distance.l2,
                  distance.linf, distance.cosine, segment.bitwise_required ? "bitwise" : "profile",
                  segment.passed ? "pass" : "FAIL");
    }
    std::printf("replayed %zu of %lld segments (%.1f%% of training) in %.1f s (training took %.1f s); verifier seed %llu; %s\n",
                verdict.segments.size(), static_cast<long long>(verdict.segments_total), verdict.replayed_fraction * 100.0,
                verdict.replay_seconds, verdict.train_seconds, static_cast<unsigned long long>(verdict.random_seed),
                verdict.same_runtime ? "same build and device: bitwise equality required"
                                     : "different build or device: the profile's thresholds apply to every part of the state");
    if (verdict.detection)
      std::printf("chance to catch a forger who faked %s (%lld segments always replayed, %lld drawn)\n",
                  detection_text(*verdict.detection).c_str(), static_cast<long long>(verdict.detection->always_replayed),
                  static_cast<long long>(verdict.detection->random_draws));
  } else {
    // Said even when nothing was replayed, so that the cost of a verdict is always visible.
    std::printf("replayed 0 of %lld segments%s\n", static_cast<long long>(verdict.segments_total),
                verdict.accepted ? "" : ": rejected by the checks that need no training");
  }
  if (verdict.not_covered) {
    std::printf("verdict: NOT JUDGED HERE: %s\n", verdict.not_covered->c_str());
    return;
  }
  if (verdict.accepted) {
    std::printf(verdict.task_checked ? "verdict: ACCEPTED\n"
                                     : "verdict: ACCEPTED as self-consistent only: no --task was given, so the bundle's own "
                                       "task was trusted; pass --task to check it is the task you expect\n");
    return;
  }
  std::printf("verdict: REJECTED\n");
  for (const auto& failure : verdict.failures) std::printf("  - %s\n", failure.c_str());
}

int verify_command(const VerifyCommandOptions& options) {
  proof::VerifyOptions verify;
  verify.selection = parse_selection(options.segments);
  verify.q = options.q;
  verify.random_count = options.random_count;
  verify.catch_probability = options.catch_probability;
  verify.faked_fraction = options.faked_fraction;
  verify.random_seed = options.random_seed;
  for (const std::filesystem::path& file : options.profile_files) {
    verify.coverages.push_back(proof::read_profile(file));
    proof::check_profile_applies(verify.coverages.back(), options.bundle_dir);
  }
  verify.max_threads = options.max_threads;
  verify.max_shards = options.max_shards;
  verify.expected_public_key = options.expected_key;
  verify.device = options.device;
  if (!options.task_file.empty()) verify.expected_task_sha256 = task_sha256(load_task_file(options.task_file));

  const agent::StuckStepHandler reject_stuck = [json = options.json](const Error& reason) { reject_for_stuck_step(reason, json); };
  const proof::Verdict verdict =
      proof::verify_bundle(options.bundle_dir, verify, agent::trainer_replayer_factory(reject_stuck));
  if (options.json) {
    std::printf("%s\n", verdict.to_json().dump(2).c_str());
  } else {
    print_table(verdict);
  }
  return verdict.accepted ? agent::kExitOk : verdict.not_covered ? agent::kExitNotCovered : agent::kExitRejected;
}

}  // namespace

Command add_verify_command(CLI::App& parent) {
  auto options = std::make_shared<VerifyCommandOptions>();
  CLI::App* command = parent.add_subcommand("verify", "Check a proof-of-learning bundle and replay parts of it");
  command->add_option("bundle", options->bundle_dir, "Bundle folder")->required();
  command->add_option("--segments", options->segments, "Which segments to replay: top-q, random or all")
      ->check(CLI::IsMember({"top-q", "random", "all"}))
      ->capture_default_str();
  command->add_option("--q", options->q, "top-q: how many of the largest updates of each epoch to replay")->check(CLI::Range(0, 1000000))->capture_default_str();
  CLI::Option* random = command->add_option("--random", options->random_count, "How many further segments to replay at random")
                            ->check(CLI::Range(0, 1000000))
                            ->capture_default_str();
  CLI::Option* catch_probability = command
                                       ->add_option("--catch-probability", options->catch_probability,
                                                    "Instead of --random: draw enough segments to catch, with this probability, a forger "
                                                    "who faked --faked-fraction of them (above 0, at most 1)")
                                       ->excludes(random);
  command->add_option("--faked-fraction", options->faked_fraction, "The share of segments faked, for --catch-probability (above 0, at most 1)")
      ->needs(catch_probability)
      ->capture_default_str();
  command->add_option("--seed", options->random_seed, "The verifier's random seed (default: drawn, and printed)");
  command->add_option("--profile", options->profile_files,
                      "A `solver profile` output (repeatable): bundles from the runtimes it measured are judged within "
                      "its thresholds; without one, only bundles from this verifier's own runtime are judged");
  command->add_option("--max-threads", options->max_threads, "Replay with at most this many threads, whatever the bundle claims")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  command->add_option("--max-shards", options->max_shards, "Judge bundles of at most this many shards per step")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  command->add_option("--task", options->task_file, "Require the bundle to be for this task file");
  command->add_option("--expect-key", options->expected_key, "Require this solver public key (hex)");
  command->add_option("--device", options->device, "Device to replay on: cpu, cuda or cuda:N")->capture_default_str();
  command->add_flag("--json", options->json, "Print the verdict as JSON");
  return {command, [options] { return verify_command(*options); }};
}

}  // namespace solver::cli
