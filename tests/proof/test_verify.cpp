// verify_bundle on toy bundles: an honest bundle is accepted, and each forgery is rejected for
// the right reason. Forgers here are strong: after tampering they recompute every file hash,
// update distance and chain link and re-sign with their own key, so only the checks that do
// not trust the manifest (seeded data order, schedule, initialisation, replay) can catch them.
#include <catch2/catch.hpp>

#include <cstring>

#include "checkpoint/safetensors.h"
#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "tests/forgery.h"
#include "common/keys.h"
#include "proof/manifest.h"
#include "proof/verify.h"
#include "tests/proof/toy_training.h"
#include "tests/test_support.h"

namespace solver::proof {
namespace {

using Catch::Matchers::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

Manifest read_manifest(const fs::path& dir) { return manifest_from_json(json::parse(read_file(dir / "manifest.json"))); }

// A forger's edit, then the reseal every forger can do without training.
void reseal(const fs::path& dir, const SigningKey& forger, const std::function<void(Manifest&)>& edit = {}) {
  Manifest manifest = read_manifest(dir);
  if (edit) edit(manifest);
  test::reseal_bundle(dir, manifest, forger);
}

std::vector<float> weights_of(const checkpoint::Checkpoint& state) {
  const auto values = state.find("param.w")->as_f32();
  return {values.begin(), values.end()};
}

void set_weights(checkpoint::Checkpoint& state, const std::vector<float>& values) {
  for (checkpoint::Tensor& tensor : state.tensors)
    if (tensor.name == "param.w") std::memcpy(tensor.data.data(), values.data(), values.size() * sizeof(float));
}

std::string all_failures(const Verdict& verdict) {
  std::string text;
  for (const std::string& failure : verdict.failures) text += failure + "\n";
  return text;
}

struct Fixture {
  test::ScratchDir scratch{"verify"};
  Task task = test::toy_task();
  SigningKey solver = SigningKey::generate();
  SigningKey forger = SigningKey::generate();
  int replays = 0;

  Fixture() { REQUIRE(test::write_toy_bundle(scratch.path(), task, solver)); }
  const fs::path& dir() const { return scratch.path(); }

  Verdict verify(VerifyOptions options = {}) {
    replays = 0;
    const Verdict verdict = verify_bundle(dir(), options, test::toy_replayer_factory(&replays));
    INFO(all_failures(verdict));
    return verdict;
  }
  Verdict verify_all() {
    VerifyOptions options;
    options.selection = SegmentSelection::All;
    return verify(options);
  }
  // Rejected, for a reason containing `reason`.
  void expect_rejected(const Verdict& verdict, const std::string& reason) {
    INFO("failures:\n" << all_failures(verdict));
    CHECK_FALSE(verdict.accepted);
    CHECK_THAT(all_failures(verdict), Contains(reason));
  }

  std::vector<StepRecord> read_segment(const std::string& path) { return decode_segment(read_file(dir() / path), path); }
  void write_segment(const std::string& path, const std::vector<StepRecord>& steps) {
    write_file_durably(dir() / path, encode_segment(steps.front().step, steps.back().step, steps));
  }
};

TEST_CASE("An honest bundle is accepted with every replay bitwise equal", "[proof]") {
  Fixture fixture;
  const Verdict all = fixture.verify_all();
  CHECK(all.accepted);
  CHECK(all.failures.empty());
  CHECK(all.same_runtime);
  REQUIRE(all.segments.size() == 5);
  CHECK(fixture.replays == 5);
  for (const SegmentReport& report : all.segments) {
    CHECK(report.passed);
    CHECK(report.bitwise_equal);
    CHECK(report.losses_match);
    CHECK(report.distance.l2 == 0.0);
    CHECK(report.chosen_by == "all");
    CHECK(report.threshold == 0.0);
  }
  CHECK(all.replayed_fraction == 1.0);
  CHECK(all.train_seconds == 1.25);

  VerifyOptions sampling;  // the largest update of each of the 3 epochs, plus 1 at random
  sampling.q = 1;
  const Verdict sampled = fixture.verify(sampling);
  CHECK(sampled.accepted);
  REQUIRE(sampled.segments.size() == 4);
  CHECK(sampled.segments_total == 5);
  CHECK(sampled.replayed_fraction < 1.0);

  const json report = sampled.to_json();
  CHECK(report.at("accepted") == true);
  CHECK(report.at("segments").size() == 4);
  CHECK(report.at("segments_replayed") == 4);
  CHECK(report.at("segments_total") == 5);
  CHECK(report.at("random_seed") == sampled.random_seed);
}

TEST_CASE("Top-q replays the largest updates of each epoch, then random ones among the rest", "[proof]") {
  // The toy run has 8 steps per epoch; segments belong to the epoch of their last step:
  // epoch 0 holds steps 1-5, epoch 1 steps 6-10 and 11-15, epoch 2 steps 16-20 and 21-23.
  Fixture fixture;
  const Manifest manifest = read_manifest(fixture.dir());
  REQUIRE(manifest.steps_per_epoch == 8);
  auto update_ending_at = [&](std::int64_t step) {
    for (const CheckpointEntry& entry : manifest.checkpoints)
      if (entry.step == step) return entry.update->l2;
    FAIL("no checkpoint at step " << step);
    return 0.0;
  };
  const std::int64_t larger_in_epoch_1 = update_ending_at(10) > update_ending_at(15) ? 6 : 11;
  const std::int64_t larger_in_epoch_2 = update_ending_at(20) > update_ending_at(23) ? 16 : 21;

  VerifyOptions options;
  options.q = 1;
  options.random_count = 0;
  const Verdict top = fixture.verify(options);
  CHECK(top.accepted);
  std::vector<std::int64_t> first_steps;
  for (const SegmentReport& report : top.segments) {
    CHECK(report.chosen_by == "top-q");
    first_steps.push_back(report.first_step);
  }
  CHECK(first_steps == std::vector<std::int64_t>{1, larger_in_epoch_1, larger_in_epoch_2});
  CHECK(top.segments_total == 5);

  options.random_count = 5;  // more than the 2 left: each is drawn once
  const Verdict topped_up = fixture.verify(options);
  REQUIRE(topped_up.segments.size() == 5);
  CHECK(std::count_if(topped_up.segments.begin(), topped_up.segments.end(),
                      [](const SegmentReport& r) { return r.chosen_by == "random"; }) == 2);

  options.q = 2;  // each epoch has at most 2 segments: top-q takes them all
  options.random_count = 1;
  const Verdict everything = fixture.verify(options);
  REQUIRE(everything.segments.size() == 5);
  for (const SegmentReport& report : everything.segments) CHECK(report.chosen_by == "top-q");
}

TEST_CASE("On another runtime an honest bundle passes under the distance threshold", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.selection = SegmentSelection::All;
  int replays = 0;
  const Verdict verdict = verify_bundle(fixture.dir(), options, test::toy_replayer_factory(&replays, test::toy_runtime(2)));
  CHECK(verdict.accepted);
  CHECK_FALSE(verdict.same_runtime);
  REQUIRE_FALSE(verdict.segments.empty());
  CHECK(verdict.segments.front().threshold == options.delta);
}

TEST_CASE("verify builds its replayer with the bundle's shard count, and another shard count is another runtime", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.selection = SegmentSelection::All;
  int replays = 0;
  RuntimeInfo two_shards = test::toy_runtime();
  two_shards.shards = 2;
  const ReplayerFactory toy = test::toy_replayer_factory(&replays, two_shards);
  std::vector<int> shards_asked;
  const Verdict verdict = verify_bundle(fixture.dir(), options, [&](const Task& task, int threads, int shards) {
    shards_asked.push_back(shards);
    return toy(task, threads, shards);
  });
  CHECK(shards_asked == std::vector<int>{1});
  CHECK(verdict.accepted);
  CHECK_FALSE(verdict.same_runtime);
}

TEST_CASE("On another runtime each threshold a profile sets must hold, not only l2", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint state = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  std::vector<float> weights = weights_of(state);
  weights[0] += 1e-4f;  // far under the l2 threshold of 1e-3
  set_weights(state, weights);
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", state);
  reseal(fixture.dir(), fixture.forger);
  VerifyOptions options;
  options.selection = SegmentSelection::All;
  int replays = 0;
  const auto other_runtime = test::toy_replayer_factory(&replays, test::toy_runtime(2));
  CHECK(verify_bundle(fixture.dir(), options, other_runtime).accepted);

  options.delta_linf = 1e-5;
  const Verdict verdict = verify_bundle(fixture.dir(), options, other_runtime);
  CHECK_FALSE(verdict.accepted);
  CHECK_THAT(all_failures(verdict), Contains("segment steps 6-10: replay differs from the claimed checkpoint (linf ") &&
                                        Contains("> threshold 1e-05"));
}

TEST_CASE("The same random seed gives the same verdict and segment choice", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.q = 1;  // one per epoch: 3 of the 5 segments...
  options.random_count = 1;  // ...and one of the other 2, as the seed says
  const Verdict first = fixture.verify(options);
  REQUIRE(first.segments.size() == 4);
  CHECK(std::count_if(first.segments.begin(), first.segments.end(), [](const SegmentReport& r) { return r.chosen_by == "top-q"; }) == 3);

  options.random_seed = first.random_seed;  // drawn and reported by the first verdict
  for (int again = 0; again < 2; ++again) {
    const Verdict repeat = fixture.verify(options);
    CHECK(repeat.random_seed == first.random_seed);
    REQUIRE(repeat.segments.size() == first.segments.size());
    for (std::size_t i = 0; i < first.segments.size(); ++i) {
      CHECK(repeat.segments[i].first_step == first.segments[i].first_step);
      CHECK(repeat.segments[i].chosen_by == first.segments[i].chosen_by);
    }
    CHECK(repeat.to_json().at("failures") == first.to_json().at("failures"));
  }

  options.selection = SegmentSelection::Random;
  options.random_count = 2;
  options.random_seed = 42;
  const Verdict random = fixture.verify(options);
  CHECK(random.segments.size() == 2);
  CHECK(random.random_seed == 42);
}

TEST_CASE("A folder without a manifest is not a bundle", "[proof]") {
  test::ScratchDir scratch("verify-empty");
  int replays = 0;
  CHECK_THROWS_WITH(verify_bundle(scratch.path(), {}, test::toy_replayer_factory(&replays)),
                    Contains("not a bundle") && Contains("has no manifest.json"));
  test::write_text(scratch / "manifest.json", "{\"schema\": 3}");
  test::write_text(scratch / "manifest.sig", "00\n");
  CHECK_THROWS_WITH(verify_bundle(scratch.path(), {}, test::toy_replayer_factory(&replays)),
                    Contains("not a bundle: manifest.schema: expected a non-empty string"));
}

TEST_CASE("A manifest or segment nested 100,000 deep is refused as unreadable, without a crash", "[proof]") {
  Fixture fixture;
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string segment_path = read_manifest(fixture.dir()).segments.front().file.path;
  CHECK_THROWS_WITH(decode_segment(deep, segment_path), Contains(segment_path + ": JSON nested deeper than 64 levels"));

  test::write_text(fixture.dir() / "manifest.json", R"({"schema": "solver.pol-manifest/1", "task": )" + deep + "}");
  int replays = 0;
  try {
    verify_bundle(fixture.dir(), {}, test::toy_replayer_factory(&replays));
    FAIL("a bundle with a 100,000-deep manifest was verified");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Contains("not a bundle") && Contains("manifest.json: JSON nested deeper than 64 levels"));
  }
  CHECK(replays == 0);
}

TEST_CASE("A changed weight byte is caught by its file hash, before any replay", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint state = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  std::vector<float> weights = weights_of(state);
  weights[0] = std::nextafter(weights[0], 1.0f);
  set_weights(state, weights);
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", state);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "ckpt/step_10.safetensors: sha256 mismatch (manifest ");
  CHECK(fixture.replays == 0);
  CHECK(verdict.segments.empty());
}

TEST_CASE("A changed weight that the forger re-hashed and re-signed is caught by replay", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint state = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  std::vector<float> weights = weights_of(state);
  weights[0] = std::nextafter(weights[0], 1.0f);
  set_weights(state, weights);
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", state);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "segment steps 6-10: replay differs from the claimed checkpoint (l2 ");
  CHECK_THAT(all_failures(verdict), Contains("but the same runtime must reproduce it bit for bit; first differing tensor param.w)"));
  CHECK(fixture.replays == 5);
}

TEST_CASE("Forged checkpoint metadata is caught by replay even with every tensor intact", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint state = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  state.metadata["optimizer_step"] = "99";  // would change bias correction for the next segment
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", state);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "segment steps 6-10: replay differs from the claimed checkpoint (l2 0, but the same "
                                   "runtime must reproduce it bit for bit; metadata entry optimizer_step differs)");
}

TEST_CASE("A swapped batch index is caught by the seeded data order", "[proof]") {
  Fixture fixture;
  std::vector<StepRecord> steps = fixture.read_segment("segments/steps_6-10.json");
  std::swap(steps[1].indices[0], steps[2].indices[0]);  // steps 7 and 8 trade a sample
  fixture.write_segment("segments/steps_6-10.json", steps);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "data order: step 7 used indices the task seed does not give (and 1 more step)");
  CHECK(fixture.replays == 0);
}

TEST_CASE("A removed or reordered checkpoint breaks the checkpoint sequence", "[proof]") {
  SECTION("removed") {
    Fixture fixture;
    reseal(fixture.dir(), fixture.forger, [](Manifest& manifest) {
      manifest.checkpoints.erase(manifest.checkpoints.begin() + 2);  // step 10
      manifest.segments.erase(manifest.segments.begin() + 2);
    });
    fixture.expect_rejected(fixture.verify_all(), "checkpoints: expected step 10 after 5, found 15 (missing or reordered)");
    CHECK(fixture.replays == 0);
  }
  SECTION("reordered") {
    Fixture fixture;
    reseal(fixture.dir(), fixture.forger, [](Manifest& manifest) {
      std::swap(manifest.checkpoints[2], manifest.checkpoints[3]);
    });
    fixture.expect_rejected(fixture.verify_all(), "checkpoints: expected step 10 after 5, found 15 (missing or reordered)");
  }
  SECTION("chain not recomputed") {
    Fixture fixture;
    Manifest manifest = read_manifest(fixture.dir());
    std::swap(manifest.checkpoints[1].chain, manifest.checkpoints[2].chain);
    manifest.solver_public_key = fixture.forger.public_key_hex();
    write_signed_manifest(fixture.dir(), manifest, fixture.forger);
    fixture.expect_rejected(fixture.verify_all(), "hash chain: breaks at step 5");
  }
}

TEST_CASE("A changed loss that the forger re-signed is caught by replay", "[proof]") {
  Fixture fixture;
  std::vector<StepRecord> steps = fixture.read_segment("segments/steps_11-15.json");
  steps[1].loss *= 1.01f;  // step 12
  fixture.write_segment("segments/steps_11-15.json", steps);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "segment steps 11-15: recorded loss at step 12 differs from the replay");
  CHECK(fixture.replays == 5);
}

TEST_CASE("A changed hyperparameter is caught by the task hash or the schedule", "[proof]") {
  Fixture fixture;
  const std::string honest_task = task_sha256(fixture.task);
  reseal(fixture.dir(), fixture.forger, [](Manifest& manifest) { manifest.task["training"]["optimizer"]["lr"] = 0.2; });

  fixture.expect_rejected(fixture.verify_all(), "learning rate: step 1 recorded lr ");
  VerifyOptions expecting_task;
  expecting_task.expected_task_sha256 = honest_task;
  fixture.expect_rejected(fixture.verify(expecting_task), "task: the bundle is for task ");
  CHECK(fixture.replays == 0);

  // Without re-hashing the task, the recorded task hash no longer matches.
  Manifest manifest = read_manifest(fixture.dir());
  manifest.task["training"]["batch_size"] = 4;
  write_signed_manifest(fixture.dir(), manifest, fixture.forger);
  fixture.expect_rejected(fixture.verify_all(), "task: the manifest's task hashes to ");
}

TEST_CASE("A bad signature or an unexpected signer is rejected", "[proof]") {
  Fixture fixture;
  VerifyOptions expecting_other;
  expecting_other.expected_public_key = fixture.forger.public_key_hex();
  fixture.expect_rejected(fixture.verify(expecting_other),
                          "signature: the bundle is signed by " + fixture.solver.public_key_hex() + ", expected " +
                              fixture.forger.public_key_hex());

  std::string signature = read_file(fixture.dir() / "manifest.sig");
  signature[0] = signature[0] == 'a' ? 'b' : 'a';
  write_file_durably(fixture.dir() / "manifest.sig", signature);
  fixture.expect_rejected(fixture.verify_all(), "signature: manifest.sig is not a valid signature of manifest.json");
  CHECK(fixture.replays == 0);
}

TEST_CASE("A checkpoint replaced by the interpolation of its neighbours is caught by replay", "[proof]") {
  Fixture fixture;
  const std::vector<float> before = weights_of(checkpoint::read_safetensors(fixture.dir() / "ckpt/step_5.safetensors"));
  const std::vector<float> after = weights_of(checkpoint::read_safetensors(fixture.dir() / "ckpt/step_15.safetensors"));
  checkpoint::Checkpoint middle = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  std::vector<float> interpolated(before.size());
  for (std::size_t i = 0; i < before.size(); ++i) interpolated[i] = 0.5f * (before[i] + after[i]);
  set_weights(middle, interpolated);
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", middle);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "segment steps 6-10: replay differs from the claimed checkpoint");
  fixture.expect_rejected(verdict, "segment steps 11-15: replay differs from the claimed checkpoint");
}

TEST_CASE("A forged initialisation is caught against the task seed", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint start = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_0.safetensors");
  std::vector<float> weights = weights_of(start);
  weights[3] = 0.0f;
  set_weights(start, weights);
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_0.safetensors", start);
  reseal(fixture.dir(), fixture.forger);
  fixture.expect_rejected(fixture.verify_all(),
                          "initialisation: step 0 differs from the weights the task seed gives (param.w)");
  CHECK(fixture.replays == 0);
}

TEST_CASE("A recorded update distance that the files do not give is rejected", "[proof]") {
  Fixture fixture;
  Manifest manifest = read_manifest(fixture.dir());
  manifest.checkpoints[3].update->l2 *= 0.5;  // understating a large update to dodge top-q
  manifest.solver_public_key = fixture.forger.public_key_hex();
  write_signed_manifest(fixture.dir(), manifest, fixture.forger);
  fixture.expect_rejected(fixture.verify(), "update distance at step 15: recorded l2 ");
  CHECK(fixture.replays == 0);
}

}  // namespace
}  // namespace solver::proof
