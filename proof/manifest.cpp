// The manifest and segment codecs, the hash chain, and the signed manifest files.
// Invariant: what is signed is exactly the canonical_json bytes written to manifest.json, and
// every number survives a JSON round trip bit for bit (doubles are printed shortest-exact, float
// losses are widened to double), so a verifier recomputing anything compares equal values.
// Parsing is strict: a missing, mistyped or unknown field is an Error(Input) that names it.
#include "proof/manifest.h"

#include <cmath>
#include <functional>
#include <limits>

#include "common/bundle_files.h"
#include "common/data_order.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/sha256.h"
#include "common/task.h"
#include "proof/detail/bundle_paths.h"
#include "common/keys.h"

namespace solver::proof {
namespace {

using nlohmann::json;

// A bound on runtime.shards that keeps it an int; the trainer refuses counts above its own.
constexpr std::int64_t kMaxManifestShards = 1 << 20;

std::string element(const std::string& array_field, std::size_t index) {
  return array_field + "[" + std::to_string(index) + "]";
}

FileEntry read_file_entry(ObjectReader reader) {
  FileEntry file;
  file.path = reader.string("path");
  // Paths are joined to the bundle folder: an absolute or escaping path would let a manifest
  // point the verifier at any file on its machine.
  if (!is_plain_relative_path(file.path))
    ObjectReader::fail(reader.field("path"), "expected a path inside the bundle, got \"" + file.path + "\"");
  file.size = reader.unsigned_integer("size");
  file.sha256 = reader.sha256("sha256");
  reader.finish();
  return file;
}

kernels::WeightDistance read_distance(ObjectReader reader) {
  kernels::WeightDistance distance;
  distance.l1 = reader.number("l1");
  distance.l2 = reader.number("l2");
  distance.linf = reader.number("linf");
  distance.cosine = reader.number("cosine");
  reader.finish();
  return distance;
}

}  // namespace

json file_entry_to_json(const FileEntry& file) {
  return {{"path", file.path}, {"size", file.size}, {"sha256", file.sha256}};
}

FileEntry file_entry_from_json(const json& value, const std::string& name) { return read_file_entry(ObjectReader(value, name)); }

kernels::WeightDistance distance_from_json(const json& value, const std::string& name) {
  return read_distance(ObjectReader(value, name));
}

RuntimeInfo runtime_from_json(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  RuntimeInfo runtime;
  runtime.solver_version = reader.string("solver_version");
  runtime.torch_version = reader.string("torch_version");
  runtime.device = reader.string("device");
  const std::int64_t threads = reader.integer("threads");
  if (threads < 0 || threads > 4096)
    ObjectReader::fail(reader.field("threads"), "expected a thread count in [0, 4096], got " + std::to_string(threads));
  runtime.threads = static_cast<int>(threads);
  runtime.deterministic = reader.boolean("deterministic");
  // Absent in single-shard runtimes, so their manifests (and hashes) are as before shards existed.
  const std::int64_t shards = reader.integer_or("shards", 1);
  if (shards < 1 || shards > kMaxManifestShards)
    ObjectReader::fail(reader.field("shards"), "expected a shard count in [1, " + std::to_string(kMaxManifestShards) +
                                                   "], got " + std::to_string(shards));
  runtime.shards = static_cast<int>(shards);
  reader.finish();
  return runtime;
}

namespace {

// The streams are fixed by common/data_order.h; they are written out so that a verifier in
// another language can recompute the data order and initialisation from the manifest alone.
// The shard stream is listed only when the runtime has shards, as runtime.shards is.
std::vector<std::pair<std::string, std::uint64_t>> streams_of(const RuntimeInfo& runtime) {
  std::vector<std::pair<std::string, std::uint64_t>> streams{{"init", kStreamInit}, {"data", kStreamData}, {"step", kStreamStep}};
  if (runtime.shards > 1) streams.emplace_back("shard", kStreamShard);
  return streams;
}

json seeds_to_json(const Manifest& manifest) {
  json streams = json::object();
  for (const auto& [name, number] : streams_of(manifest.runtime)) streams[name] = number;
  return {{"seed", manifest.seed}, {"data_order_generator", manifest.data_order_generator}, {"streams", std::move(streams)}};
}

// After the runtime: which streams are expected depends on its shard count.
void read_seeds(ObjectReader reader, Manifest& manifest) {
  manifest.seed = reader.unsigned_integer("seed");
  manifest.data_order_generator = reader.string("data_order_generator");
  ObjectReader streams = reader.object("streams");
  for (const auto& [name, number] : streams_of(manifest.runtime)) {
    const std::uint64_t found = streams.unsigned_integer(name);
    if (found != number)
      ObjectReader::fail(streams.field(name), "expected stream " + std::to_string(number) + " (the only numbering this "
                                              "build knows), got " + std::to_string(found));
  }
  streams.finish();
  reader.finish();
}

}  // namespace

json distance_to_json(const kernels::WeightDistance& distance) {
  return {{"l1", distance.l1}, {"l2", distance.l2}, {"linf", distance.linf}, {"cosine", distance.cosine}};
}

json runtime_to_json(const RuntimeInfo& runtime) {
  json result = {{"solver_version", runtime.solver_version},
                 {"torch_version", runtime.torch_version},
                 {"device", runtime.device},
                 {"threads", runtime.threads},
                 {"deterministic", runtime.deterministic}};
  if (runtime.shards > 1) result["shards"] = runtime.shards;
  return result;
}

json manifest_to_json(const Manifest& manifest) {
  json checkpoints = json::array();
  for (const CheckpointEntry& entry : manifest.checkpoints) {
    json item = {{"step", entry.step}, {"file", file_entry_to_json(entry.file)}, {"chain", entry.chain}};
    if (entry.update) item["update"] = distance_to_json(*entry.update);
    checkpoints.push_back(std::move(item));
  }
  json segments = json::array();
  for (const SegmentEntry& entry : manifest.segments)
    segments.push_back(
        {{"first_step", entry.first_step}, {"last_step", entry.last_step}, {"file", file_entry_to_json(entry.file)}});

  json result = {{"schema", manifest.schema},
                 {"task", manifest.task},
                 {"task_sha256", manifest.task_sha256},
                 {"solver_public_key", manifest.solver_public_key},
                 {"model_sha256", manifest.model_sha256},
                 {"runtime", runtime_to_json(manifest.runtime)},
                 {"seeds", seeds_to_json(manifest)},
                 {"train_samples", manifest.train_samples},
                 {"steps_per_epoch", manifest.steps_per_epoch},
                 {"checkpoint_every", manifest.checkpoint_every},
                 {"total_steps", manifest.total_steps},
                 {"checkpoints", std::move(checkpoints)},
                 {"segments", std::move(segments)},
                 {"chain_root", manifest.chain_root},
                 {"outcome",
                  {{"test_accuracy", manifest.outcome.test_accuracy},
                   {"final_loss", manifest.outcome.final_loss},
                   {"train_seconds", manifest.outcome.train_seconds}}}};
  if (manifest.model_file) result["model_file"] = file_entry_to_json(*manifest.model_file);
  return result;
}

Manifest manifest_from_json(const json& input) {
  ObjectReader reader(input, "manifest");
  Manifest manifest;
  manifest.schema = reader.string("schema");
  if (manifest.schema != kBundleSchema)
    ObjectReader::fail(reader.field("schema"),
                       "expected \"" + std::string(kBundleSchema) + "\", got \"" + manifest.schema + "\"");
  manifest.task = reader.raw("task");
  if (!manifest.task.is_object()) ObjectReader::fail(reader.field("task"), "expected an object, got " + ObjectReader::shown(manifest.task));
  manifest.task_sha256 = reader.sha256("task_sha256");
  manifest.solver_public_key = reader.string("solver_public_key");
  manifest.model_sha256 = reader.sha256("model_sha256");
  if (reader.has("model_file")) manifest.model_file = read_file_entry(reader.object("model_file"));
  manifest.runtime = runtime_from_json(reader.raw("runtime"), reader.field("runtime"));
  read_seeds(reader.object("seeds"), manifest);
  manifest.train_samples = reader.non_negative("train_samples");
  manifest.steps_per_epoch = reader.non_negative("steps_per_epoch");
  manifest.checkpoint_every = reader.non_negative("checkpoint_every");
  manifest.total_steps = reader.non_negative("total_steps");

  const std::string checkpoints_field = reader.field("checkpoints");
  const json& checkpoints = reader.array("checkpoints");
  for (std::size_t i = 0; i < checkpoints.size(); ++i) {
    ObjectReader item(checkpoints[i], element(checkpoints_field, i));
    CheckpointEntry entry;
    entry.step = item.non_negative("step");
    entry.file = read_file_entry(item.object("file"));
    entry.chain = item.sha256("chain");
    if (item.has("update")) entry.update = read_distance(item.object("update"));
    item.finish();
    manifest.checkpoints.push_back(std::move(entry));
  }
  const std::string segments_field = reader.field("segments");
  const json& segments = reader.array("segments");
  for (std::size_t i = 0; i < segments.size(); ++i) {
    ObjectReader item(segments[i], element(segments_field, i));
    SegmentEntry entry;
    entry.first_step = item.non_negative("first_step");
    entry.last_step = item.non_negative("last_step");
    entry.file = read_file_entry(item.object("file"));
    item.finish();
    manifest.segments.push_back(std::move(entry));
  }
  // Empty only in a journal written before checkpoint 0 (the journal reuses this format).
  manifest.chain_root = reader.string("chain_root");
  if (!manifest.chain_root.empty() && !is_sha256_hex(manifest.chain_root))
    ObjectReader::fail(reader.field("chain_root"), "expected 64 lowercase hex digits, got \"" + manifest.chain_root + "\"");

  ObjectReader outcome = reader.object("outcome");
  manifest.outcome.test_accuracy = outcome.number("test_accuracy");
  manifest.outcome.final_loss = outcome.number("final_loss");
  manifest.outcome.train_seconds = outcome.number("train_seconds");
  outcome.finish();
  reader.finish();
  return manifest;
}

std::string chain_link(const std::string& previous, std::int64_t step, const std::string& checkpoint_sha256,
                       const std::string& segment_sha256) {
  return sha256_hex(previous + ":" + std::to_string(step) + ":" + checkpoint_sha256 + ":" + segment_sha256);
}

std::string encode_segment(std::int64_t first_step, std::int64_t last_step, const std::vector<StepRecord>& steps) {
  if (first_step < 1 || last_step < first_step || steps.size() != static_cast<std::size_t>(last_step - first_step + 1))
    throw Error(ErrorKind::Internal, "segment " + std::to_string(first_step) + "-" + std::to_string(last_step) +
                                         ": expected one record per step, got " + std::to_string(steps.size()));
  json records = json::array();
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const StepRecord& record = steps[i];
    const std::int64_t expected = first_step + static_cast<std::int64_t>(i);
    if (record.step != expected)
      throw Error(ErrorKind::Internal, "segment " + std::to_string(first_step) + "-" + std::to_string(last_step) +
                                           ": record " + std::to_string(i) + " is step " + std::to_string(record.step) +
                                           ", expected " + std::to_string(expected));
    // JSON has no NaN: a non-finite value would be written as null and the bundle unreadable.
    if (!std::isfinite(record.loss) || !std::isfinite(record.lr))
      throw Error(ErrorKind::Internal, "step " + std::to_string(record.step) + ": loss " + std::to_string(record.loss) +
                                           " and lr " + std::to_string(record.lr) + " must be finite to be recorded");
    // The float loss widened to double prints shortest-exact and narrows back to the same float.
    records.push_back({{"step", record.step},
                       {"indices", record.indices},
                       {"loss", static_cast<double>(record.loss)},
                       {"lr", record.lr}});
  }
  return canonical_json({{"schema", kSegmentSchema},
                         {"first_step", first_step},
                         {"last_step", last_step},
                         {"steps", std::move(records)}});
}

std::vector<StepRecord> decode_segment(const std::string& text, std::string_view what) {
  const std::string source(what);
  const json parsed = parse_json_document(text, source);
  ObjectReader reader(parsed, source);
  const std::string schema = reader.string("schema");
  if (schema != kSegmentSchema)
    ObjectReader::fail(reader.field("schema"), "expected \"" + std::string(kSegmentSchema) + "\", got \"" + schema + "\"");
  const std::int64_t first_step = reader.integer("first_step");
  const std::int64_t last_step = reader.integer("last_step");
  if (first_step < 1 || last_step < first_step)
    ObjectReader::fail(reader.field("last_step"), "expected 1 <= first_step <= last_step, got " +
                                                      std::to_string(first_step) + "-" + std::to_string(last_step));
  const std::string steps_field = reader.field("steps");
  const json& steps = reader.array("steps");
  if (steps.size() != static_cast<std::size_t>(last_step - first_step + 1))
    ObjectReader::fail(steps_field, "expected " + std::to_string(last_step - first_step + 1) + " steps (" +
                                        std::to_string(first_step) + "-" + std::to_string(last_step) + "), got " +
                                        std::to_string(steps.size()));
  reader.finish();

  std::vector<StepRecord> records;
  records.reserve(steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    ObjectReader item(steps[i], element(steps_field, i));
    StepRecord record;
    record.step = item.integer("step");
    const std::int64_t expected = first_step + static_cast<std::int64_t>(i);
    if (record.step != expected)
      ObjectReader::fail(item.field("step"), "expected " + std::to_string(expected) + ", got " + std::to_string(record.step));
    const std::string indices_field = item.field("indices");
    const json& indices = item.array("indices");
    record.indices.reserve(indices.size());
    for (const json& index : indices) {
      if (!index.is_number_unsigned() || index.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max())
        ObjectReader::fail(indices_field, "expected sample indices below 2^32, got " + ObjectReader::shown(index));
      record.indices.push_back(index.get<std::uint32_t>());
    }
    const double loss = item.number("loss");
    if (std::abs(loss) > std::numeric_limits<float>::max())
      ObjectReader::fail(item.field("loss"), "expected a float32 value, got " + std::to_string(loss));
    record.loss = static_cast<float>(loss);
    record.lr = item.number("lr");
    item.finish();
    records.push_back(std::move(record));
  }
  return records;
}

void write_signed_manifest(const std::filesystem::path& dir, const Manifest& manifest, const SigningKey& key) {
  const std::string signer = key.public_key_hex();
  if (manifest.solver_public_key != signer)
    throw Error(ErrorKind::Internal, "manifest names solver key " + manifest.solver_public_key +
                                         " but is being signed with key " + signer);
  const std::string text = canonical_json(manifest_to_json(manifest));
  // The signature goes first: manifest.json appearing is what marks a bundle complete, so it
  // must never exist without its signature.
  write_file_durably(dir / kSignatureFile, key.sign_hex(text) + "\n");
  write_file_durably(dir / kManifestFile, text);
}

Manifest parse_manifest(const std::string& text, const std::filesystem::path& path) {
  try {
    return manifest_from_json(parse_json_document(text, path.string()));
  } catch (const Error& error) {
    throw Error(ErrorKind::Input, "not a bundle: " + std::string(error.what()));
  }
}

namespace {

// Reads a file that every bundle has, as "not a bundle" when it is absent, a symlink or too large.
std::string read_finishing_file(const std::filesystem::path& bundle_dir, std::string_view name,
                                const std::function<std::string()>& read) {
  if (!std::filesystem::exists(std::filesystem::symlink_status(bundle_dir / name)))
    throw Error(ErrorKind::Input, "not a bundle: " + bundle_dir.string() + " has no " + std::string(name));
  try {
    return read();
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw error.with_context("not a bundle: " + bundle_dir.string());
  }
}

std::string read_manifest_text(const std::filesystem::path& bundle_dir) {
  return read_finishing_file(bundle_dir, kManifestFile, [&] {
    return read_bundle_file(bundle_dir, kManifestFile, kMaxManifestBytes, "manifest");
  });
}

}  // namespace

Manifest read_manifest(const std::filesystem::path& bundle_dir) {
  return parse_manifest(read_manifest_text(bundle_dir), bundle_dir / kManifestFile);
}

std::vector<FileEntry> listed_files(const Manifest& manifest) {
  std::vector<FileEntry> files;
  if (manifest.model_file) files.push_back(*manifest.model_file);
  for (const CheckpointEntry& checkpoint : manifest.checkpoints) files.push_back(checkpoint.file);
  for (const SegmentEntry& segment : manifest.segments) files.push_back(segment.file);
  return files;
}

BundleListing read_bundle_listing(const std::filesystem::path& bundle_dir) {
  const std::string text = read_manifest_text(bundle_dir);
  BundleListing listing{.dir = bundle_dir,
                        .files = listed_files(parse_manifest(text, bundle_dir / kManifestFile)),
                        .manifest = {std::string(kManifestFile), text.size(), sha256_hex(text)}};
  listing.signature_hex =
      read_finishing_file(bundle_dir, kSignatureFile, [&] { return read_bundle_signature(bundle_dir); });
  return listing;
}

std::vector<StepRecord> read_bundle_segment(const std::filesystem::path& bundle_dir, const SegmentEntry& entry,
                                            std::int64_t batch_size) {
  const std::uint64_t max_bytes = detail::max_segment_bytes(entry.last_step - entry.first_step + 1, batch_size);
  return decode_segment(read_bundle_file(bundle_dir, entry.file.path, max_bytes, "segment of that many steps"), entry.file.path);
}

}  // namespace solver::proof
