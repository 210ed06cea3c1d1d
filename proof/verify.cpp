// verify_bundle: judges a bundle, cheapest checks first. Invariant: nothing is replayed until
// everything that can be checked without training passed (signature, checkpoint sequence,
// hash chain, file hashes, data order, learning rates, initialisation, update distances): a
// replay is the expensive part, and it is only meaningful on a bundle whose claims are
// consistent. Every failure names what failed (file, step or tensor) with expected vs found.
// The verifier's random choices derive from one seed that the verdict reports, so anyone can
// reproduce a verdict.
#include "proof/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "common/bundle_files.h"
#include "common/data_order.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/sha256.h"
#include "proof/detail/bundle_paths.h"
#include "proof/detail/journal.h"
#include "proof/detail/replay_rules.h"
#include "proof/detail/state_invariants.h"
#include "proof/detail/segment_selection.h"
#include "proof/manifest.h"
#include "proof/parameters.h"

namespace solver::proof {
namespace {

using detail::lr_agrees;
using detail::losses_agree;
using detail::same_runtime;
using nlohmann::json;

std::string steps_text(std::int64_t first, std::int64_t last) {
  return std::to_string(first) + "-" + std::to_string(last);
}

std::string and_more(std::int64_t others) {
  if (others <= 0) return "";
  return " (and " + std::to_string(others) + (others == 1 ? " more step)" : " more steps)");
}

struct BundleFiles {
  std::string manifest_text;  // exactly the signed bytes
  std::string signature_hex;
  Manifest manifest;
};

BundleFiles read_bundle(const std::filesystem::path& dir) {
  const std::filesystem::path manifest_path = dir / kManifestFile;
  const std::filesystem::path signature_path = dir / kSignatureFile;
  // Absent is "not a bundle"; present but a symlink, a folder or too large is refused below.
  if (!std::filesystem::exists(std::filesystem::symlink_status(manifest_path)))
    throw Error(ErrorKind::Input, "not a bundle: " + dir.string() + " has no manifest.json" +
                                      (detail::Journal(dir).exists()
                                           ? " (it has a journal: an unfinished run; complete it with `solver run --resume`)"
                                           : ""));
  if (!std::filesystem::exists(std::filesystem::symlink_status(signature_path)))
    throw Error(ErrorKind::Input, "not a bundle: " + dir.string() + " has manifest.json but no manifest.sig");
  BundleFiles files;
  try {
    files.manifest_text = read_bundle_file(dir, kManifestFile, kMaxManifestBytes, "manifest");
    files.signature_hex = read_bundle_signature(dir);
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw error.with_context("not a bundle: " + dir.string());
  }
  files.manifest = parse_manifest(files.manifest_text, manifest_path);
  return files;
}

void check_signature(const BundleFiles& files, const VerifyOptions& options, std::vector<std::string>& failures) {
  const std::string& signer = files.manifest.solver_public_key;
  if (!verify_signature(signer, files.manifest_text, files.signature_hex))
    failures.push_back("signature: manifest.sig is not a valid signature of manifest.json by the key it names (" + signer + ")");
  if (options.expected_public_key && *options.expected_public_key != signer)
    failures.push_back("signature: the bundle is signed by " + signer + ", expected " + *options.expected_public_key);
}

// Parses the task and checks that the manifest's hashes, seeds and plan follow from it.
std::optional<Task> check_task(const std::filesystem::path& dir, const Manifest& manifest, const VerifyOptions& options,
                               std::vector<std::string>& failures) {
  Task task;
  try {
    task = parse_task(manifest.task, dir);
  } catch (const Error& error) {
    failures.push_back(std::string("task: ") + error.what());
    return std::nullopt;
  }
  const std::string recomputed = task_sha256(task);
  if (recomputed != manifest.task_sha256)
    failures.push_back("task: the manifest's task hashes to " + recomputed + ", but task_sha256 says " + manifest.task_sha256);
  if (options.expected_task_sha256 && *options.expected_task_sha256 != recomputed)
    failures.push_back("task: the bundle is for task " + recomputed + ", expected " + *options.expected_task_sha256);

  if (task.model.kind == ModelKind::TorchScript) {
    if (!manifest.model_file)
      failures.push_back("model: the task's TorchScript module is not in the bundle (no model_file)");
    else if (manifest.model_file->sha256 != task.model.file.sha256)
      failures.push_back("model: " + manifest.model_file->path + " has sha256 " + manifest.model_file->sha256 +
                         ", the task's module has " + task.model.file.sha256);
    if (manifest.model_sha256 != task.model.file.sha256)
      failures.push_back("model: model_sha256 " + manifest.model_sha256 + " is not the task's module " + task.model.file.sha256);
  } else {
    const std::string spec_sha256 = sha256_hex(canonical_json(task_to_json(task).at("model")));
    if (manifest.model_sha256 != spec_sha256)
      failures.push_back("model: model_sha256 " + manifest.model_sha256 + " is not the task's model spec " + spec_sha256);
    if (manifest.model_file)
      failures.push_back("model: a built-in " + std::string(name_of(task.model.kind)) + " model has no module file, but the manifest lists " +
                         manifest.model_file->path);
  }

  if (manifest.seed != task.seed)
    failures.push_back("seeds: seed " + std::to_string(manifest.seed) + " differs from the task's seed " + std::to_string(task.seed));
  if (manifest.data_order_generator != kDataOrderGenerator)
    failures.push_back("seeds: data order generator \"" + manifest.data_order_generator +
                       "\" is not one this verifier knows (expected \"" + std::string(kDataOrderGenerator) + "\")");

  const std::int64_t batch = task.training.batch_size;
  if (manifest.train_samples < batch || manifest.train_samples > std::numeric_limits<std::uint32_t>::max()) {
    failures.push_back("plan: train_samples " + std::to_string(manifest.train_samples) + " must be between the batch size " +
                       std::to_string(batch) + " and 2^32-1");
    return task;
  }
  if (manifest.steps_per_epoch != manifest.train_samples / batch)
    failures.push_back("plan: steps_per_epoch is " + std::to_string(manifest.steps_per_epoch) + "; " +
                       std::to_string(manifest.train_samples) + " samples in batches of " + std::to_string(batch) +
                       " give " + std::to_string(manifest.train_samples / batch));
  const std::int64_t expected_total = total_steps(task, manifest.train_samples);
  if (manifest.total_steps != expected_total)
    failures.push_back("plan: total_steps is " + std::to_string(manifest.total_steps) + "; the task gives " +
                       std::to_string(expected_total) + " for " + std::to_string(manifest.train_samples) + " training samples");
  if (manifest.checkpoint_every != task.checkpoint_every)
    failures.push_back("plan: checkpoint_every is " + std::to_string(manifest.checkpoint_every) + "; the task says " +
                       std::to_string(task.checkpoint_every));
  return task;
}

// Every listed file: named as its step implies, a regular file in the bundle (not a symlink),
// of the recorded size and hash.
void check_files(const std::filesystem::path& dir, const Manifest& manifest, std::vector<std::string>& failures) {
  auto check = [&](const FileEntry& entry, const std::string& expected_path, const std::string& what) {
    if (entry.path != expected_path) {
      failures.push_back(what + " is stored as " + entry.path + ", expected " + expected_path);
      return;
    }
    BundleFile file;
    try {
      file = bundle_file(dir, entry.path);
    } catch (const Error& error) {
      if (error.kind() != ErrorKind::Input) throw;
      failures.push_back(error.what());  // missing, a symlink, or not a regular file: nothing of it is read
      return;
    }
    if (file.size != entry.size) {
      failures.push_back(entry.path + ": size mismatch (manifest " + std::to_string(entry.size) + " bytes, file " +
                         std::to_string(file.size) + ")");
      return;
    }
    const std::string actual = sha256_file_hex(file.path);
    if (actual != entry.sha256)
      failures.push_back(entry.path + ": sha256 mismatch (manifest " + entry.sha256 + ", file " + actual + ")");
  };
  if (manifest.model_file) check(*manifest.model_file, std::string(detail::kModelFile), "model");
  for (const CheckpointEntry& entry : manifest.checkpoints)
    check(entry.file, detail::checkpoint_path(entry.step), "checkpoint " + std::to_string(entry.step));
  for (const SegmentEntry& entry : manifest.segments)
    check(entry.file, detail::segment_path(entry.first_step, entry.last_step),
          "segment " + steps_text(entry.first_step, entry.last_step));
}

// Checkpoints at 0, k, 2k, ..., total_steps (the last interval may be shorter), and one
// segment between each pair. Returns false (with the reason) at the first break.
bool check_sequence(const Manifest& manifest, std::vector<std::string>& failures) {
  const std::int64_t k = manifest.checkpoint_every;
  const std::int64_t total = manifest.total_steps;
  const auto& checkpoints = manifest.checkpoints;
  if (k <= 0 || total <= 0) {
    failures.push_back("checkpoints: checkpoint_every " + std::to_string(k) + " and total_steps " + std::to_string(total) +
                       " must be positive");
    return false;
  }
  if (checkpoints.empty()) {
    failures.push_back("checkpoints: none listed (expected step 0 first)");
    return false;
  }
  for (std::size_t i = 0; i < checkpoints.size(); ++i) {
    const std::int64_t found = checkpoints[i].step;
    if (i == 0) {
      if (found != 0) {
        failures.push_back("checkpoints: expected step 0 first, found " + std::to_string(found));
        return false;
      }
      continue;
    }
    const std::int64_t previous = checkpoints[i - 1].step;
    if (previous == total) {
      failures.push_back("checkpoints: step " + std::to_string(total) + " is the run's last, but " +
                         std::to_string(checkpoints.size() - i) + " more checkpoints follow it");
      return false;
    }
    const std::int64_t expected = next_checkpoint_step(previous, k, total);
    if (found != expected) {
      failures.push_back("checkpoints: expected step " + std::to_string(expected) + " after " + std::to_string(previous) +
                         ", found " + std::to_string(found) + " (missing or reordered)");
      return false;
    }
  }
  if (checkpoints.back().step != total) {
    failures.push_back("checkpoints: the last is step " + std::to_string(checkpoints.back().step) +
                       ", expected the run's last step " + std::to_string(total) + " (missing checkpoints)");
    return false;
  }
  bool consistent = true;
  for (const CheckpointEntry& entry : checkpoints)
    if (entry.update.has_value() != (entry.step > 0)) {
      failures.push_back("checkpoints: step " + std::to_string(entry.step) +
                         (entry.step > 0 ? " has no recorded update distance" : " records an update distance, but it is the start"));
      consistent = false;
    }
  if (manifest.segments.size() != checkpoints.size() - 1) {
    failures.push_back("segments: expected " + std::to_string(checkpoints.size() - 1) +
                       " (one per checkpoint after step 0), found " + std::to_string(manifest.segments.size()));
    return false;
  }
  for (std::size_t i = 0; i < manifest.segments.size(); ++i) {
    const SegmentEntry& segment = manifest.segments[i];
    const std::int64_t first = checkpoints[i].step + 1;
    const std::int64_t last = checkpoints[i + 1].step;
    if (segment.first_step != first || segment.last_step != last) {
      failures.push_back("segments: entry " + std::to_string(i) + " covers steps " +
                         steps_text(segment.first_step, segment.last_step) + ", expected " + steps_text(first, last));
      return false;
    }
  }
  return consistent;
}

void check_chain(const Manifest& manifest, std::vector<std::string>& failures) {
  std::string previous = manifest.task_sha256;
  for (std::size_t i = 0; i < manifest.checkpoints.size(); ++i) {
    const CheckpointEntry& entry = manifest.checkpoints[i];
    const std::string segment_sha256 = i == 0 ? "" : manifest.segments[i - 1].file.sha256;
    const std::string link = chain_link(previous, entry.step, entry.file.sha256, segment_sha256);
    if (link != entry.chain) {
      failures.push_back("hash chain: breaks at step " + std::to_string(entry.step) + " (recorded " + entry.chain +
                         ", recomputed " + link + ")");
      return;
    }
    previous = link;
  }
  if (manifest.chain_root != previous)
    failures.push_back("hash chain: chain_root " + manifest.chain_root + " is not the last checkpoint's chain " + previous);
}

void check_commitments(const Manifest& manifest, const VerifyOptions& options, std::vector<std::string>& failures) {
  for (const auto& [step, committed] : options.committed_checkpoints) {
    const auto entry = std::ranges::find(manifest.checkpoints, step, &CheckpointEntry::step);
    if (entry == manifest.checkpoints.end())
      failures.push_back("commitments: checkpoint step " + std::to_string(step) + " was committed while training (sha256 " +
                         committed + ") but is not in the bundle");
    else if (entry->file.sha256 != committed)
      failures.push_back("commitments: checkpoint step " + std::to_string(step) + " has sha256 " + entry->file.sha256 +
                         " in the bundle, but " + committed + " was committed while training: the bundle was rewritten");
  }
}

// The records of each segment (empty where a segment could not be read; a failure says why).
std::vector<std::vector<StepRecord>> read_segments(const std::filesystem::path& dir, const Manifest& manifest,
                                                   std::int64_t batch_size, std::vector<std::string>& failures) {
  std::vector<std::vector<StepRecord>> segments;
  for (const SegmentEntry& entry : manifest.segments) {
    try {
      std::vector<StepRecord> records = read_bundle_segment(dir, entry, batch_size);
      if (records.front().step != entry.first_step || records.back().step != entry.last_step)
        throw Error(ErrorKind::Input, entry.file.path + ": holds steps " +
                                          steps_text(records.front().step, records.back().step) + ", the manifest says " +
                                          steps_text(entry.first_step, entry.last_step));
      segments.push_back(std::move(records));
    } catch (const Error& error) {
      failures.push_back(error.what());
      segments.emplace_back();
    }
  }
  return segments;
}

// Each step's batch and learning rate must be the ones the task's seed and schedule give.
void check_data_order(const Task& task, const Manifest& manifest, const std::vector<std::vector<StepRecord>>& segments,
                      std::vector<std::string>& failures) {
  DataOrder order(task.seed, static_cast<std::uint32_t>(manifest.train_samples),
                  static_cast<std::uint32_t>(task.training.batch_size));
  std::optional<std::int64_t> first_wrong_batch, first_wrong_lr;
  std::int64_t wrong_batches = 0, wrong_lrs = 0;
  double recorded_lr = 0.0, expected_lr = 0.0;
  for (const auto& records : segments)
    for (const StepRecord& record : records) {
      const std::span<const std::uint32_t> expected = order.batch(record.step);
      if (!std::ranges::equal(expected, record.indices)) {
        if (!first_wrong_batch) first_wrong_batch = record.step;
        ++wrong_batches;
      }
      const double lr = learning_rate_at(task.training, record.step, manifest.total_steps);
      if (!lr_agrees(record.lr, lr, task.training.optimizer.lr)) {
        if (!first_wrong_lr) {
          first_wrong_lr = record.step;
          recorded_lr = record.lr;
          expected_lr = lr;
        }
        ++wrong_lrs;
      }
    }
  if (first_wrong_batch)
    failures.push_back("data order: step " + std::to_string(*first_wrong_batch) +
                       " used indices the task seed does not give" + and_more(wrong_batches - 1));
  if (first_wrong_lr)
    failures.push_back(fmt::format("learning rate: step {} recorded lr {}, the task's schedule gives {}{}", *first_wrong_lr,
                                   recorded_lr, expected_lr, and_more(wrong_lrs - 1)));
}

// Where two states first differ: a tensor (by name) whose dtype, shape or bytes differ or that
// only one state has, else a metadata entry (the trainer keeps its step counters there).
std::optional<checkpoint::Checkpoint> read_checkpoint(const std::filesystem::path& dir, const CheckpointEntry& entry,
                                                      std::vector<std::string>& failures) {
  try {
    return checkpoint::read_safetensors(bundle_file(dir, entry.file.path).path);
  } catch (const Error& error) {
    failures.push_back(entry.file.path + ": " + error.what());
    return std::nullopt;
  }
}

// The first field where two distances differ, as "l2 <recorded>, recomputed <value>".
std::optional<std::string> distance_difference(const kernels::WeightDistance& recorded,
                                               const kernels::WeightDistance& recomputed) {
  const std::pair<const char*, std::pair<double, double>> fields[] = {
      {"l2", {recorded.l2, recomputed.l2}},
      {"l1", {recorded.l1, recomputed.l1}},
      {"linf", {recorded.linf, recomputed.linf}},
      {"cosine", {recorded.cosine, recomputed.cosine}}};
  for (const auto& [name, values] : fields)
    if (values.first != values.second)
      return fmt::format("recorded {} {}, recomputed {}", name, values.first, values.second);
  return std::nullopt;
}

// Everything the checkpoint files show without training, reading each once and keeping only the
// previous one: each file no larger than a state of the task's model and optimizer can be (so a
// forged file cannot make the verifier read gigabytes), its layout exactly that state's, step 0
// the initialisation the task seed gives, the optimizer invariants at every checkpoint, and each
// recorded update distance. Returns how much each part of the state changed over each segment
// (empty where a checkpoint could not be read).
std::vector<PartDistances> check_states(const std::filesystem::path& dir, const Task& task, const Manifest& manifest,
                                        const checkpoint::Checkpoint& initial, std::vector<std::string>& failures) {
  const std::uint64_t size_bound = safetensors_size_bound(initial);
  auto read = [&](const CheckpointEntry& entry) -> std::optional<checkpoint::Checkpoint> {
    if (entry.file.size > size_bound) {
      failures.push_back(fmt::format("{}: {} bytes, more than the {} bytes a state of the task's model and optimizer can take",
                                     entry.file.path, entry.file.size, size_bound));
      return std::nullopt;
    }
    std::optional<checkpoint::Checkpoint> state = read_checkpoint(dir, entry, failures);
    if (!state) return state;
    if (const auto difference = layout_difference(initial, *state)) {
      failures.push_back(entry.file.path + ": not the state of the task's model and optimizer: " + *difference);
      return std::nullopt;
    }
    return state;
  };
  std::optional<checkpoint::Checkpoint> previous = read(manifest.checkpoints.front());
  if (previous) {
    if (const auto difference = first_difference(initial, *previous))
      failures.push_back(std::string("initialisation: step 0 differs from the weights the task seed gives (") +
                         (difference->metadata ? "metadata " : "") + difference->name + ")");
  }
  std::vector<PartDistances> changes;
  for (std::size_t i = 1; i < manifest.checkpoints.size(); ++i) {
    const CheckpointEntry& entry = manifest.checkpoints[i];
    std::optional<checkpoint::Checkpoint> current = read(entry);
    if (current)
      detail::check_state_invariants(task, entry.step, *current, previous ? &*previous : nullptr,
                                     manifest.checkpoints[i - 1].step, failures);
    changes.emplace_back();
    if (previous && current) {
      const std::string what = "update distance at step " + std::to_string(entry.step) + ": ";
      try {
        // The parameters' part is the update distance: the same tensors fed in the same order
        // as parameter_distance feeds them (proof/parameters.h).
        changes.back() = part_distances(*previous, *current);
        const auto parameters = changes.back().find("param");
        if (parameters == changes.back().end()) throw Error(ErrorKind::Input, "the state has no parameters");
        if (const auto difference = distance_difference(*entry.update, parameters->second)) failures.push_back(what + *difference);
      } catch (const Error& error) {
        failures.push_back(what + "cannot be recomputed: " + error.what());
      }
    }
    previous = std::move(current);
  }
  return changes;
}

// How unusual each segment's change of the training state is against the segments around it:
// for each part, the log of its l2 change over the median change of that part in the (up to
// four) nearest other segments, in either direction (a part that froze is as suspect as one that
// jumped); the segment's score is its largest. Against its neighbours, not the whole run, so
// that the schedule's slow drift (a warm-up, a decay to zero) is not what stands out. A forger
// who rewrites one part at one checkpoint (Adam's second moment, so that the parameters then
// barely move) makes that part's change there a jump, however small the parameters' update; a
// forger who spreads the rewrite thinly must forge many segments, which the random draws catch.
std::vector<double> change_scores(const std::vector<PartDistances>& changes) {
  constexpr std::size_t kNeighbours = 2;  // on each side
  std::vector<double> scores(changes.size(), 0.0);
  for (std::size_t i = 0; i < changes.size(); ++i)
    for (const auto& [part, distance] : changes[i]) {
      std::vector<double> around;
      for (std::size_t j = i > kNeighbours ? i - kNeighbours : 0; j <= std::min(i + kNeighbours, changes.size() - 1); ++j)
        if (j != i && changes[j].contains(part)) around.push_back(changes[j].at(part).l2);
      if (around.empty()) continue;
      std::ranges::sort(around);
      const double baseline = around.size() % 2 == 1 ? around[around.size() / 2]
                                                     : 0.5 * (around[around.size() / 2 - 1] + around[around.size() / 2]);
      // A floor a millionth of the baseline keeps a frozen part finite; against a baseline of
      // zero, any change at all stands out.
      const double floor = std::max(baseline * 1e-6, std::numeric_limits<double>::min());
      scores[i] = std::max(scores[i], std::abs(std::log((distance.l2 + floor) / (baseline + floor))));
    }
  return scores;
}

// Where two states differ in what has no rounding to forgive: a tensor that is not float32
// (integer counters), or a metadata entry. nullopt when those are all equal.
std::optional<std::string> exact_difference(const checkpoint::Checkpoint& expected, const checkpoint::Checkpoint& found) {
  for (const checkpoint::Tensor& tensor : expected.tensors) {
    if (tensor.dtype == checkpoint::DType::F32) continue;
    const checkpoint::Tensor* other = found.find(tensor.name);
    if (other == nullptr || other->dtype != tensor.dtype || other->shape != tensor.shape || other->data != tensor.data)
      return "tensor " + tensor.name;
  }
  if (expected.metadata != found.metadata) return "the metadata";
  return std::nullopt;
}

// Replays one segment from its start checkpoint and judges the result against its end.
SegmentReport replay_segment(const std::filesystem::path& dir, const Manifest& manifest, const detail::SegmentChoice& choice,
                             const std::vector<StepRecord>& records, Replayer& replayer, const RuntimeCoverage* coverage,
                             std::vector<std::string>& failures) {
  const bool bitwise_required = coverage == nullptr;
  const SegmentEntry& segment = manifest.segments[choice.segment];
  SegmentReport report;
  report.first_step = segment.first_step;
  report.last_step = segment.last_step;
  report.chosen_by = choice.chosen_by;
  report.bitwise_required = bitwise_required;
  const std::string what = "segment steps " + steps_text(segment.first_step, segment.last_step) + ": ";

  const auto start = read_checkpoint(dir, manifest.checkpoints[choice.segment], failures);
  const auto claimed = read_checkpoint(dir, manifest.checkpoints[choice.segment + 1], failures);
  if (!start || !claimed) return report;

  const std::size_t failures_before = failures.size();
  const auto began = std::chrono::steady_clock::now();
  Replayer::Result result;
  try {
    result = replayer.replay(*start, records);
  } catch (const Error& error) {
    // A bundle whose checkpoint the model cannot load, or whose model overruns the replay's
    // budget (docs/bundle-format.md, "Replay budget"), is rejected; a broken verifier is not a verdict.
    if (error.kind() != ErrorKind::Input && error.kind() != ErrorKind::Budget) throw error.with_context(what + "replay");
    failures.push_back(what + "replay failed: " + error.what());
    return report;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  report.replayed = true;

  const std::optional<StateDifference> difference = first_difference(*claimed, result.state);
  report.bitwise_equal = !difference;
  try {
    report.distances = part_distances(*claimed, result.state);
  } catch (const Error& error) {
    failures.push_back(what + "the replayed state does not have the claimed checkpoint's layout: " + error.what());
    return report;
  }
  const double parameter_l2 = report.distances.contains("param") ? report.distances.at("param").l2 : 0.0;
  if (bitwise_required) {
    if (difference)
      failures.push_back(fmt::format("{}replay differs from the claimed checkpoint (parameters l2 {}, but the same runtime "
                                     "must reproduce it bit for bit; first differing {}{})",
                                     what, parameter_l2, difference->metadata ? "metadata entry " : "tensor ", difference->name));
  } else if (const auto exact = exact_difference(*claimed, result.state)) {
    failures.push_back(what + "replay differs from the claimed checkpoint in " + *exact +
                       ", which must be equal on any runtime");
  } else if (const auto exceeded = coverage->thresholds.exceeded_by(report.distances)) {
    failures.push_back(fmt::format("{}replay differs from the claimed checkpoint beyond the thresholds of {} ({})", what,
                                   coverage->source, *exceeded));
  }
  const bool state_passed = failures.size() == failures_before;

  report.losses_match = result.losses.size() == records.size();
  if (!report.losses_match) {
    failures.push_back(what + "the replay gave " + std::to_string(result.losses.size()) + " losses for " +
                       std::to_string(records.size()) + " steps");
  } else {
    for (std::size_t i = 0; i < records.size(); ++i)
      if (!losses_agree(records[i].loss, result.losses[i], bitwise_required ? 0.0 : coverage->thresholds.loss)) {
        report.losses_match = false;
        failures.push_back(fmt::format("{}recorded loss at step {} differs from the replay (recorded {}, replayed {})", what,
                                       records[i].step, records[i].loss, result.losses[i]));
        break;
      }
  }
  report.passed = state_passed && report.losses_match;
  log_debug("proof", "verify: segment steps={} chosen_by={} seconds={:.2f} parameters l2={} bitwise={} passed={}",
            steps_text(report.first_step, report.last_step), report.chosen_by, report.seconds, parameter_l2,
            report.bitwise_equal, report.passed);
  return report;
}

// What the outcome claims that the records settle without training: the final loss is the last
// step's, and the training time is a duration.
void check_outcome(const Manifest& manifest, const std::vector<std::vector<StepRecord>>& segments,
                   std::vector<std::string>& failures) {
  const TrainOutcome& outcome = manifest.outcome;
  if (!segments.empty() && !segments.back().empty() &&
      outcome.final_loss != static_cast<double>(segments.back().back().loss))
    failures.push_back(fmt::format("outcome: final_loss {} is not the last step's recorded loss {}", outcome.final_loss,
                                   segments.back().back().loss));
  if (!(outcome.train_seconds >= 0.0) || !std::isfinite(outcome.train_seconds))
    failures.push_back(fmt::format("outcome: train_seconds {} is not a duration", outcome.train_seconds));
  if (!(outcome.test_accuracy >= 0.0 && outcome.test_accuracy <= 1.0))
    failures.push_back(fmt::format("outcome: test_accuracy {} is not a share in [0, 1]", outcome.test_accuracy));
}

// The claimed test accuracy, measured again on the final checkpoint: exactly on the same
// runtime; within detail::kCrossRuntimeAccuracyTolerance on a covered one.
void check_test_accuracy(const std::filesystem::path& dir, const Manifest& manifest, Replayer& replayer, bool covered,
                         std::vector<std::string>& failures) {
  const std::optional<checkpoint::Checkpoint> final_state = read_checkpoint(dir, manifest.checkpoints.back(), failures);
  if (!final_state) return;
  double measured = 0.0;
  try {
    replayer.load_state(*final_state);
    measured = replayer.test_accuracy();
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Budget) throw error.with_context("measuring the final checkpoint's test accuracy");
    failures.push_back(std::string("outcome: the test accuracy could not be measured: ") + error.what());
    return;
  }
  const double claimed = manifest.outcome.test_accuracy;
  if (covered ? !(std::abs(measured - claimed) <= detail::kCrossRuntimeAccuracyTolerance) : measured != claimed)
    failures.push_back(fmt::format("outcome: test_accuracy is {}, but the final checkpoint scores {} on the test set{}", claimed,
                                   measured, covered ? "" : " (same runtime: it must be exact)"));
}

std::string runtime_text(const RuntimeInfo& runtime) {
  return fmt::format("{} (solver {}, LibTorch {}, {} threads, {} shards{})", runtime.device, runtime.solver_version,
                     runtime.torch_version, runtime.threads, runtime.shards,
                     runtime.deterministic ? "" : ", nondeterministic");
}

// The verifier's coverage that lists both the bundle's runtime and its own, for the bundle's task.
const RuntimeCoverage* covering(const VerifyOptions& options, const Manifest& manifest, const RuntimeInfo& own) {
  auto lists = [](const RuntimeCoverage& coverage, const RuntimeInfo& runtime) {
    return std::ranges::any_of(coverage.runtimes, [&](const RuntimeInfo& listed) { return same_runtime(listed, runtime); });
  };
  for (const RuntimeCoverage& coverage : options.coverages)
    if (coverage.task_sha256 == manifest.task_sha256 && lists(coverage, manifest.runtime) && lists(coverage, own))
      return &coverage;
  return nullptr;
}

json distances_json(const PartDistances& distances) {
  json parts = json::object();
  for (const auto& [part, distance] : distances) parts[part] = distance_to_json(distance);
  return parts;
}

void check_options(const VerifyOptions& options) {
  detail::check_selection_options(options);
  if (options.max_threads < 1 || options.max_shards < 1)
    throw Error(ErrorKind::Usage, fmt::format("verify: the thread and shard caps must be >= 1, got {} and {}",
                                              options.max_threads, options.max_shards));
}

}  // namespace

json Verdict::to_json() const {
  json reports = json::array();
  for (const SegmentReport& report : segments)
    reports.push_back({{"first_step", report.first_step},
                       {"last_step", report.last_step},
                       {"chosen_by", report.chosen_by},
                       {"distances", distances_json(report.distances)},
                       {"bitwise_equal", report.bitwise_equal},
                       {"losses_match", report.losses_match},
                       {"bitwise_required", report.bitwise_required},
                       {"passed", report.passed},
                       {"replayed", report.replayed},
                       {"seconds", report.seconds}});
  json verdict = {{"accepted", accepted},
                  {"failures", failures},
                  {"segments", std::move(reports)},
                  {"random_seed", random_seed},
                  {"same_runtime", same_runtime},
                  {"task_checked", task_checked},
          {"not_covered", not_covered ? json(*not_covered) : json(nullptr)},
                  {"segments_replayed", segments.size()},
                  {"segments_total", segments_total},
                  {"replayed_fraction", replayed_fraction},
                  {"replay_seconds", replay_seconds},
                  {"train_seconds", train_seconds}};
  if (detection) verdict["detection"] = detail::detection_to_json(*detection);
  return verdict;
}

VerdictSummary Verdict::summary() const {
  return {.accepted = accepted, .reason = accepted ? "replayed segments match" : failures.front(), .report = to_json()};
}

Verdict verify_bundle(const std::filesystem::path& dir, const VerifyOptions& options, const ReplayerFactory& make_replayer) {
  check_options(options);
  Verdict verdict;
  if (options.random_seed) {
    verdict.random_seed = *options.random_seed;
  } else {
    std::random_device random;
    verdict.random_seed = (static_cast<std::uint64_t>(random()) << 32) ^ random();
  }
  std::vector<std::string>& failures = verdict.failures;
  verdict.task_checked = options.expected_task_sha256.has_value();

  // 1-6: the bundle's claims are signed, ordered, chained, complete, hashed and match what was committed.
  const BundleFiles files = read_bundle(dir);
  const Manifest& manifest = files.manifest;
  verdict.train_seconds = manifest.outcome.train_seconds;
  verdict.segments_total = static_cast<std::int64_t>(manifest.segments.size());
  check_signature(files, options, failures);
  const std::optional<Task> task = check_task(dir, manifest, options, failures);
  // Structure before hashing: a manifest listing one file 100,000 times is refused by its
  // sequence, without hashing any file.
  if (check_sequence(manifest, failures)) {
    check_chain(manifest, failures);
    check_files(dir, manifest, failures);
  }
  check_commitments(manifest, options, failures);
  if (!failures.empty() || !task) return verdict;

  // 7-9: what the seed and the files determine without training.
  const std::vector<std::vector<StepRecord>> segments = read_segments(dir, manifest, task->training.batch_size, failures);
  check_data_order(*task, manifest, segments, failures);
  const Task replay_task = detail::with_bundled_model(*task, dir);
  check_outcome(manifest, segments, failures);
  // The runtime is only claimed: the verifier replays within its own caps.
  const RuntimeInfo& claimed = manifest.runtime;
  if (claimed.threads < 1 || claimed.shards < 1 || claimed.shards > task->training.batch_size)
    failures.push_back(fmt::format("runtime: {} threads and {} shards is not a way to train batches of {}", claimed.threads,
                                   claimed.shards, task->training.batch_size));
  if (!failures.empty()) return verdict;
  if (claimed.shards > options.max_shards) {
    verdict.not_covered = fmt::format("runtime: the bundle splits each step into {} shards, more than this verifier's cap "
                                      "of {} (--max-shards)", claimed.shards, options.max_shards);
    return verdict;
  }
  std::unique_ptr<Replayer> replayer;
  try {
    replayer = make_replayer(replay_task, {options.device, std::min(claimed.threads, options.max_threads), claimed.shards});
  } catch (const Error& error) {
    throw error.with_context("preparing the replay of task " + task->id);
  }
  if (replayer->train_samples() != manifest.train_samples)
    failures.push_back("plan: the manifest says " + std::to_string(manifest.train_samples) +
                       " training samples, the task's dataset has " + std::to_string(replayer->train_samples()));
  const std::vector<PartDistances> changes = check_states(dir, *task, manifest, replayer->initial_state(), failures);
  verdict.same_runtime = same_runtime(claimed, replayer->runtime());
  if (!failures.empty() || !options.replay) return verdict;
  const RuntimeCoverage* coverage = verdict.same_runtime ? nullptr : covering(options, manifest, replayer->runtime());
  if (!verdict.same_runtime && coverage == nullptr) {
    verdict.not_covered = "runtime: the bundle was trained on " + runtime_text(claimed) + "; this verifier replays on " +
                          runtime_text(replayer->runtime()) +
                          ", and none of its profiles covers both (profile the task on both with `solver profile` and "
                          "pass --profile, or verify where the bundle's runtime can be reproduced bit for bit)";
    return verdict;
  }

  // 10-11: replays of segments chosen after the bundle was committed.
  std::vector<std::int64_t> epoch_of;  // a segment belongs to the epoch of its last step
  for (const SegmentEntry& segment : manifest.segments) epoch_of.push_back((segment.last_step - 1) / manifest.steps_per_epoch);
  const std::vector<detail::SegmentChoice> choices =
      detail::select_segments(change_scores(changes), epoch_of, options, verdict.random_seed);
  verdict.detection = detail::detection_of(choices, verdict.segments_total, options);
  std::int64_t replayed_steps = 0;
  for (const detail::SegmentChoice& choice : choices) {
    SegmentReport report = replay_segment(dir, manifest, choice, segments[choice.segment], *replayer, coverage, failures);
    const bool replayed = report.replayed;
    if (replayed) replayed_steps += report.last_step - report.first_step + 1;
    verdict.replay_seconds += report.seconds;
    verdict.segments.push_back(std::move(report));
    if (!replayed) break;  // rejected already; a spent budget would refuse the rest anyway
  }
  verdict.replayed_fraction = static_cast<double>(replayed_steps) / static_cast<double>(manifest.total_steps);
  if (failures.empty()) check_test_accuracy(dir, manifest, *replayer, coverage != nullptr, failures);
  verdict.accepted = failures.empty();
  return verdict;
}

}  // namespace solver::proof
