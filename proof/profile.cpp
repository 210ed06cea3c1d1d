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
#include "common/bundle_files.h"
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

// Each part's largest metrics, and the larger loss spread.
void widen(StateThresholds& bounds, const StateThresholds& other) {
  for (const auto& [part, values] : other.parts) bounds.parts[part] = largest(bounds.parts[part], values);
  bounds.loss = std::max(bounds.loss, other.loss);
}

// What rounding alone can do: one float32 rounding per step moves a value w by at most
// epsilon * |w|, so after n steps a part may drift by n * epsilon * its norm, and 1 - cosine
// (about half the squared relative l2 distance) by (n * epsilon)^2 / 2; a loss by n * epsilon
// of itself.
StateThresholds rounding_floor(const std::map<std::string, MetricValues>& norms, std::int64_t steps) {
  const double relative = static_cast<double>(steps) * std::numeric_limits<float>::epsilon();
  StateThresholds floor;
  for (const auto& [part, norm] : norms)
    floor.parts[part] = {relative * norm.l1, relative * norm.l2, relative * norm.linf, 0.5 * relative * relative};
  floor.loss = relative;
  return floor;
}

// The largest relative difference between two runs' losses of the same steps.
double loss_spread(const std::vector<float>& reference, const std::vector<float>& losses) {
  double spread = 0.0;
  for (std::size_t i = 0; i < std::min(reference.size(), losses.size()); ++i) {
    const double a = reference[i], b = losses[i];
    const double scale = std::max(std::abs(a), std::abs(b));
    if (scale > 0.0) spread = std::max(spread, std::abs(a - b) / scale);
  }
  return spread;
}

json metrics_json(const MetricValues& values) {
  return {{"l1", values.l1}, {"l2", values.l2}, {"linf", values.linf}, {"cosine_distance", values.cosine}};
}

json thresholds_json(const StateThresholds& thresholds) {
  json parts = json::object();
  for (const auto& [part, values] : thresholds.parts) parts[part] = metrics_json(values);
  return {{"parts", std::move(parts)}, {"loss", thresholds.loss}};
}

// Replays every piece under every setting, with `shards` data-parallel shards, and derives the
// thresholds. `first` is a replayer already built for the reference setting (the task's pieces
// needed it to exist).
Profile run_profile(const Task& task, const std::vector<Piece>& pieces, const ProfileOptions& options, int shards,
                    std::unique_ptr<Replayer> first, const ReplayerFactory& make_replayer) {
  Profile profile;
  profile.task_id = task.id;
  profile.task_sha256 = task_sha256(task);
  profile.skipped = options.skipped;
  std::vector<Replayer::Result> reference_ends;
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
      if (is_reference) reference_ends.push_back(result);
      const Replayer::Result& reference = reference_ends[i];
      PieceReport report;
      report.first_step = piece.records.front().step;
      report.last_step = piece.records.back().step;
      report.from_reference = parameter_distance(reference.state.tensors, result.state.tensors);
      const std::optional<StateDifference> difference = first_difference(reference.state, result.state);
      report.first_difference = difference ? difference->name : "";
      report.bitwise_equal = report.first_difference.empty();
      if (piece.claimed) report.from_claimed = parameter_distance(piece.claimed->tensors, result.state.tensors);
      variation.bitwise_equal = variation.bitwise_equal && report.bitwise_equal;
      StateThresholds spread;
      for (const auto& [part, distance] : part_distances(reference.state, result.state)) spread.parts[part] = as_spread(distance);
      spread.loss = loss_spread(reference.losses, result.losses);
      widen(variation.spread, spread);
      log_info("profile", "{} ({} threads on {}): steps {}-{}: l2 {:.3g} from the reference{}", name, setting.threads,
               setting.device, report.first_step, report.last_step, report.from_reference.l2,
               report.bitwise_equal ? ", bitwise equal" : ", differs first in " + report.first_difference);
      variation.pieces.push_back(std::move(report));
    }
    variation.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (!profile.variations.empty()) widen(profile.observed_spread, variation.spread);
    profile.variations.push_back(std::move(variation));
  }
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const auto steps = static_cast<std::int64_t>(pieces[i].records.size());
    const std::map<std::string, MetricValues> norms = part_norms(reference_ends[i].state);
    for (const auto& [part, norm] : norms) profile.part_norm[part] = largest(profile.part_norm[part], norm);
    profile.longest_piece = std::max(profile.longest_piece, steps);
    widen(profile.floor, rounding_floor(norms, steps));
  }
  StateThresholds basis = profile.floor;
  widen(basis, profile.observed_spread);
  const double factor = profile.safety_factor;
  for (const auto& [part, values] : basis.parts)
    profile.thresholds.parts[part] = {factor * values.l1, factor * values.l2, factor * values.linf, factor * values.cosine};
  profile.thresholds.loss = factor * basis.loss;
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
                              {"spread", thresholds_json(variation.spread)},
                              {"seconds", variation.seconds},
                              {"pieces", std::move(piece_list)}});
  }
  json skipped_list = json::array();
  for (const auto& [setting, reason] : skipped) skipped_list.push_back({{"setting", setting}, {"reason", reason}});
  json runtimes = json::array();
  for (const VariationReport& variation : variations) runtimes.push_back(runtime_to_json(variation.runtime));
  json norms = json::object();
  for (const auto& [part, norm] : part_norm) norms[part] = {{"l1", norm.l1}, {"l2", norm.l2}, {"linf", norm.linf}};
  return {{"schema", kProfileSchema},
          {"task_id", task_id},
          {"task_sha256", task_sha256},
          {"source", source},
          {"runtime", variations.empty() ? json(nullptr) : runtime_to_json(variations.front().runtime)},
          {"variations", std::move(variation_list)},
          {"skipped", std::move(skipped_list)},
          {"runtimes", std::move(runtimes)},
          {"part_norm", std::move(norms)},
          {"longest_piece_steps", longest_piece},
          {"observed_spread", thresholds_json(observed_spread)},
          {"floor", thresholds_json(floor)},
          {"safety_factor", safety_factor},
          {"thresholds", thresholds_json(thresholds)}};
}

Profile profile_bundle(const std::filesystem::path& dir, const ProfileOptions& options,
                       const ReplayerFactory& make_replayer) {
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
    piece.start = checkpoint::read_safetensors(bundle_file(dir, manifest.checkpoints[index].file.path).path);
    piece.records = read_bundle_segment(dir, segment, task.training.batch_size);
    if (piece.records.empty()) throw Error(ErrorKind::Input, segment.file.path + ": holds no steps");
    // A piece cut short ends between checkpoints: nothing claimed to compare with.
    if (piece.records.size() > static_cast<std::size_t>(options.steps))
      piece.records.resize(static_cast<std::size_t>(options.steps));
    else
      piece.claimed = checkpoint::read_safetensors(bundle_file(dir, manifest.checkpoints[index + 1].file.path).path);
    pieces.push_back(std::move(piece));
  }
  Profile profile = run_profile(task, pieces, options, manifest.runtime.shards, nullptr, make_replayer);
  profile.source = "bundle";
  return profile;
}

Profile profile_task(const Task& task, const ProfileOptions& options, const ReplayerFactory& make_replayer) {
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

RuntimeCoverage read_profile(const std::filesystem::path& path) {
  try {
    const json document = parse_json_document(read_file(path), path.string());
    ObjectReader reader(document, "profile");
    const std::string schema = reader.string("schema");
    if (schema != kProfileSchema)
      ObjectReader::fail(reader.field("schema"), "expected \"" + std::string(kProfileSchema) + "\", got \"" + schema +
                                                     "\" (profiles from an older solver lack per-part thresholds: profile again)");
    RuntimeCoverage coverage;
    coverage.source = "profile " + path.string();
    coverage.task_sha256 = reader.sha256("task_sha256");
    const json& runtimes = reader.array("runtimes");
    for (std::size_t i = 0; i < runtimes.size(); ++i)
      coverage.runtimes.push_back(runtime_from_json(runtimes[i], "profile.runtimes[" + std::to_string(i) + "]"));
    ObjectReader thresholds = reader.object("thresholds");
    auto positive = [](ObjectReader& object, std::string_view key) {
      const double value = object.number(key);
      if (!(value > 0.0) || !std::isfinite(value))
        ObjectReader::fail(object.field(key), fmt::format("expected a positive number, got {}", value));
      return value;
    };
    coverage.thresholds.loss = positive(thresholds, "loss");
    const json& parts = thresholds.raw("parts");
    if (!parts.is_object() || parts.empty()) ObjectReader::fail(thresholds.field("parts"), "expected an object of parts");
    for (const auto& [part, values] : parts.items()) {
      ObjectReader metrics(values, thresholds.field("parts") + "." + part);
      coverage.thresholds.parts[part] = {positive(metrics, "l1"), positive(metrics, "l2"), positive(metrics, "linf"),
                                         positive(metrics, "cosine_distance")};
    }
    return coverage;
  } catch (const Error& error) {
    throw Error(ErrorKind::Config, "profile " + path.string() + " cannot be used: " + error.what());
  }
}

void check_profile_applies(const RuntimeCoverage& profile, const std::filesystem::path& bundle_dir) {
  const Manifest manifest = read_manifest(bundle_dir);
  if (manifest.task_sha256 != profile.task_sha256)
    throw Error(ErrorKind::Config, profile.source + " was measured for task " + profile.task_sha256 +
                                       ", but the bundle is for task " + manifest.task_sha256 +
                                       ": thresholds do not carry over between tasks; profile this task (`solver profile`)");
}

}  // namespace solver::proof
