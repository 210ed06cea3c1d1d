// `solver profile TASK|BUNDLE`: replays pieces of training under the settings an honest solver
// may differ in, prints the distances per variation and δ per metric, and writes the profile
// that `solver verify --profile` takes (docs/profiling.md).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "agent/exit_status.h"
#include "agent/replayer.h"
#include "cli/command.h"
#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "proof/profile.h"
#include "train/benchmark.h"

namespace solver::cli {
namespace {

struct ProfileCommandOptions {
  std::filesystem::path target;    // a bundle folder, or a task file
  int segments = 3;                // bundle: segments replayed (first, middle, last)
  int steps = 100;                 // steps per piece
  std::vector<int> threads{1, 2, 4};       // the first is the reference's
  std::vector<std::string> devices;        // empty: cpu and every CUDA device LibTorch sees
  std::filesystem::path out = "profile.json";
  bool json = false;
};

// Splits the devices asked for (or, when none are, cpu and every GPU) into the usable ones
// and the ones LibTorch cannot see, which are reported rather than failed on.
void choose_devices(const std::vector<std::string>& requested, proof::ProfileOptions& options) {
  const int gpus = train::torch_cuda_device_count();
  const std::string none_seen = gpus == 0 ? "LibTorch sees no CUDA device (this LibTorch build or this machine has none)"
                                          : fmt::format("LibTorch sees {} CUDA device(s)", gpus);
  options.devices.clear();
  if (requested.empty()) {
    options.devices.push_back("cpu");
    for (int i = 0; i < gpus; ++i) options.devices.push_back("cuda:" + std::to_string(i));
    if (gpus == 0) options.skipped.emplace_back("cuda", none_seen + ": no device variation measured");
    return;
  }
  for (const std::string& device : requested) {
    if (const Device parsed = parse_device(device); !parsed.is_cuda() || parsed.index < gpus)
      options.devices.push_back(device);
    else
      options.skipped.emplace_back(device, none_seen);
  }
  if (options.devices.empty())
    throw Error(ErrorKind::Cuda, "profile: none of the devices asked for can be used: " + none_seen);
}

std::string steps_text(const proof::PieceReport& piece) { return fmt::format("{}-{}", piece.first_step, piece.last_step); }

void print_table(const proof::Profile& profile, const std::filesystem::path& out) {
  const proof::VariationReport& reference = profile.variations.front();
  std::string pieces;
  for (const proof::PieceReport& piece : reference.pieces) pieces += (pieces.empty() ? "steps " : ", ") + steps_text(piece);
  std::printf("profile of task %s (sha256 %s), from the %s: %s; reference %s, %d threads, LibTorch %s\n",
              profile.task_id.c_str(), profile.task_sha256.c_str(), profile.source.c_str(), pieces.c_str(),
              reference.runtime.device.c_str(), reference.runtime.threads, reference.runtime.torch_version.c_str());
  std::printf("%-16s %-8s %7s %8s %11s %11s %11s %11s %13s %8s\n", "variation", "device", "threads", "bitwise", "l1", "l2",
              "linf", "1-cosine", "l2 vs claimed", "seconds");
  for (const proof::VariationReport& variation : profile.variations) {
    double claimed_l2 = -1.0;
    for (const proof::PieceReport& piece : variation.pieces)
      if (piece.from_claimed) claimed_l2 = std::max(claimed_l2, piece.from_claimed->l2);
    const std::string claimed = claimed_l2 < 0.0 ? "-" : fmt::format("{:.4g}", claimed_l2);
    const char* bitwise = variation.name == "reference" ? "-" : variation.bitwise_equal ? "yes" : "NO";
    const proof::MetricValues parameters =
        variation.spread.parts.contains("param") ? variation.spread.parts.at("param") : proof::MetricValues{};
    std::printf("%-16s %-8s %7d %8s %11.4g %11.4g %11.4g %11.4g %13s %8.1f\n", variation.name.c_str(),
                variation.setting.device.c_str(), variation.setting.threads, bitwise, parameters.l1, parameters.l2,
                parameters.linf, parameters.cosine, claimed.c_str(), variation.seconds);
  }
  for (const auto& [setting, reason] : profile.skipped) std::printf("not measured: %s: %s\n", setting.c_str(), reason.c_str());
  for (const proof::VariationReport& variation : profile.variations)
    for (const proof::PieceReport& piece : variation.pieces)
      if (!piece.bitwise_equal)
        std::printf("%s: steps %s differ from the reference first in %s\n", variation.name.c_str(), steps_text(piece).c_str(),
                    piece.first_difference.c_str());
  const bool repeat_equal = profile.variations.size() > 1 && profile.variations[1].bitwise_equal;
  std::printf("same settings twice: %s\n", repeat_equal ? "bitwise equal"
                                                        : "NOT bitwise equal: this build or device is not deterministic "
                                                          "(verify cannot demand bitwise replays here)");

  // Per part of the state: the largest spread seen, the rounding floor, and the threshold.
  std::printf("%-22s %-9s %11s %11s %11s %11s\n", "part", "", "l1", "l2", "linf", "1-cosine");
  for (const auto& [part, threshold] : profile.thresholds.parts) {
    auto row = [&](const char* what, const proof::StateThresholds& values) {
      const proof::MetricValues metrics = values.parts.contains(part) ? values.parts.at(part) : proof::MetricValues{};
      std::printf("%-22s %-9s %11.4g %11.4g %11.4g %11.4g\n", part.c_str(), what, metrics.l1, metrics.l2, metrics.linf,
                  metrics.cosine);
    };
    row("spread", profile.observed_spread);
    row("floor", profile.floor);
    row("delta", profile.thresholds);
  }
  std::printf("%-22s spread %.4g, floor %.4g, delta %.4g (relative; floors over %lld steps; delta = x%g)\n", "loss",
              profile.observed_spread.loss, profile.floor.loss, profile.thresholds.loss,
              static_cast<long long>(profile.longest_piece), profile.safety_factor);
  std::printf("written to %s; use it with `solver verify BUNDLE --profile %s`\n", out.string().c_str(), out.string().c_str());
}

int profile_command(const ProfileCommandOptions& options) {
  proof::ProfileOptions profile_options;
  profile_options.segments = options.segments;
  profile_options.steps = options.steps;
  profile_options.threads = options.threads;
  choose_devices(options.devices, profile_options);
  const proof::ReplayerFactory make_replayer = agent::trainer_replayer_factory();

  const proof::Profile profile = std::filesystem::is_directory(options.target)
                                     ? proof::profile_bundle(options.target, profile_options, make_replayer)
                                     : proof::profile_task(load_task_file(options.target), profile_options, make_replayer);
  const std::string text = profile.to_json().dump(2) + "\n";
  write_file_durably(options.out, text);
  if (options.json)
    std::printf("%s", text.c_str());
  else
    print_table(profile, options.out);
  return agent::kExitOk;
}

}  // namespace

Command add_profile_command(CLI::App& parent) {
  auto options = std::make_shared<ProfileCommandOptions>();
  CLI::App* command = parent.add_subcommand("profile", "Measure how far honest replays drift apart; derive the distance thresholds");
  command->add_option("target", options->target, "A bundle folder, or a task file (JSON)")->required();
  command->add_option("--segments", options->segments, "Bundle: how many segments to replay (first, middle, last, ...)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  command->add_option("--steps", options->steps, "Steps per replayed piece (a task: steps trained from its initialisation)")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  command->add_option("--threads-list", options->threads, "Thread counts to compare; the first is the reference's")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  command->add_option("--devices", options->devices, "Devices to compare, e.g. cpu,cuda:0 (default: cpu and every GPU LibTorch sees)")
      ->delimiter(',');
  command->add_option("--out", options->out, "Where to write the profile")->capture_default_str();
  command->add_flag("--json", options->json, "Print the profile as JSON");
  return {command, [options] { return profile_command(*options); }};
}

}  // namespace solver::cli
