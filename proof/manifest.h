// The proof-of-learning bundle's manifest (docs/bundle-format.md): what was trained, by
// whom, on what, and the hash of every file in the bundle, chained so that the order of
// checkpoints is committed. manifest.json holds canonical JSON (sorted keys, no
// whitespace); manifest.sig holds the Ed25519 signature of exactly those bytes, in hex.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/bundle_files.h"
#include "common/records.h"
#include "kernels/distance.h"

namespace solver {
class SigningKey;
}

namespace solver::proof {

inline constexpr std::string_view kBundleSchema = "solver.pol-bundle/1";
inline constexpr std::string_view kSegmentSchema = "solver.pol-segment/1";

struct CheckpointEntry {
  std::int64_t step = 0;  // state after `step` optimizer steps; 0 = initialisation
  FileEntry file;
  std::string chain;      // hash-chain value after this checkpoint (see chain_link)
  // Distance between this checkpoint's parameters and the previous checkpoint's; absent at step 0.
  std::optional<kernels::WeightDistance> update;

  CheckpointCommitment commitment() const { return {step, file.sha256}; }
};

// The steps (first_step, ..., last_step) between two checkpoints: indices, losses, lrs.
struct SegmentEntry {
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  FileEntry file;
};

struct TrainOutcome {
  double test_accuracy = 0.0;
  double final_loss = 0.0;
  double train_seconds = 0.0;
};

struct Manifest {
  std::string schema{kBundleSchema};
  nlohmann::json task;  // the normalised task (task_to_json)
  std::string task_sha256;
  std::string solver_public_key;  // Ed25519, hex
  std::string model_sha256;       // torchscript: the file's sha256; built-in: sha256 of the canonical model spec
  std::optional<FileEntry> model_file;  // torchscript: the module, copied into the bundle
  RuntimeInfo runtime;
  std::uint64_t seed = 0;
  std::string data_order_generator;
  std::int64_t train_samples = 0;
  std::int64_t steps_per_epoch = 0;
  std::int64_t checkpoint_every = 0;
  std::int64_t total_steps = 0;
  std::vector<CheckpointEntry> checkpoints;  // increasing steps: 0, k, 2k, ..., total_steps
  std::vector<SegmentEntry> segments;        // one per checkpoint after step 0
  std::string chain_root;                    // chain of the last checkpoint
  TrainOutcome outcome;
};

nlohmann::json manifest_to_json(const Manifest& manifest);
// The manifest's forms of a runtime and of a distance, for reports that quote them.
nlohmann::json runtime_to_json(const RuntimeInfo& runtime);
// Throws Error(Input) naming the field (`name`) when it is not a runtime.
RuntimeInfo runtime_from_json(const nlohmann::json& json, const std::string& name);
nlohmann::json distance_to_json(const kernels::WeightDistance& distance);
// Throws Error(Input) naming the field when the JSON is not a well-formed manifest.
Manifest manifest_from_json(const nlohmann::json& json);
// One {path, size, sha256} file entry and one update distance as the manifest writes them, for
// the bundle writer's journal, which records the same entries line by line. `name` names the
// object in errors ("checkpoint.file"). Throw Error(Input) naming the field.
nlohmann::json file_entry_to_json(const FileEntry& file);
FileEntry file_entry_from_json(const nlohmann::json& json, const std::string& name);
kernels::WeightDistance distance_from_json(const nlohmann::json& json, const std::string& name);
// The manifest.json text of a bundle (`path` names it in errors). Throws Error(Input)
// "not a bundle: ..." naming what is wrong.
Manifest parse_manifest(const std::string& text, const std::filesystem::path& path);
// The manifest of the bundle in `bundle_dir`. Throws Error(Input) "not a bundle: ..." when it
// is missing, a symlink, larger than kMaxManifestBytes or not a well-formed manifest, Error(Io)
// when it cannot be read.
Manifest read_manifest(const std::filesystem::path& bundle_dir);
// The files `manifest` lists: the model's, then each checkpoint's and each segment's.
std::vector<FileEntry> listed_files(const Manifest& manifest);
// The finished bundle in `bundle_dir` as the stores publish it: its manifest read as
// read_manifest reads it (and hashed from those bytes), its signature as read_bundle_signature
// reads it. The listed files are not read: their sizes and hashes are the manifest's. Throws as
// read_manifest does, and Error(Input) "not a bundle: ..." for a missing or oversized signature.
BundleListing read_bundle_listing(const std::filesystem::path& bundle_dir);

// chain_0 = H(task_sha256 ":" "0" ":" ckpt_sha256 ":" ""), chain_i = H(chain_{i-1} ":" step ":"
// ckpt_sha256 ":" segment_sha256) where H is sha256 over the ASCII text, as lowercase hex.
std::string chain_link(const std::string& previous, std::int64_t step, const std::string& checkpoint_sha256,
                       const std::string& segment_sha256);

// A segment file: {"schema", "first_step", "last_step", "steps": [{"step", "indices", "loss", "lr"}]}.
std::string encode_segment(std::int64_t first_step, std::int64_t last_step, const std::vector<StepRecord>& steps);
// Throws Error(Input) when malformed or when the steps are not first_step..last_step in order.
std::vector<StepRecord> decode_segment(const std::string& text, std::string_view what);
// The steps of the segment file `entry` names in the bundle in `bundle_dir` (a regular file,
// read_bundle_file), refused unread when larger than its steps in batches of `batch_size` can
// be. Throws Error(Input) naming the file, Error(Io) when it cannot be read.
std::vector<StepRecord> read_bundle_segment(const std::filesystem::path& bundle_dir, const SegmentEntry& entry,
                                            std::int64_t batch_size);

// Writes manifest.json (canonical) and manifest.sig durably into `dir`.
void write_signed_manifest(const std::filesystem::path& dir, const Manifest& manifest, const SigningKey& key);

}  // namespace solver::proof
