// `solver dispute`: referee two bundles of the same task and print the report as a table (or
// JSON). Exit status: 0 the replay supports a side (or both), 1 neither, 2 unreadable bundles
// or bundles of different tasks.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "agent/exit_status.h"
#include "agent/replayer.h"
#include "common/device.h"
#include "cli/command.h"
#include "proof/dispute.h"

namespace solver::cli {
namespace {

struct DisputeCommandOptions {
  std::filesystem::path bundle_a;
  std::filesystem::path bundle_b;
  std::string device = "cpu";  // a GPU here also traces the divergent step on the CPU
  int threads = 0;             // 0: bundle A's thread count
  double delta = 1e-3;
  bool json = false;
};

std::string end_state_text(const proof::DisputeSide& side, double delta) {
  if (side.same_runtime) return side.end_state_matches ? "bit for bit" : fmt::format("differs (l2 {:.3g})", side.distance.l2);
  return fmt::format("l2 {:.3g} {} {}", side.distance.l2, side.end_state_matches ? "<=" : ">", delta);
}

void print_side(const char* name, const proof::DisputeSide& side, bool replayed, double delta) {
  const std::string key = side.solver_public_key.substr(0, 12);
  const std::string wrong_loss = side.first_wrong_loss ? fmt::format("step {}", *side.first_wrong_loss) : "-";
  std::printf("%-4s %-12s %-6s %-8s %-6s %-12s %-22s %-9s %s\n", name, key.c_str(), side.valid ? "yes" : "NO",
              side.runtime.device.c_str(), !replayed ? "-" : side.follows_seed ? "yes" : "NO", replayed ? wrong_loss.c_str() : "-",
              replayed ? end_state_text(side, delta).c_str() : "-", side.supported ? "yes" : "no", side.bundle.c_str());
}

void print_table(const proof::DisputeReport& report, double delta) {
  const bool replayed = report.divergent_checkpoint.has_value() && report.a.valid && report.b.valid;
  std::printf("task %s; referee replays on %s\n", report.task_sha256.c_str(), report.referee_device.c_str());
  std::printf("%-4s %-12s %-6s %-8s %-6s %-12s %-22s %-9s %s\n", "side", "key", "valid", "device", "seed", "wrong loss",
              "end state", "supported", "bundle");
  print_side("A", report.a, replayed, delta);
  print_side("B", report.b, replayed, delta);
  if (report.divergent_checkpoint)
    std::printf("first divergent checkpoint: step %lld (segment steps %lld-%lld)\n",
                static_cast<long long>(*report.divergent_checkpoint), static_cast<long long>(report.segment_first_step),
                static_cast<long long>(report.segment_last_step));
  if (report.divergent_step)
    std::printf("first divergent step: %lld (%s)\n", static_cast<long long>(*report.divergent_step), report.divergence.c_str());
  if (!report.trace.empty()) {
    std::printf("trace of step %lld on %s, on the state the referee replayed before it:\n",
                static_cast<long long>(*report.divergent_step), report.referee_device.c_str());
    std::printf("  %-28s %-14s %12s  %-64s%s\n", "layer", "shape", "l2 norm", "sha256",
                report.second_device ? fmt::format(" l2 to {}", *report.second_device).c_str() : "");
    for (const auto& entry : report.trace) {
      const std::string distance = entry.second_device_distance ? fmt::format(" {:.3g}", *entry.second_device_distance) : "";
      std::printf("  %-28s %-14s %12.6g  %s%s\n", entry.name.c_str(), fmt::format("[{}]", fmt::join(entry.shape, ",")).c_str(),
                  entry.l2_norm, entry.sha256.c_str(), distance.c_str());
    }
    if (report.second_device)
      std::printf("first divergent operator (%s vs %s, beyond delta %g): %s\n", report.referee_device.c_str(),
                  report.second_device->c_str(), delta, report.divergent_operator ? report.divergent_operator->c_str() : "none");
  }
  std::printf("replayed %lld steps in %.1f s\n", static_cast<long long>(report.steps_replayed), report.seconds);
  if (report.identical)
    std::printf("verdict: they agree\n");
  else if (report.supported == "A" || report.supported == "B")
    std::printf("verdict: the replay supports %s (%s)\n", report.supported.c_str(),
                (report.supported == "A" ? report.a : report.b).bundle.c_str());
  else
    std::printf("verdict: the replay supports %s\n", report.supported.c_str());
  for (const auto& reason : report.reasons) std::printf("  - %s\n", reason.c_str());
}

int dispute_command(const DisputeCommandOptions& options) {
  proof::DisputeOptions dispute;
  dispute.device = options.device;
  // Verde's comparison needs a second device; on a GPU referee the CPU is always one.
  if (parse_device(options.device).is_cuda()) dispute.second_device = "cpu";
  dispute.threads = options.threads;
  dispute.delta = options.delta;
  const proof::DisputeReport report =
      proof::dispute_bundles(options.bundle_a, options.bundle_b, dispute, agent::trainer_replayer_factory());
  if (options.json)
    std::printf("%s\n", report.to_json().dump(2).c_str());
  else
    print_table(report, options.delta);
  return report.supported == "neither" ? agent::kExitRejected : agent::kExitOk;
}

}  // namespace

Command add_dispute_command(CLI::App& parent) {
  auto options = std::make_shared<DisputeCommandOptions>();
  CLI::App* command =
      parent.add_subcommand("dispute", "Referee two bundles of the same task: the first divergent checkpoint, step and layer");
  command->add_option("bundle_a", options->bundle_a, "One side's bundle folder")->required();
  command->add_option("bundle_b", options->bundle_b, "The other side's bundle folder")->required();
  command->add_option("--device", options->device, "Device to replay on: cpu, cuda or cuda:N (a GPU also traces on the CPU)")->capture_default_str();
  command->add_option("--threads", options->threads, "Intra-op threads for the replay (default: bundle A's)")->check(CLI::Range(1, 256));
  command->add_option("--delta", options->delta, "l2 threshold between states or traces from different runtimes")->check(CLI::NonNegativeNumber)->capture_default_str();
  command->add_flag("--json", options->json, "Print the report as JSON");
  return {command, [options] { return dispute_command(*options); }};
}

}  // namespace solver::cli
