// Manifest and segment codecs: lossless round trips (doubles and float losses bit for bit),
// strict parsing whose errors name the field, the hash-chain formula, and signed manifests.
#include <catch2/catch.hpp>

#include <bit>
#include <cfloat>
#include <cmath>
#include <functional>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/task.h"
#include "common/keys.h"
#include "proof/manifest.h"
#include "tests/test_support.h"

namespace solver::proof {
namespace {

using Catch::Matchers::Contains;
using nlohmann::json;

const std::string kHashA(64, 'a');
const std::string kHashB(64, 'b');
const std::string kHashC(64, 'c');

Manifest sample_manifest() {
  Manifest manifest;
  manifest.task = {{"id", "toy"}, {"seed", 7}};
  manifest.task_sha256 = kHashA;
  manifest.solver_public_key = SigningKey::generate().public_key_hex();
  manifest.model_sha256 = kHashB;
  manifest.model_file = FileEntry{"model.pt", 1234, kHashC};
  manifest.runtime = RuntimeInfo{"0.1.0", "1.13.1", "cuda:0 (NVIDIA H200)", 4, true};
  manifest.seed = 18446744073709551615ULL;  // the largest seed a task may have
  manifest.data_order_generator = "splitmix64-fisher-yates/1";
  manifest.train_samples = 60000;
  manifest.steps_per_epoch = 937;
  manifest.checkpoint_every = 100;
  manifest.total_steps = 150;
  manifest.checkpoints.push_back(CheckpointEntry{0, FileEntry{"ckpt/step_0.safetensors", 10, kHashA}, kHashB, std::nullopt});
  manifest.checkpoints.push_back(CheckpointEntry{
      100, FileEntry{"ckpt/step_100.safetensors", 10, kHashB}, kHashC, kernels::WeightDistance{0.1, 1.0 / 3.0, 1e-300, 0.99999999999}});
  manifest.segments.push_back(SegmentEntry{1, 100, FileEntry{"segments/steps_1-100.json", 99, kHashC}});
  manifest.chain_root = kHashC;
  manifest.outcome = TrainOutcome{0.8731, 0.123456789, 42.5};
  return manifest;
}

TEST_CASE("A manifest survives a JSON round trip field for field", "[proof]") {
  const Manifest original = sample_manifest();
  const std::string text = canonical_json(manifest_to_json(original));
  const Manifest parsed = manifest_from_json(json::parse(text));

  CHECK(canonical_json(manifest_to_json(parsed)) == text);
  CHECK(parsed.seed == original.seed);
  CHECK(parsed.runtime.device == "cuda:0 (NVIDIA H200)");
  REQUIRE(parsed.model_file);
  CHECK(parsed.model_file->size == 1234);
  REQUIRE(parsed.checkpoints.size() == 2);
  CHECK_FALSE(parsed.checkpoints[0].update);
  REQUIRE(parsed.checkpoints[1].update);
  CHECK(std::bit_cast<std::uint64_t>(parsed.checkpoints[1].update->l2) == std::bit_cast<std::uint64_t>(1.0 / 3.0));
  CHECK(parsed.checkpoints[1].update->linf == 1e-300);
  CHECK(parsed.outcome.final_loss == 0.123456789);

  const json document = json::parse(text);
  CHECK(document.at("seeds").at("streams") == json{{"init", 1}, {"data", 2}, {"step", 3}});
  CHECK(document.at("seeds").at("data_order_generator") == "splitmix64-fisher-yates/1");
}

TEST_CASE("A malformed manifest is refused with an error naming the field", "[proof]") {
  const json valid = manifest_to_json(sample_manifest());
  struct Case {
    std::string expected;
    std::function<void(json&)> corrupt;
  };
  const std::vector<Case> cases = {
      {"manifest.task_sha256: missing", [](json& m) { m.erase("task_sha256"); }},
      {"manifest.schema: expected \"solver.pol-bundle/1\"", [](json& m) { m["schema"] = "other/1"; }},
      {"manifest.checkpoints[1].file.sha256: expected 64 lowercase hex digits",
       [](json& m) { m["checkpoints"][1]["file"]["sha256"] = "XYZ"; }},
      {"manifest.checkpoints[0].file.path: expected a path inside the bundle",
       [](json& m) { m["checkpoints"][0]["file"]["path"] = "../../etc/passwd"; }},
      {"manifest.checkpoints[0].file.path: expected a path inside the bundle",
       [](json& m) { m["checkpoints"][0]["file"]["path"] = "/etc/passwd"; }},
      {"manifest.segments[0].file.path: expected a path inside the bundle",
       [](json& m) { m["segments"][0]["file"]["path"] = "segments/./steps_1-100.json"; }},
      {"manifest.segments[0].first_step: expected an integer", [](json& m) { m["segments"][0]["first_step"] = "1"; }},
      {"manifest.runtime.threads: expected an integer", [](json& m) { m["runtime"]["threads"] = "four"; }},
      {"manifest.seeds.streams.data: expected stream 2", [](json& m) { m["seeds"]["streams"]["data"] = 9; }},
      {"manifest.checkpoints[1].update.l2: expected a finite number", [](json& m) { m["checkpoints"][1]["update"]["l2"] = nullptr; }},
      {"manifest.extra: unknown field", [](json& m) { m["extra"] = 1; }},
      {"manifest.task: expected an object", [](json& m) { m["task"] = "toy"; }},
      {"manifest.train_samples: expected a non-negative integer", [](json& m) { m["train_samples"] = -5; }},
      {"manifest.outcome.test_accuracy: missing", [](json& m) { m["outcome"].erase("test_accuracy"); }},
  };
  for (const Case& test_case : cases) {
    json corrupted = valid;
    test_case.corrupt(corrupted);
    INFO("expected: " << test_case.expected);
    CHECK_THROWS_WITH(manifest_from_json(corrupted), Contains(test_case.expected));
    try {
      manifest_from_json(corrupted);
    } catch (const Error& error) {
      CHECK(error.kind() == ErrorKind::Input);
    }
  }
}

TEST_CASE("runtime.shards and the shard stream appear only for a data-parallel runtime and round-trip", "[proof]") {
  const json single = manifest_to_json(sample_manifest());
  CHECK_FALSE(single.at("runtime").contains("shards"));
  CHECK_FALSE(single.at("seeds").at("streams").contains("shard"));
  CHECK(manifest_from_json(single).runtime.shards == 1);

  Manifest sharded = sample_manifest();
  sharded.runtime.shards = 4;
  const json document = manifest_to_json(sharded);
  CHECK(document.at("runtime").at("shards") == 4);
  CHECK(document.at("seeds").at("streams").at("shard") == 5);
  const Manifest parsed = manifest_from_json(json::parse(canonical_json(document)));
  CHECK(parsed.runtime.shards == 4);
  CHECK(canonical_json(manifest_to_json(parsed)) == canonical_json(document));

  const std::vector<std::pair<std::string, std::function<void(json&)>>> cases = {
      {"manifest.runtime.shards: expected a shard count in [1, ", [](json& m) { m["runtime"]["shards"] = 0; }},
      {"manifest.runtime.shards: expected an integer", [](json& m) { m["runtime"]["shards"] = "two"; }},
      {"manifest.seeds.streams.shard: missing", [](json& m) { m["seeds"]["streams"].erase("shard"); }},
      {"manifest.seeds.streams.shard: expected stream 5", [](json& m) { m["seeds"]["streams"]["shard"] = 6; }},
  };
  for (const auto& [expected, corrupt] : cases) {
    json corrupted = document;
    corrupt(corrupted);
    INFO("expected: " << expected);
    CHECK_THROWS_WITH(manifest_from_json(corrupted), Contains(expected));
  }
  json single_with_stream = single;
  single_with_stream["seeds"]["streams"]["shard"] = 5;
  CHECK_THROWS_WITH(manifest_from_json(single_with_stream), Contains("manifest.seeds.streams.shard: unknown field"));
}

TEST_CASE("The hash chain links each checkpoint to everything before it", "[proof]") {
  // sha256("a:0:b:"): the documented text, hashed by an independent tool (sha256sum).
  CHECK(chain_link("a", 0, "b", "") == "2b2715fb697ab9edd4d1300e48572aa50b224cb16253eb820a15f233aec7e810");
  const std::string first = chain_link(kHashA, 0, kHashB, "");
  CHECK(first == sha256_hex(kHashA + ":0:" + kHashB + ":"));
  CHECK(chain_link(first, 100, kHashB, kHashC) == sha256_hex(first + ":100:" + kHashB + ":" + kHashC));
  CHECK(chain_link(first, 100, kHashB, kHashC) != chain_link(first, 101, kHashB, kHashC));
}

std::vector<StepRecord> sample_steps() {
  return {StepRecord{3, {5, 0, 4294967295u}, 0.1f, 0.001},
          StepRecord{4, {1, 2, 3}, 1.0f / 3.0f, 1e-3 / 3.0},
          StepRecord{5, {}, 1e-40f, 0.0},  // a subnormal loss
          StepRecord{6, {7}, FLT_MAX, 2.5},
          StepRecord{7, {8}, -0.0f, 0.1}};
}

TEST_CASE("A segment round-trips indices, learning rates and float losses bit for bit", "[proof]") {
  const std::vector<StepRecord> steps = sample_steps();
  const std::string text = encode_segment(3, 7, steps);
  const std::vector<StepRecord> decoded = decode_segment(text, "segments/steps_3-7.json");
  REQUIRE(decoded.size() == steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    INFO("step " << steps[i].step);
    CHECK(decoded[i].step == steps[i].step);
    CHECK(decoded[i].indices == steps[i].indices);
    CHECK(std::bit_cast<std::uint32_t>(decoded[i].loss) == std::bit_cast<std::uint32_t>(steps[i].loss));
    CHECK(std::bit_cast<std::uint64_t>(decoded[i].lr) == std::bit_cast<std::uint64_t>(steps[i].lr));
  }
  CHECK(encode_segment(3, 7, decoded) == text);  // deterministic bytes: resumed bundles hash alike
}

TEST_CASE("A malformed segment is refused with an error naming the file and field", "[proof]") {
  const json valid = json::parse(encode_segment(3, 7, sample_steps()));
  struct Case {
    std::string expected;
    std::function<void(json&)> corrupt;
  };
  const std::vector<Case> cases = {
      {"seg.json.steps[1].step: expected 4, got 5", [](json& s) { s["steps"][1]["step"] = 5; }},
      {"seg.json.steps: expected 5 steps (3-7), got 4", [](json& s) { s["steps"].erase(4); }},
      {"seg.json.steps[0].loss: expected a finite number", [](json& s) { s["steps"][0]["loss"] = "0.1"; }},
      {"seg.json.steps[0].loss: expected a float32 value", [](json& s) { s["steps"][0]["loss"] = 1e300; }},
      {"seg.json.steps[2].indices: expected sample indices below 2^32", [](json& s) { s["steps"][2]["indices"] = {-1}; }},
      {"seg.json.schema: expected \"solver.pol-segment/1\"", [](json& s) { s["schema"] = "x"; }},
      {"seg.json.last_step: expected 1 <= first_step <= last_step", [](json& s) { s["last_step"] = 2; }},
      {"seg.json.steps[3].unexpected: unknown field", [](json& s) { s["steps"][3]["unexpected"] = true; }},
  };
  for (const Case& test_case : cases) {
    json corrupted = valid;
    test_case.corrupt(corrupted);
    INFO("expected: " << test_case.expected);
    CHECK_THROWS_WITH(decode_segment(corrupted.dump(), "seg.json"), Contains(test_case.expected));
  }
  CHECK_THROWS_WITH(decode_segment("{not json", "seg.json"), Contains("seg.json: not valid JSON"));

  std::vector<StepRecord> gap = sample_steps();
  gap[2].step = 9;
  CHECK_THROWS_WITH(encode_segment(3, 7, gap), Contains("record 2 is step 9, expected 5"));
  std::vector<StepRecord> not_finite = sample_steps();
  not_finite[0].loss = std::nanf("");
  CHECK_THROWS_WITH(encode_segment(3, 7, not_finite), Contains("must be finite"));
}

TEST_CASE("A signed manifest is the canonical JSON and a signature of exactly its bytes", "[proof]") {
  test::ScratchDir scratch("manifest");
  const SigningKey key = SigningKey::generate();
  Manifest manifest = sample_manifest();
  manifest.solver_public_key = key.public_key_hex();
  write_signed_manifest(scratch.path(), manifest, key);

  const std::string text = read_file(scratch / "manifest.json");
  CHECK(text == canonical_json(manifest_to_json(manifest)));
  std::string signature = read_file(scratch / "manifest.sig");
  REQUIRE(signature.ends_with("\n"));
  signature.pop_back();
  CHECK(verify_signature(key.public_key_hex(), text, signature));

  manifest.solver_public_key = SigningKey::generate().public_key_hex();
  CHECK_THROWS_WITH(write_signed_manifest(scratch.path(), manifest, key), Contains("is being signed with key"));
}

TEST_CASE("A bundle's listing is its manifest's files, the manifest's own hash and the signature, nothing re-hashed", "[proof]") {
  test::ScratchDir scratch("listing");
  const SigningKey key = SigningKey::generate();
  Manifest manifest = sample_manifest();
  manifest.solver_public_key = key.public_key_hex();
  write_signed_manifest(scratch.path(), manifest, key);

  // The listed files are not on disk: their sizes and hashes come from the manifest alone.
  const BundleListing listing = read_bundle_listing(scratch.path());
  CHECK(listing.dir == scratch.path());
  std::vector<std::string> paths;
  for (const FileEntry& file : listing.files) paths.push_back(file.path);
  CHECK(paths == std::vector<std::string>{"model.pt", "ckpt/step_0.safetensors", "ckpt/step_100.safetensors",
                                          "segments/steps_1-100.json"});
  CHECK(listing.files[1].size == 10);
  CHECK(listing.files[1].sha256 == kHashA);
  const std::string text = read_file(scratch / "manifest.json");
  CHECK(listing.manifest.path == "manifest.json");
  CHECK(listing.manifest.size == text.size());
  CHECK(listing.manifest.sha256 == sha256_hex(text));
  CHECK(verify_signature(key.public_key_hex(), text, listing.signature_hex));

  std::filesystem::remove(scratch / "manifest.sig");
  CHECK_THROWS_WITH(read_bundle_listing(scratch.path()), "not a bundle: " + scratch.path().string() + " has no manifest.sig");
  test::write_text(scratch / "manifest.json", "{}");
  CHECK_THROWS_WITH(read_bundle_listing(scratch.path()), Contains("not a bundle: ") && Contains("manifest.schema"));
}

}  // namespace
}  // namespace solver::proof
