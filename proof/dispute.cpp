// dispute_bundles: the referee. Invariant: only the first disagreement is judged. Everything
// before the first differing checkpoint is common to both sides (same file hashes, and both
// bundles passed the checks that need no training), so one replay of one segment from a state
// both sides signed decides which side computed that segment as the task says; what either
// side did after it is built on a state the other side disputes.
#include "proof/dispute.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <limits>

#include "common/bundle_files.h"
#include "common/data_order.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "proof/detail/bundle_paths.h"
#include "proof/detail/replay_rules.h"
#include "proof/manifest.h"
#include "proof/parameters.h"

namespace solver::proof {
namespace {

using detail::lr_agrees;
using detail::losses_agree;
using detail::same_runtime;
using nlohmann::json;

// The checks of `solver verify` that need no training (signature, hashes, chain, data order,
// initialisation, update distances), with no segment replayed.
// The runtime does not matter here: the dispute's own replays judge it.
void check_without_training(DisputeSide& side, const std::string& task_sha256, const std::string& device,
                            const ReplayerFactory& make_replayer) {
  VerifyOptions options;
  options.replay = false;
  options.random_seed = 0;
  options.expected_task_sha256 = task_sha256;
  options.device = device;
  const Verdict verdict = verify_bundle(side.bundle, options, make_replayer);
  side.valid = verdict.failures.empty();
  side.failures = verdict.failures;
}

double l2_norm(const checkpoint::Tensor& tensor) {
  if (tensor.dtype != checkpoint::DType::F32) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0.0;
  for (const float value : tensor.as_f32()) sum += static_cast<double>(value) * value;
  return std::sqrt(sum);
}

// Infinite when the two cannot be compared element by element.
double l2_distance(const checkpoint::Tensor& a, const checkpoint::Tensor& b) {
  if (a.dtype != checkpoint::DType::F32 || b.dtype != checkpoint::DType::F32 || a.shape != b.shape)
    return std::numeric_limits<double>::infinity();
  const auto x = a.as_f32();
  const auto y = b.as_f32();
  double sum = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double difference = static_cast<double>(x[i]) - y[i];
    sum += difference * difference;
  }
  return std::sqrt(sum);
}

std::vector<TraceEntry> summarise(const std::vector<checkpoint::Tensor>& trace) {
  std::vector<TraceEntry> entries;
  for (const checkpoint::Tensor& tensor : trace)
    entries.push_back({tensor.name, tensor.shape, l2_norm(tensor), sha256_hex(std::span<const std::byte>(tensor.data)), {}});
  return entries;
}

// Judges one side's claimed end state against the replayed one.
void judge_end_state(DisputeSide& side, const checkpoint::Checkpoint& claimed, const checkpoint::Checkpoint& replayed,
                     double delta) {
  side.distance.l2 = std::numeric_limits<double>::infinity();
  try {
    side.distance = parameter_distance(claimed.tensors, replayed.tensors);
  } catch (const Error& error) {
    log_debug("proof", "dispute: {} does not match the replayed state's parameters: {}", side.bundle.string(), error.what());
    return;
  }
  side.end_state_matches = side.same_runtime ? !first_difference(claimed, replayed) : side.distance.l2 <= delta;
}

std::string side_text(const DisputeSide& side, const char* name) { return fmt::format("{} ({})", name, side.bundle.string()); }

void explain_sides(DisputeReport& report, std::int64_t checkpoint_step, double delta) {
  const std::pair<const DisputeSide*, const char*> sides[] = {{&report.a, "A"}, {&report.b, "B"}};
  for (const auto& [side, name] : sides) {
    const std::string who = side_text(*side, name);
    if (!side->follows_seed)
      report.reasons.push_back(fmt::format("{}: the indices or learning rates of steps {}-{} are not the task seed's", who,
                                           report.segment_first_step, report.segment_last_step));
    if (side->first_wrong_loss)
      report.reasons.push_back(fmt::format("{}: the recorded loss of step {} is not the replay's", who, *side->first_wrong_loss));
    if (side->end_state_matches)
      report.reasons.push_back(fmt::format("{}: the replayed state after step {} matches its checkpoint ({})", who,
                                           checkpoint_step,
                                           side->same_runtime ? "bit for bit"
                                                              : fmt::format("l2 {:.3g} <= delta {}", side->distance.l2, delta)));
    else
      report.reasons.push_back(fmt::format("{}: its checkpoint at step {} differs from the replay ({})", who, checkpoint_step,
                                           side->same_runtime
                                               ? fmt::format("same runtime, not bit for bit; l2 {:.3g}", side->distance.l2)
                                               : fmt::format("l2 {:.3g} > delta {}", side->distance.l2, delta)));
  }
}

std::string verdict_of(bool a, bool b) { return a && b ? "both" : a ? "A" : b ? "B" : "neither"; }

template <typename T>
json optional_json(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

json side_json(const DisputeSide& side) {
  return {{"bundle", side.bundle.string()},
          {"solver_public_key", side.solver_public_key},
          {"device", side.runtime.device},
          {"threads", side.runtime.threads},
          {"valid", side.valid},
          {"failures", side.failures},
          {"same_runtime", side.same_runtime},
          {"follows_seed", side.follows_seed},
          {"first_wrong_loss", optional_json(side.first_wrong_loss)},
          {"end_state_matches", side.end_state_matches},
          {"distance", distance_to_json(side.distance)},
          {"supported", side.supported}};
}

// Replays the disputed segment; fills the sides' judgements and the divergent step. Returns
// the records the referee replayed (the sides' own where they agree, else the seed's).
std::vector<StepRecord> replay_segment(DisputeReport& report, const Task& task, const Manifest& manifest,
                                       const std::vector<StepRecord>& records_a, const std::vector<StepRecord>& records_b,
                                       Replayer& replayer) {
  DataOrder order(task.seed, static_cast<std::uint32_t>(manifest.train_samples),
                  static_cast<std::uint32_t>(task.training.batch_size));
  auto follows_seed = [&](const StepRecord& record, std::span<const std::uint32_t> indices, double lr) {
    return std::ranges::equal(indices, record.indices) && lr_agrees(record.lr, lr, task.training.optimizer.lr);
  };
  std::vector<StepRecord> replayed;
  for (std::size_t i = 0; i < records_a.size(); ++i) {
    const StepRecord& a = records_a[i];
    const StepRecord& b = records_b[i];
    StepRecord record{a.step, a.indices, 0.0f, a.lr};
    if (a.indices != b.indices || a.lr != b.lr) {
      const std::span<const std::uint32_t> indices = order.batch(a.step);
      const double lr = learning_rate_at(task.training, a.step, manifest.total_steps);
      if (!follows_seed(a, indices, lr)) report.a.follows_seed = false;
      if (!follows_seed(b, indices, lr)) report.b.follows_seed = false;
      if (!report.divergent_step) {
        report.divergent_step = a.step;
        report.divergence = "records";
      }
      record.indices.assign(indices.begin(), indices.end());
      record.lr = lr;
    }
    record.loss = replayer.run_steps(std::span(&record, 1)).front();
    ++report.steps_replayed;
    const bool a_agrees = losses_agree(a.loss, record.loss, report.a.same_runtime ? 0.0 : detail::kCrossRuntimeLossTolerance);
    const bool b_agrees = losses_agree(b.loss, record.loss, report.b.same_runtime ? 0.0 : detail::kCrossRuntimeLossTolerance);
    if (!a_agrees && !report.a.first_wrong_loss) report.a.first_wrong_loss = a.step;
    if (!b_agrees && !report.b.first_wrong_loss) report.b.first_wrong_loss = b.step;
    if ((!a_agrees || !b_agrees) && !report.divergent_step) {
      report.divergent_step = a.step;
      report.divergence = "loss";
    }
    replayed.push_back(std::move(record));
  }
  return replayed;
}

// Traces the divergent step on the referee's state before it (and on the second device).
void trace_divergent_step(DisputeReport& report, const Task& task, const DisputeOptions& options,
                          const checkpoint::Checkpoint& start, const std::vector<StepRecord>& replayed,
                          Replayer& replayer, const ReplayerFactory& make_replayer, const ReplaySetting& setting) {
  const auto divergent = std::ranges::find(replayed, *report.divergent_step, &StepRecord::step);
  replayer.load_state(start);
  replayer.run_steps(std::span(replayed.begin(), divergent));
  report.steps_replayed += divergent - replayed.begin();
  const std::vector<checkpoint::Tensor> trace = replayer.trace_step(*divergent);
  report.trace = summarise(trace);
  if (!options.second_device) return;

  report.second_device = *options.second_device;
  const std::unique_ptr<Replayer> second = make_replayer(task, {*options.second_device, setting.threads, setting.shards});
  second->load_state(replayer.state(divergent->step - 1));
  const std::vector<checkpoint::Tensor> second_trace = second->trace_step(*divergent);
  for (std::size_t i = 0; i < report.trace.size(); ++i) {
    const auto other = std::ranges::find(second_trace, trace[i].name, &checkpoint::Tensor::name);
    const double distance = other == second_trace.end() ? std::numeric_limits<double>::infinity() : l2_distance(trace[i], *other);
    report.trace[i].second_device_distance = distance;
    if (distance > options.delta && !report.divergent_operator) report.divergent_operator = trace[i].name;
  }
}

}  // namespace

json DisputeReport::to_json() const {
  json entries = json::array();
  for (const TraceEntry& entry : trace)
    entries.push_back({{"name", entry.name},
                       {"shape", entry.shape},
                       {"l2_norm", entry.l2_norm},
                       {"sha256", entry.sha256},
                       {"second_device_distance", optional_json(entry.second_device_distance)}});
  return {{"task_sha256", task_sha256},
          {"a", side_json(a)},
          {"b", side_json(b)},
          {"referee_device", referee_device},
          {"identical", identical},
          {"divergent_checkpoint", optional_json(divergent_checkpoint)},
          {"segment", {{"first_step", segment_first_step}, {"last_step", segment_last_step}}},
          {"divergent_step", optional_json(divergent_step)},
          {"divergence", divergence},
          {"trace", std::move(entries)},
          {"second_device", optional_json(second_device)},
          {"divergent_operator", optional_json(divergent_operator)},
          {"supported", supported},
          {"reasons", reasons},
          {"steps_replayed", steps_replayed},
          {"seconds", seconds}};
}

DisputeReport dispute_bundles(const std::filesystem::path& a, const std::filesystem::path& b, const DisputeOptions& options,
                              const ReplayerFactory& make_replayer) {
  if (!(options.delta >= 0) || !std::isfinite(options.delta))
    throw Error(ErrorKind::Usage, fmt::format("dispute: delta must be a finite number >= 0, got {}", options.delta));
  const auto began = std::chrono::steady_clock::now();
  DisputeReport report;
  report.a.bundle = a;
  report.b.bundle = b;
  const Manifest manifest_a = read_manifest(a);
  const Manifest manifest_b = read_manifest(b);
  if (manifest_a.task_sha256 != manifest_b.task_sha256)
    throw Error(ErrorKind::Input, "dispute: " + a.string() + " is a bundle of task " + manifest_a.task_sha256 + ", " +
                                      b.string() + " of task " + manifest_b.task_sha256 +
                                      "; a dispute is between two bundles of the same task");
  report.task_sha256 = manifest_a.task_sha256;
  report.a.solver_public_key = manifest_a.solver_public_key;
  report.b.solver_public_key = manifest_b.solver_public_key;
  report.a.runtime = manifest_a.runtime;
  report.b.runtime = manifest_b.runtime;
  report.referee_device = options.device;
  auto finish = [&] {
    report.a.supported = report.supported == "A" || report.supported == "both";
    report.b.supported = report.supported == "B" || report.supported == "both";
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  };

  // 1. Both bundles must stand on their own; an invalid one loses without a replay.
  check_without_training(report.a, report.task_sha256, options.device, make_replayer);
  check_without_training(report.b, report.task_sha256, options.device, make_replayer);
  if (!report.a.valid || !report.b.valid) {
    report.supported = verdict_of(report.a.valid, report.b.valid);
    for (const auto& [side, name] : {std::pair{&report.a, "A"}, std::pair{&report.b, "B"}})
      if (!side->valid)
        report.reasons.push_back(side_text(*side, name) + " is invalid and loses outright: " + side->failures.front());
    finish();
    return report;
  }

  // 2. The first checkpoint whose file, or the segment leading to it, differs.
  if (manifest_a.checkpoints.size() != manifest_b.checkpoints.size())
    throw Error(ErrorKind::Input, fmt::format("dispute: A has {} checkpoints and B {}, for the same task", manifest_a.checkpoints.size(),
                                              manifest_b.checkpoints.size()));
  std::optional<std::size_t> segment;
  for (std::size_t i = 1; i < manifest_a.checkpoints.size() && !segment; ++i)
    if (manifest_a.checkpoints[i].file.sha256 != manifest_b.checkpoints[i].file.sha256 ||
        manifest_a.segments[i - 1].file.sha256 != manifest_b.segments[i - 1].file.sha256)
      segment = i - 1;
  if (!segment) {
    report.identical = true;
    report.supported = "both";
    report.reasons.push_back("they agree: every checkpoint and segment file is the same in both bundles");
    finish();
    return report;
  }
  const SegmentEntry& entry = manifest_a.segments[*segment];
  report.divergent_checkpoint = entry.last_step;
  report.segment_first_step = entry.first_step;
  report.segment_last_step = entry.last_step;

  // 3. Replay the segment from the last common checkpoint, one step at a time.
  const Task task = detail::with_bundled_model(parse_task(manifest_a.task, a), a);
  // Bundle A's shard count: a replay with another would split each step's batch differently.
  const ReplaySetting setting{options.device, options.threads > 0 ? options.threads : manifest_a.runtime.threads,
                              manifest_a.runtime.shards};
  const std::unique_ptr<Replayer> replayer = make_replayer(task, setting);
  report.a.same_runtime = same_runtime(manifest_a.runtime, replayer->runtime());
  report.b.same_runtime = same_runtime(manifest_b.runtime, replayer->runtime());
  const checkpoint::Checkpoint start = checkpoint::read_safetensors(bundle_file(a, manifest_a.checkpoints[*segment].file.path).path);
  const std::vector<StepRecord> records_a = read_bundle_segment(a, entry, task.training.batch_size);
  const std::vector<StepRecord> records_b = read_bundle_segment(b, manifest_b.segments[*segment], task.training.batch_size);
  replayer->load_state(start);
  const std::vector<StepRecord> replayed = replay_segment(report, task, manifest_a, records_a, records_b, *replayer);

  const checkpoint::Checkpoint end = replayer->state(entry.last_step);
  judge_end_state(report.a, checkpoint::read_safetensors(bundle_file(a, manifest_a.checkpoints[*segment + 1].file.path).path), end,
                  options.delta);
  judge_end_state(report.b, checkpoint::read_safetensors(bundle_file(b, manifest_b.checkpoints[*segment + 1].file.path).path), end,
                  options.delta);
  const bool a_supported = report.a.follows_seed && !report.a.first_wrong_loss && report.a.end_state_matches;
  const bool b_supported = report.b.follows_seed && !report.b.first_wrong_loss && report.b.end_state_matches;
  report.supported = verdict_of(a_supported, b_supported);
  if (!report.divergent_step && !(a_supported && b_supported)) {
    report.divergent_step = entry.last_step;
    report.divergence = "end state";
  }
  explain_sides(report, entry.last_step, options.delta);
  if (a_supported && b_supported)
    report.reasons.insert(report.reasons.begin(), "their files differ, but the replay supports both within delta " +
                                                      fmt::format("{}", options.delta));

  // 4. The layers of the divergent step, for a referee on another machine or device to compare.
  if (report.divergent_step)
    trace_divergent_step(report, task, options, start, replayed, *replayer, make_replayer, setting);
  log_debug("proof", "dispute: segment {}-{} divergent step {} supported {}", report.segment_first_step,
            report.segment_last_step, report.divergent_step.value_or(-1), report.supported);
  finish();
  return report;
}

}  // namespace solver::proof
