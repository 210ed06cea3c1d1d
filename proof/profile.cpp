// Profiling (docs/profiling.md): replays the same pieces of training under each setting, one
// replayer at a time, and measures each end state against the reference setting's. The
// thresholds come from replays only: a bundle is where the pieces start, not evidence of how
// far honest runs drift, so a forged bundle cannot widen δ by being profiled.
#include "proof/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>

#include "checkpoint/safetensors.h"
#include "common/data_order.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "proof/detail/bundle_paths.h"
#include "proof/manifest.h"
#include "proof/parameters.h"

namespace solver::proof {
namespace {

using nlohmann::json;

// One piece of training replayed under every setting.
struct Piece {
  checkpoint::Checkpoint start;
  std::vector<StepRecord> records;
  std::optional<checkpoint::Checkpoint> claimed;  // the bundle's checkpoint where the piece ends
};

void check_options(const ProfileOptions& options) {
  if (options.segments < 1) throw Error(ErrorKind::Usage, "profile: --segments must be >= 1, got " + std::to_string(options.segments));
  if (options.steps < 1) throw Error(ErrorKind::Usage, "profile: --steps must be >= 1, got " + std::to_string(options.steps));
  if (options.threads.empty()) throw Error(ErrorKind::Usage, "profile: the thread-count list is empty");
  std::set<int> seen;
  for (const int threads : options.threads) {
    if (threads < 1 || threads > 256)
      throw Error(ErrorKind::Usage, "profile: thread counts must be between 1 and 256, got " + std::to_string(threads));
    if (!seen.insert(threads).second)
      throw Error(ErrorKind::Usage, "profile: thread count " + std::to_string(threads) + " is listed twice");
  }
  if (options.devices.empty()) throw Error(ErrorKind::Usage, "profile: no usable device to replay on");
}

// The reference, the reference again, then one change at a time.
std::vector<std::pair<std::string, ReplaySetting>> settings_of(const ProfileOptions& options, int shards) {
  const ReplaySetting reference{options.devices.front(), options.threads.front(), shards};
  std::vector<std::pair<std::string, ReplaySetting>> settings{{"reference", reference}, {"repeat", reference}};
  for (std::size_t i = 1; i < options.threads.size(); ++i)
    settings.push_back({"threads=" + std::to_string(options.threads[i]), {reference.device, options.threads[i], shards}});
  for (std::size_t i = 1; i < options.devices.size(); ++i)
    settings.push_back({"device=" + options.devices[i], {options.devices[i], reference.threads, shards}});
  return settings;
}

// "" when the states are bitwise equal, else the first tensor (or "metadata") that differs.
// Both states come from Trainer::state(), so their tensors are in the same order.
MetricValues largest(const MetricValues& a, const MetricValues& b) {
  return {std::max(a.l1, b.l1), std::max(a.l2, b.l2), std::max(a.linf, b.linf), std::max(a.cosine, b.cosine)};
}

// l1, l2 and linf norms of a state's parameters: their distance from zero.
MetricValues parameter_norms(const checkpoint::Checkpoint& state) {
  std::vector<checkpoint::Tensor> zeros;
  for (const checkpoint::Tensor& tensor : state.tensors)
    if (is_parameter(tensor)) {
      checkpoint::Tensor zero = tensor;
      std::ranges::fill(zero.data, std::byte{0});
      zeros.push_back(std::move(zero));
    }
  const kernels::WeightDistance norms = parameter_distance(zeros, state.tensors);
  return {norms.l1, norms.l2, norms.linf, 0.0};
}

// What rounding alone can do: one float32 rounding per step moves a weight w by at most
// epsilon * |w|, so after n steps the parameters may drift by n * epsilon * their norm, and
// 1 - cosine (about half the squared relative l2 distance) by (n * epsilon)^2 / 2.
MetricValues rounding_floor(const MetricValues& norms, std::int64_t steps) {
  const double relative = static_cast<double>(steps) * std::numeric_limits<float>::epsilon();
  return {relative * norms.l1, relative * norms.l2, relative * norms.linf, 0.5 * relative * relative};
}

json metrics_json(const MetricValues& values) {
  return {{"l1", values.l1}, {"l2", values.l2}, {"linf", values.linf}, {"cosine_distance", values.cosine}};
}

// Replays every piece under every setting, with `shards` data-parallel shards, and derives the
// thresholds. `first` is a replayer already built for the reference setting (the task's pieces
// needed it to exist).
Profile run_profile(const Task& task, const std::vector<Piece>& pieces, const ProfileOptions& options, int shards,
                    std::unique_ptr<Replayer> first, const SettingReplayerFactory& make_replayer) {
  Profile profile;
  profile.task_id = task.id;
  profile.task_sha256 = task_sha256(task);
  profile.skipped = options.skipped;
  std::vector<checkpoint::Checkpoint> reference_ends;
  for (const auto& [name, setting] : settings_of(options, shards)) {
    std::unique_ptr<Replayer> replayer = first ? std::move(first) : make_replayer(task, setting);
    VariationReport variation;
    variation.name = name;
    variation.setting = setting;
    variation.runtime = replayer->runtime();
    variation.bitwise_equal = true;
    const auto began = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const Piece& piece = pieces[i];
      Replayer::Result result = replayer->replay(piece.start, piece.records);
      const bool is_reference = reference_ends.size() == i;
      if (is_reference) reference_ends.push_back(result.state);
      PieceReport report;
      report.first_step = piece.records.front().step;
      report.last_step = piece.records.back().step;
      report.from_reference = parameter_distance(reference_ends[i].tensors, result.state.tensors);
      const std::optional<StateDifference> difference = first_difference(reference_ends[i], result.state);
      report.first_difference = difference ? difference->name : "";
      report.bitwise_equal = report.first_difference.empty();
      if (piece.claimed) report.from_claimed = parameter_distance(piece.claimed->tensors, result.state.tensors);
      variation.bitwise_equal = variation.bitwise_equal && report.bitwise_equal;
      variation.spread = largest(variation.spread, as_spread(report.from_reference));
      log_info("profile", "{} ({} threads on {}): steps {}-{}: l2 {:.3g} from the reference{}", name, setting.threads,
               setting.device, report.first_step, report.last_step, report.from_reference.l2,
               report.bitwise_equal ? ", bitwise equal" : ", differs first in " + report.first_difference);
      variation.pieces.push_back(std::move(report));
    }
    variation.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (!profile.variations.empty()) profile.observed_spread = largest(profile.observed_spread, variation.spread);
    profile.variations.push_back(std::move(variation));
  }
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const auto steps = static_cast<std::int64_t>(pieces[i].records.size());
    const MetricValues norms = parameter_norms(reference_ends[i]);
    profile.parameter_norm = largest(profile.parameter_norm, norms);
    profile.longest_piece = std::max(profile.longest_piece, steps);
    profile.floor = largest(profile.floor, rounding_floor(norms, steps));
  }
  const MetricValues basis = largest(profile.observed_spread, profile.floor);
  profile.thresholds = {profile.safety_factor * basis.l1, profile.safety_factor * basis.l2,
                        profile.safety_factor * basis.linf, profile.safety_factor * basis.cosine};
  return profile;
}

// First, last, middle: count segments evenly spread over n (count <= n).
std::vector<std::size_t> spread_segments(std::size_t n, std::size_t count) {
  if (count == 1) return {0};
  std::vector<std::size_t> chosen;
  for (std::size_t i = 0; i < count; ++i)
    chosen.push_back(static_cast<std::size_t>(std::llround(static_cast<double>(i * (n - 1)) / static_cast<double>(count - 1))));
  return chosen;
}

}  // namespace

MetricValues as_spread(const kernels::WeightDistance& distance) {
  // Rounding can put a cosine similarity a hair above 1.
  return {distance.l1, distance.l2, distance.linf, std::max(0.0, 1.0 - distance.cosine)};
}

json Profile::to_json() const {
  json variation_list = json::array();
  for (const VariationReport& variation : variations) {
    json piece_list = json::array();
    for (const PieceReport& piece : variation.pieces) {
      json entry{{"first_step", piece.first_step},
                 {"last_step", piece.last_step},
                 {"bitwise_equal", piece.bitwise_equal},
                 {"from_reference", distance_to_json(piece.from_reference)}};
      if (!piece.bitwise_equal) entry["first_difference"] = piece.first_difference;
      if (piece.from_claimed) entry["from_claimed"] = distance_to_json(*piece.from_claimed);
      piece_list.push_back(std::move(entry));
    }
    variation_list.push_back({{"name", variation.name},
                              {"device", variation.setting.device},
                              {"threads", variation.setting.threads},
                              {"runtime", runtime_to_json(variation.runtime)},
                              {"bitwise_equal", variation.bitwise_equal},
                              {"spread", metrics_json(variation.spread)},
                              {"seconds", variation.seconds},
                              {"pieces", std::move(piece_list)}});
  }
  json skipped_list = json::array();
  for (const auto& [setting, reason] : skipped) skipped_list.push_back({{"setting", setting}, {"reason", reason}});
  return {{"schema", kProfileSchema},
          {"task_id", task_id},
          {"task_sha256", task_sha256},
          {"source", source},
          {"runtime", variations.empty() ? json(nullptr) : runtime_to_json(variations.front().runtime)},
          {"variations", std::move(variation_list)},
          {"skipped", std::move(skipped_list)},
          {"parameter_norm", {{"l1", parameter_norm.l1}, {"l2", parameter_norm.l2}, {"linf", parameter_norm.linf}}},
          {"longest_piece_steps", longest_piece},
          {"observed_spread", metrics_json(observed_spread)},
          {"floor", metrics_json(floor)},
          {"safety_factor", safety_factor},
          {"thresholds", metrics_json(thresholds)}};
}

Profile profile_bundle(const std::filesystem::path& dir, const ProfileOptions& options,
                       const SettingReplayerFactory& make_replayer) {
  check_options(options);
  const Manifest manifest = read_manifest(dir);
  if (manifest.segments.empty() || manifest.checkpoints.size() != manifest.segments.size() + 1)
    throw Error(ErrorKind::Input, fmt::format("bundle {}: {} checkpoints and {} segments; expected one segment per checkpoint "
                                              "after step 0 (does `solver verify` accept it?)",
                                              dir.string(), manifest.checkpoints.size(), manifest.segments.size()));
  const Task task = detail::with_bundled_model(parse_task(manifest.task, dir), dir);

  std::vector<Piece> pieces;
  const std::size_t count = std::min(manifest.segments.size(), static_cast<std::size_t>(options.segments));
  for (const std::size_t index : spread_segments(manifest.segments.size(), count)) {
    const SegmentEntry& segment = manifest.segments[index];
    Piece piece;
    piece.start = checkpoint::read_safetensors(dir / manifest.checkpoints[index].file.path);
    piece.records = decode_segment(read_file(dir / segment.file.path), segment.file.path);
    if (piece.records.empty()) throw Error(ErrorKind::Input, segment.file.path + ": holds no steps");
    // A piece cut short ends between checkpoints: nothing claimed to compare with.
    if (piece.records.size() > static_cast<std::size_t>(options.steps))
      piece.records.resize(static_cast<std::size_t>(options.steps));
    else
      piece.claimed = checkpoint::read_safetensors(dir / manifest.checkpoints[index + 1].file.path);
    pieces.push_back(std::move(piece));
  }
  Profile profile = run_profile(task, pieces, options, manifest.runtime.shards, nullptr, make_replayer);
  profile.source = "bundle";
  return profile;
}

Profile profile_task(const Task& task, const ProfileOptions& options, const SettingReplayerFactory& make_replayer) {
  check_options(options);
  std::unique_ptr<Replayer> reference = make_replayer(task, {options.devices.front(), options.threads.front()});
  const std::int64_t samples = reference->train_samples();
  const std::int64_t total = total_steps(task, samples);
  const std::int64_t steps = std::min<std::int64_t>(options.steps, total);
  Piece piece;
  piece.start = reference->initial_state();
  DataOrder order(task.seed, static_cast<std::uint32_t>(samples), static_cast<std::uint32_t>(task.training.batch_size));
  for (std::int64_t step = 1; step <= steps; ++step) {
    const std::span<const std::uint32_t> batch = order.batch(step);
    piece.records.push_back({step, {batch.begin(), batch.end()}, 0.0f, learning_rate_at(task.training, step, total)});
  }
  Profile profile = run_profile(task, {std::move(piece)}, options, 1, std::move(reference), make_replayer);
  profile.source = "task";
  return profile;
}

ProfileThresholds read_profile_thresholds(const std::filesystem::path& path) {
  try {
    const json document = parse_json_document(read_file(path), path.string());
    ObjectReader reader(document, "profile");
    const std::string schema = reader.string("schema");
    if (schema != kProfileSchema)
      ObjectReader::fail(reader.field("schema"), "expected \"" + std::string(kProfileSchema) + "\", got \"" + schema + "\"");
    ProfileThresholds profile;
    profile.task_sha256 = reader.sha256("task_sha256");
    ObjectReader thresholds = reader.object("thresholds");
    auto positive = [&](std::string_view key) {
      const double value = thresholds.number(key);
      if (!(value > 0.0)) ObjectReader::fail(thresholds.field(key), fmt::format("expected a positive number, got {}", value));
      return value;
    };
    profile.thresholds = {positive("l1"), positive("l2"), positive("linf"), positive("cosine_distance")};
    return profile;
  } catch (const Error& error) {
    throw Error(ErrorKind::Config, "profile " + path.string() + " cannot be used: " + error.what());
  }
}

void check_profile_applies(const ProfileThresholds& profile, const std::filesystem::path& profile_path,
                           const std::filesystem::path& bundle_dir) {
  const Manifest manifest = read_manifest(bundle_dir);
  if (manifest.task_sha256 != profile.task_sha256)
    throw Error(ErrorKind::Config, "profile " + profile_path.string() + " was measured for task " + profile.task_sha256 +
                                       ", but the bundle is for task " + manifest.task_sha256 +
                                       ": thresholds do not carry over between tasks; profile this task (`solver profile`)");
}

}  // namespace solver::proof
