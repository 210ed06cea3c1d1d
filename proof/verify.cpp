// verify_bundle: judges a bundle, cheapest checks first. Invariant: nothing is replayed until
// everything that can be checked without training passed (signature, file hashes, checkpoint
// sequence, hash chain, data order, learning rates, initialisation, update distances): a
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
  const std::filesystem::path manifest_path = dir / detail::kManifestFile;
  const std::filesystem::path signature_path = dir / detail::kSignatureFile;
  if (!std::filesystem::is_regular_file(manifest_path))
    throw Error(ErrorKind::Input, "not a bundle: " + dir.string() + " has no manifest.json" +
                                      (detail::Journal(dir).exists()
                                           ? " (it has a journal: an unfinished run; complete it with `solver run --resume`)"
                                           : ""));
  if (!std::filesystem::is_regular_file(signature_path))
    throw Error(ErrorKind::Input, "not a bundle: " + dir.string() + " has manifest.json but no manifest.sig");
  BundleFiles files;
  files.manifest_text = read_file(manifest_path);
  files.signature_hex = read_file(signature_path);
  while (!files.signature_hex.empty() && std::isspace(static_cast<unsigned char>(files.signature_hex.back())))
    files.signature_hex.pop_back();
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

  if (task.model.kind == "torchscript") {
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
      failures.push_back("model: a built-in " + task.model.kind + " model has no module file, but the manifest lists " +
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

// Every listed file: named as its step implies, present, of the recorded size and hash.
void check_files(const std::filesystem::path& dir, const Manifest& manifest, std::vector<std::string>& failures) {
  auto check = [&](const FileEntry& entry, const std::string& expected_path, const std::string& what) {
    if (entry.path != expected_path) {
      failures.push_back(what + " is stored as " + entry.path + ", expected " + expected_path);
      return;
    }
    const std::filesystem::path path = dir / entry.path;
    std::error_code error;
    const std::uintmax_t size = std::filesystem::file_size(path, error);
    if (error || !std::filesystem::is_regular_file(path)) {
      failures.push_back(entry.path + ": missing");
      return;
    }
    if (size != entry.size) {
      failures.push_back(entry.path + ": size mismatch (manifest " + std::to_string(entry.size) + " bytes, file " +
                         std::to_string(size) + ")");
      return;
    }
    const std::string actual = sha256_file_hex(path);
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
    const std::int64_t expected = std::min(previous + k, total);
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
    const auto entry = std::find_if(manifest.checkpoints.begin(), manifest.checkpoints.end(),
                                    [step](const CheckpointEntry& checkpoint) { return checkpoint.step == step; });
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
                                                   std::vector<std::string>& failures) {
  std::vector<std::vector<StepRecord>> segments;
  for (const SegmentEntry& entry : manifest.segments) {
    try {
      std::vector<StepRecord> records = decode_segment(read_file(dir / entry.file.path), entry.file.path);
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
    return checkpoint::read_safetensors(dir / entry.file.path);
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

// Checks the initialisation against ckpt 0, then every recorded update distance against the
// checkpoint files. Reads each checkpoint once, keeping only the previous one.
void check_states(const std::filesystem::path& dir, const Manifest& manifest, Replayer& replayer,
                  std::vector<std::string>& failures) {
  std::optional<checkpoint::Checkpoint> previous = read_checkpoint(dir, manifest.checkpoints.front(), failures);
  if (previous) {
    if (const auto difference = first_difference(replayer.initial_state(), *previous))
      failures.push_back(std::string("initialisation: step 0 differs from the weights the task seed gives (") +
                         (difference->metadata ? "metadata " : "") + difference->name + ")");
  }
  for (std::size_t i = 1; i < manifest.checkpoints.size(); ++i) {
    const CheckpointEntry& entry = manifest.checkpoints[i];
    std::optional<checkpoint::Checkpoint> current = read_checkpoint(dir, entry, failures);
    if (previous && current) {
      const std::string what = "update distance at step " + std::to_string(entry.step) + ": ";
      try {
        const kernels::WeightDistance recomputed = parameter_distance(previous->tensors, current->tensors);
        if (const auto difference = distance_difference(*entry.update, recomputed)) failures.push_back(what + *difference);
      } catch (const Error& error) {
        failures.push_back(what + "cannot be recomputed: " + error.what());
      }
    }
    previous = std::move(current);
  }
}

struct Choice {
  std::size_t segment = 0;
  std::string chosen_by;
};

std::vector<Choice> select_segments(const Manifest& manifest, const VerifyOptions& options, std::uint64_t random_seed) {
  const std::size_t count = manifest.segments.size();
  std::vector<Choice> chosen;
  std::vector<std::size_t> rest;
  if (options.selection == SegmentSelection::All) {
    for (std::size_t i = 0; i < count; ++i) chosen.push_back({i, "all"});
    return chosen;
  }
  if (options.selection == SegmentSelection::TopQ) {
    // Per epoch rather than over the whole run: early epochs' updates dwarf later ones, so a
    // global top-q would only ever replay the start of training.
    auto epoch_of = [&](std::size_t segment) { return (manifest.segments[segment].last_step - 1) / manifest.steps_per_epoch; };
    // Segment i ends at checkpoint i + 1, whose update is the segment's.
    auto update_of = [&](std::size_t segment) { return manifest.checkpoints[segment + 1].update->l2; };
    std::map<std::int64_t, std::vector<std::size_t>> by_epoch;
    for (std::size_t i = 0; i < count; ++i) by_epoch[epoch_of(i)].push_back(i);
    for (auto& [epoch, members] : by_epoch) {
      std::ranges::stable_sort(members, std::ranges::greater{}, update_of);
      for (std::size_t rank = 0; rank < members.size(); ++rank) {
        if (rank < static_cast<std::size_t>(options.q))
          chosen.push_back({members[rank], "top-q"});
        else
          rest.push_back(members[rank]);
      }
    }
    std::ranges::sort(rest);
  } else {
    for (std::size_t i = 0; i < count; ++i) rest.push_back(i);
  }
  // Drawn after the bundle was committed, from the verifier's seed: a solver cannot know
  // which segments will be replayed, and the same seed picks the same segments again.
  const std::size_t draws = std::min(rest.size(), static_cast<std::size_t>(options.random_count));
  for (std::size_t draw = 0; draw < draws; ++draw) {
    const std::size_t pick = derive_seed(random_seed, kStreamVerifier, draw) % rest.size();
    chosen.push_back({rest[pick], "random"});
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(pick));
  }
  std::ranges::sort(chosen, {}, &Choice::segment);
  return chosen;
}

// The first metric whose threshold the distance exceeds, as "l2 X > threshold Y"; empty when all hold.
std::string exceeded_threshold(const kernels::WeightDistance& distance, const VerifyOptions& options) {
  const std::pair<const char*, std::pair<double, std::optional<double>>> checks[] = {
      {"l2", {distance.l2, options.delta}},
      {"l1", {distance.l1, options.delta_l1}},
      {"linf", {distance.linf, options.delta_linf}},
      {"1-cosine", {1.0 - distance.cosine, options.delta_cosine}}};
  for (const auto& [metric, check] : checks) {
    const auto& [value, threshold] = check;
    if (threshold && !(value <= *threshold)) return fmt::format("{} {} > threshold {}", metric, value, *threshold);
  }
  return "";
}

// Replays one segment from its start checkpoint and judges the result against its end.
SegmentReport replay_segment(const std::filesystem::path& dir, const Manifest& manifest, const Choice& choice,
                             const std::vector<StepRecord>& records, Replayer& replayer, bool bitwise_required,
                             const VerifyOptions& options, std::vector<std::string>& failures) {
  const SegmentEntry& segment = manifest.segments[choice.segment];
  SegmentReport report;
  report.first_step = segment.first_step;
  report.last_step = segment.last_step;
  report.chosen_by = choice.chosen_by;
  report.threshold = bitwise_required ? 0.0 : options.delta;
  report.distance.l2 = std::numeric_limits<double>::infinity();  // until a replay measures it
  const std::string what = "segment steps " + steps_text(segment.first_step, segment.last_step) + ": ";

  const auto start = read_checkpoint(dir, manifest.checkpoints[choice.segment], failures);
  const auto claimed = read_checkpoint(dir, manifest.checkpoints[choice.segment + 1], failures);
  if (!start || !claimed) return report;

  const auto began = std::chrono::steady_clock::now();
  Replayer::Result result;
  try {
    result = replayer.replay(*start, records);
  } catch (const Error& error) {
    // A bundle whose checkpoint the model cannot load is rejected; a broken verifier is not a verdict.
    if (error.kind() != ErrorKind::Input) throw error.with_context(what + "replay");
    failures.push_back(what + "replay failed: " + error.what());
    return report;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();

  const std::optional<StateDifference> difference = first_difference(*claimed, result.state);
  report.bitwise_equal = !difference;
  try {
    report.distance = parameter_distance(claimed->tensors, result.state.tensors);
  } catch (const Error& error) {
    failures.push_back(what + "the replayed state does not match the claimed checkpoint's parameters: " + error.what());
    return report;
  }
  const std::string exceeded = bitwise_required ? "" : exceeded_threshold(report.distance, options);
  const bool state_passed = bitwise_required ? report.bitwise_equal : exceeded.empty();
  if (!state_passed) {
    const std::string tensor = !difference          ? ""
                               : difference->metadata ? "; metadata entry " + difference->name + " differs"
                                                      : "; first differing tensor " + difference->name;
    failures.push_back(!bitwise_required
                           ? fmt::format("{}replay differs from the claimed checkpoint ({}{})", what, exceeded, tensor)
                           : fmt::format("{}replay differs from the claimed checkpoint (l2 {}, but the same runtime must "
                                         "reproduce it bit for bit{})",
                                         what, report.distance.l2, tensor));
  }

  report.losses_match = result.losses.size() == records.size();
  if (!report.losses_match) {
    failures.push_back(what + "the replay gave " + std::to_string(result.losses.size()) + " losses for " +
                       std::to_string(records.size()) + " steps");
  } else {
    for (std::size_t i = 0; i < records.size(); ++i)
      if (!losses_agree(records[i].loss, result.losses[i], bitwise_required)) {
        report.losses_match = false;
        failures.push_back(fmt::format("{}recorded loss at step {} differs from the replay (recorded {}, replayed {})", what,
                                       records[i].step, records[i].loss, result.losses[i]));
        break;
      }
  }
  report.passed = state_passed && report.losses_match;
  log_debug("proof", "verify: segment steps={} chosen_by={} seconds={:.2f} l2={} bitwise={} passed={}",
           steps_text(report.first_step, report.last_step), report.chosen_by, report.seconds, report.distance.l2,
           report.bitwise_equal, report.passed);
  return report;
}

void check_options(const VerifyOptions& options) {
  if (options.q < 0) throw Error(ErrorKind::Usage, "verify: q must be >= 0, got " + std::to_string(options.q));
  if (options.random_count < 0)
    throw Error(ErrorKind::Usage, "verify: the random segment count must be >= 0, got " + std::to_string(options.random_count));
  if (!(options.delta >= 0) || !std::isfinite(options.delta))
    throw Error(ErrorKind::Usage, fmt::format("verify: delta must be a finite number >= 0, got {}", options.delta));
}

}  // namespace

json Verdict::to_json() const {
  json reports = json::array();
  for (const SegmentReport& report : segments)
    reports.push_back({{"first_step", report.first_step},
                       {"last_step", report.last_step},
                       {"chosen_by", report.chosen_by},
                       {"distance", distance_to_json(report.distance)},
                       {"bitwise_equal", report.bitwise_equal},
                       {"losses_match", report.losses_match},
                       {"threshold", report.threshold},
                       {"passed", report.passed},
                       {"seconds", report.seconds}});
  return {{"accepted", accepted},
          {"failures", failures},
          {"segments", std::move(reports)},
          {"random_seed", random_seed},
          {"same_runtime", same_runtime},
          {"segments_replayed", segments.size()},
          {"segments_total", segments_total},
          {"replayed_fraction", replayed_fraction},
          {"replay_seconds", replay_seconds},
          {"train_seconds", train_seconds}};
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

  // 1-6: the bundle's claims are signed, complete, hashed, ordered, chained and match what was committed.
  const BundleFiles files = read_bundle(dir);
  const Manifest& manifest = files.manifest;
  verdict.train_seconds = manifest.outcome.train_seconds;
  verdict.segments_total = static_cast<std::int64_t>(manifest.segments.size());
  check_signature(files, options, failures);
  const std::optional<Task> task = check_task(dir, manifest, options, failures);
  check_files(dir, manifest, failures);
  if (check_sequence(manifest, failures)) check_chain(manifest, failures);
  check_commitments(manifest, options, failures);
  if (!failures.empty() || !task) return verdict;

  // 7-9: what the seed and the files determine without training.
  const std::vector<std::vector<StepRecord>> segments = read_segments(dir, manifest, failures);
  check_data_order(*task, manifest, segments, failures);
  const Task replay_task = detail::with_bundled_model(*task, dir);
  std::unique_ptr<Replayer> replayer;
  try {
    replayer = make_replayer(replay_task, manifest.runtime.threads, manifest.runtime.shards);
  } catch (const Error& error) {
    throw error.with_context("preparing the replay of task " + task->id);
  }
  if (replayer->train_samples() != manifest.train_samples)
    failures.push_back("plan: the manifest says " + std::to_string(manifest.train_samples) +
                       " training samples, the task's dataset has " + std::to_string(replayer->train_samples()));
  check_states(dir, manifest, *replayer, failures);
  verdict.same_runtime = same_runtime(manifest.runtime, replayer->runtime());
  if (!failures.empty()) return verdict;

  // 10-11: replays of segments chosen after the bundle was committed.
  std::int64_t replayed_steps = 0;
  for (const Choice& choice : select_segments(manifest, options, verdict.random_seed)) {
    SegmentReport report = replay_segment(dir, manifest, choice, segments[choice.segment], *replayer,
                                          verdict.same_runtime, options, failures);
    replayed_steps += report.last_step - report.first_step + 1;
    verdict.replay_seconds += report.seconds;
    verdict.segments.push_back(std::move(report));
  }
  verdict.replayed_fraction = static_cast<double>(replayed_steps) / static_cast<double>(manifest.total_steps);
  verdict.accepted = failures.empty();
  return verdict;
}

}  // namespace solver::proof
