// verify_bundle on toy bundles: an honest bundle is accepted, and each forgery is rejected for
// the right reason. Forgers here are strong: after tampering they recompute every file hash,
// update distance and chain link and re-sign with their own key, so only the checks that do
// not trust the manifest (seeded data order, schedule, initialisation, replay) can catch them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "checkpoint/safetensors.h"
#include "common/bundle_files.h"
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
    CHECK(report.distances.at("param").l2 == 0.0);
    CHECK(report.chosen_by == "all");
    CHECK(report.bitwise_required);
  }
  CHECK(all.replayed_fraction == 1.0);
  CHECK(all.train_seconds == 1.25);

  VerifyOptions sampling;  // the final segment, plus 2 of the other 4 at random
  sampling.selection = SegmentSelection::Random;
  sampling.random_count = 2;
  const Verdict sampled = fixture.verify(sampling);
  CHECK(sampled.accepted);
  REQUIRE(sampled.segments.size() == 3);
  CHECK(sampled.segments.back().chosen_by == "final");
  CHECK(sampled.segments_total == 5);
  CHECK(sampled.replayed_fraction < 1.0);

  const json report = sampled.to_json();
  CHECK(report.at("accepted") == true);
  CHECK(report.at("segments").size() == 3);
  CHECK(report.at("segments_replayed") == 3);
  CHECK(report.at("segments_total") == 5);
  CHECK(report.at("random_seed") == sampled.random_seed);
  // 2 draws among the 4 segments a forger could fake unseen: one faked segment is caught half the time.
  CHECK(report.at("detection").at("always_replayed") == 1);
  CHECK(report.at("detection").at("random_draws") == 2);
  CHECK(report.at("detection").at("one_segment").get<double>() == Approx(0.5));
  CHECK(all.to_json().at("detection").at("one_segment") == 1.0);
}

TEST_CASE("Top-q replays the most unusual changes of each epoch and the final segment, then random ones among the rest", "[proof]") {
  // The toy run has 8 steps per epoch; segments belong to the epoch of their last step:
  // epoch 0 holds steps 1-5, epoch 1 steps 6-10 and 11-15, epoch 2 steps 16-20 and 21-23.
  // The toy's only float part is its parameters, so a segment's score is how far the log of
  // its update (the manifest's) lies from the log of the median update of the (up to) two
  // segments on each side.
  Fixture fixture;
  const Manifest manifest = read_manifest(fixture.dir());
  REQUIRE(manifest.steps_per_epoch == 8);
  std::vector<double> updates;
  for (std::size_t i = 1; i < manifest.checkpoints.size(); ++i) updates.push_back(manifest.checkpoints[i].update->l2);
  auto score_of = [&](std::size_t segment) {
    std::vector<double> around;
    for (std::size_t j = segment >= 2 ? segment - 2 : 0; j <= std::min(segment + 2, updates.size() - 1); ++j)
      if (j != segment) around.push_back(updates[j]);
    std::ranges::sort(around);
    const std::size_t middle = around.size() / 2;
    const double median = around.size() % 2 == 1 ? around[middle] : 0.5 * (around[middle - 1] + around[middle]);
    return std::abs(std::log(updates[segment] / median));
  };
  auto score_ending_at = [&](std::int64_t step) {
    for (std::size_t i = 1; i < manifest.checkpoints.size(); ++i)
      if (manifest.checkpoints[i].step == step) return score_of(i - 1);
    FAIL("no checkpoint at step " << step);
    return 0.0;
  };
  const std::int64_t larger_in_epoch_1 = score_ending_at(10) > score_ending_at(15) ? 6 : 11;
  const std::int64_t larger_in_epoch_2 = score_ending_at(20) > score_ending_at(23) ? 16 : 21;

  VerifyOptions options;
  options.q = 1;
  options.random_count = 0;
  const Verdict top = fixture.verify(options);
  CHECK(top.accepted);
  std::vector<std::int64_t> top_q_first_steps;
  std::vector<std::int64_t> final_first_steps;
  for (const SegmentReport& report : top.segments)
    (report.chosen_by == "final" ? final_first_steps : top_q_first_steps).push_back(report.first_step);
  CHECK(top_q_first_steps == std::vector<std::int64_t>{1, larger_in_epoch_1, larger_in_epoch_2});
  // The last segment (steps 21-23) is replayed whatever its update, once.
  CHECK(final_first_steps == (larger_in_epoch_2 == 21 ? std::vector<std::int64_t>{} : std::vector<std::int64_t>{21}));
  CHECK(top.segments.size() == 3 + final_first_steps.size());
  CHECK(top.segments_total == 5);

  options.random_count = 5;  // more than are left: each is drawn once
  const Verdict topped_up = fixture.verify(options);
  REQUIRE(topped_up.segments.size() == 5);
  CHECK(std::count_if(topped_up.segments.begin(), topped_up.segments.end(),
                      [](const SegmentReport& r) { return r.chosen_by == "random"; }) == 5 - static_cast<long>(top.segments.size()));

  options.q = 2;  // each epoch has at most 2 segments: top-q takes them all
  options.random_count = 1;
  const Verdict everything = fixture.verify(options);
  REQUIRE(everything.segments.size() == 5);
  for (const SegmentReport& report : everything.segments) CHECK(report.chosen_by == "top-q");
}

// A coverage as `solver profile` would give for the toy task on one and two threads.
RuntimeCoverage toy_coverage(const Task& task, double l2 = 1e-3, double linf = 1.0) {
  RuntimeCoverage coverage;
  coverage.task_sha256 = task_sha256(task);
  coverage.runtimes = {test::toy_runtime(1), test::toy_runtime(2)};
  coverage.thresholds.parts["param"] = {1.0, l2, linf, 1.0};
  coverage.thresholds.loss = 1e-3;
  coverage.source = "toy profile";
  return coverage;
}

TEST_CASE("On another runtime a bundle is judged only when one of the verifier's profiles covers both runtimes", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.selection = SegmentSelection::All;
  int replays = 0;
  const auto two_threads = test::toy_replayer_factory(&replays, test::toy_runtime(2));

  const Verdict unjudged = verify_bundle(fixture.dir(), options, two_threads);
  CHECK_FALSE(unjudged.accepted);
  CHECK(unjudged.failures.empty());
  REQUIRE(unjudged.not_covered);
  CHECK_THAT(*unjudged.not_covered, Contains("none of its profiles covers both"));
  CHECK(replays == 0);
  CHECK(unjudged.to_json().at("not_covered") == *unjudged.not_covered);

  options.coverages = {toy_coverage(fixture.task)};
  options.coverages[0].runtimes = {test::toy_runtime(1)};  // the bundle's runtime only: no bound on the pair
  CHECK(verify_bundle(fixture.dir(), options, two_threads).not_covered);
  options.coverages = {toy_coverage(test::toy_task(8))};  // measured on another task
  CHECK(verify_bundle(fixture.dir(), options, two_threads).not_covered);

  options.coverages = {toy_coverage(fixture.task)};
  const Verdict judged = verify_bundle(fixture.dir(), options, two_threads);
  INFO(all_failures(judged));
  CHECK(judged.accepted);
  CHECK_FALSE(judged.not_covered);
  CHECK_FALSE(judged.same_runtime);
  REQUIRE_FALSE(judged.segments.empty());
  CHECK_FALSE(judged.segments.front().bitwise_required);
}

TEST_CASE("verify builds its replayer on its own device with the bundle's shard count, and another shard count is another runtime",
          "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.selection = SegmentSelection::All;
  options.device = "cuda:1";
  int replays = 0;
  RuntimeInfo two_shards = test::toy_runtime();
  two_shards.shards = 2;
  const ReplayerFactory toy = test::toy_replayer_factory(&replays, two_shards);
  std::vector<ReplaySetting> settings_asked;
  const Verdict verdict = verify_bundle(fixture.dir(), options, [&](const Task& task, const ReplaySetting& setting) {
    settings_asked.push_back(setting);
    return toy(task, setting);
  });
  REQUIRE(settings_asked.size() == 1);
  CHECK(settings_asked[0].device == "cuda:1");
  CHECK(settings_asked[0].shards == 1);
  CHECK_FALSE(verdict.same_runtime);
  CHECK(verdict.not_covered);
}

TEST_CASE("The bundle's thread and shard counts are capped by the verifier, not trusted", "[proof]") {
  test::ScratchDir scratch{"verify-caps"};
  const Task task = test::toy_task();
  const SigningKey solver = SigningKey::generate();
  test::ToyRun run;
  run.runtime.threads = 4096;
  REQUIRE(test::write_toy_bundle(scratch.path(), task, solver, run));
  int replays = 0;
  std::vector<int> threads_asked;
  const ReplayerFactory toy = test::toy_replayer_factory(&replays);
  const ReplayerFactory recording = [&](const Task& bundle_task, const ReplaySetting& setting) {
    threads_asked.push_back(setting.threads);
    return toy(bundle_task, setting);
  };
  VerifyOptions options;
  options.max_threads = 3;
  const Verdict capped = verify_bundle(scratch.path(), options, recording);
  CHECK(threads_asked == std::vector<int>{3});
  CHECK(capped.not_covered);  // 3 threads is not the bundle's runtime

  test::ScratchDir sharded{"verify-shards"};
  run.runtime.threads = 1;
  run.runtime.shards = 8;  // the toy's batch of 8 split eight ways: a real way to train it
  REQUIRE(test::write_toy_bundle(sharded.path(), task, solver, run));
  options.max_shards = 4;
  threads_asked.clear();
  const Verdict too_many = verify_bundle(sharded.path(), options, recording);
  REQUIRE(too_many.not_covered);
  CHECK_THAT(*too_many.not_covered, Contains("8 shards, more than this verifier's cap of 4"));
  CHECK(threads_asked.empty());  // refused before any replayer was built

  test::ScratchDir impossible{"verify-impossible-shards"};
  run.runtime.shards = 9;  // more shards than samples in a batch
  REQUIRE(test::write_toy_bundle(impossible.path(), task, solver, run));
  const Verdict rejected = verify_bundle(impossible.path(), options, recording);
  CHECK_FALSE(rejected.accepted);
  CHECK_THAT(all_failures(rejected), Contains("runtime: 1 threads and 9 shards is not a way to train batches of 8"));
}

TEST_CASE("On another runtime each threshold of every part must hold, and what has no rounding must be equal", "[proof]") {
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
  options.coverages = {toy_coverage(fixture.task)};
  CHECK(verify_bundle(fixture.dir(), options, other_runtime).accepted);

  options.coverages = {toy_coverage(fixture.task, 1e-3, 1e-5)};
  const Verdict verdict = verify_bundle(fixture.dir(), options, other_runtime);
  CHECK_FALSE(verdict.accepted);
  CHECK_THAT(all_failures(verdict), Contains("segment steps 6-10: replay differs from the claimed checkpoint beyond the "
                                             "thresholds of toy profile (param: linf ") &&
                                        Contains("> threshold 1e-05"));

  // The toy's optimizer counter is an integer: no threshold forgives a change to it.
  Fixture counter;
  checkpoint::Checkpoint forged = checkpoint::read_safetensors(counter.dir() / "ckpt/step_15.safetensors");
  for (checkpoint::Tensor& tensor : forged.tensors)
    if (tensor.name == "optim.step") tensor.data[1] = std::byte{1};
  checkpoint::write_safetensors(counter.dir() / "ckpt/step_15.safetensors", forged);
  reseal(counter.dir(), counter.forger);
  options.coverages = {toy_coverage(counter.task, 1e9, 1e9)};
  const Verdict integer = verify_bundle(counter.dir(), options, other_runtime);
  CHECK_FALSE(integer.accepted);
  CHECK_THAT(all_failures(integer), Contains("replay differs from the claimed checkpoint in tensor optim.step, which must be "
                                             "equal on any runtime"));
}

TEST_CASE("The same random seed gives the same verdict and segment choice", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  options.q = 0;  // the final segment...
  options.random_count = 2;  // ...and two of the other 4, as the seed says
  const Verdict first = fixture.verify(options);
  REQUIRE(first.segments.size() == 3);
  CHECK(std::count_if(first.segments.begin(), first.segments.end(), [](const SegmentReport& r) { return r.chosen_by == "random"; }) == 2);

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
  CHECK(random.segments.size() == 3);  // and the final segment
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
  fixture.expect_rejected(verdict, "segment steps 6-10: replay differs from the claimed checkpoint (parameters l2 ");
  CHECK_THAT(all_failures(verdict), Contains("but the same runtime must reproduce it bit for bit; first differing tensor param.w)"));
  CHECK(fixture.replays == 5);
}

TEST_CASE("Forged checkpoint metadata is caught by the step counters before any replay, even with every tensor intact", "[proof]") {
  Fixture fixture;
  checkpoint::Checkpoint state = checkpoint::read_safetensors(fixture.dir() / "ckpt/step_10.safetensors");
  state.metadata["optimizer_step"] = "99";  // would change bias correction for the next segment
  checkpoint::write_safetensors(fixture.dir() / "ckpt/step_10.safetensors", state);
  reseal(fixture.dir(), fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "invariant at step 10: step counters: metadata optimizer_step is \"99\", expected 10");
  CHECK(fixture.replays == 0);
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

TEST_CASE("A checkpoint that is a symlink is rejected naming it, and nothing of its target reaches the verdict", "[proof]") {
  Fixture fixture;
  test::ScratchDir outside("verify-outside");
  const fs::path checkpoint = fixture.dir() / "ckpt/step_10.safetensors";
  const std::string expected = "ckpt/step_10.safetensors: is a symlink (bundle files must be regular files inside the bundle)";
  SECTION("to an identical copy outside the bundle") {
    fs::copy_file(checkpoint, outside / "step_10.safetensors");
    fs::remove(checkpoint);
    fs::create_symlink(outside / "step_10.safetensors", checkpoint);
    fixture.expect_rejected(fixture.verify_all(), expected);
    CHECK(fixture.replays == 0);
  }
  SECTION("to a local file of the same size") {
    const std::string secret(fs::file_size(checkpoint), 's');
    test::write_text(outside / "secret", secret);
    fs::remove(checkpoint);
    fs::create_symlink(outside / "secret", checkpoint);
    const Verdict verdict = fixture.verify_all();
    fixture.expect_rejected(verdict, expected);
    CHECK(verdict.to_json().dump().find(sha256_hex(secret)) == std::string::npos);
  }
  SECTION("a folder of the bundle that is a symlink") {
    fs::rename(fixture.dir() / "segments", outside / "segments");
    fs::create_directory_symlink(outside / "segments", fixture.dir() / "segments");
    fixture.expect_rejected(fixture.verify_all(), "segments/steps_1-5.json: segments is a symlink");
  }
  SECTION("manifest.json: not a bundle") {
    fs::rename(fixture.dir() / "manifest.json", outside / "manifest.json");
    fs::create_symlink(outside / "manifest.json", fixture.dir() / "manifest.json");
    int replays = 0;
    CHECK_THROWS_WITH(verify_bundle(fixture.dir(), {}, test::toy_replayer_factory(&replays)),
                      Contains("not a bundle") && Contains("manifest.json: is a symlink"));
  }
}

TEST_CASE("A checkpoint whose header names a tensor twice is rejected, though a parser keeping the last one sees the honest file", "[proof]") {
  Fixture fixture;
  const fs::path path = fixture.dir() / "ckpt/step_10.safetensors";
  const std::string honest = read_file(path);
  std::uint64_t length = 0;
  std::memcpy(&length, honest.data(), sizeof length);
  json decoy = json::parse(honest.substr(sizeof length, length)).at("param.w");  // the same bytes, read as U8
  const std::int64_t bytes = decoy["data_offsets"][1].get<std::int64_t>() - decoy["data_offsets"][0].get<std::int64_t>();
  decoy["dtype"] = "U8";
  decoy["shape"] = json::array({bytes});
  const std::vector<std::byte> forged =
      test::with_header_entry(std::as_bytes(std::span(honest.data(), honest.size())), "\"param.w\":" + decoy.dump());
  write_file_durably(path, forged);
  Manifest manifest = read_manifest(fixture.dir());
  manifest.checkpoints[2].file.size = forged.size();
  manifest.checkpoints[2].file.sha256 = sha256_hex(forged);
  test::rechain_and_sign(fixture.dir(), manifest, fixture.forger);

  fixture.expect_rejected(fixture.verify_all(), "key \"param.w\" appears twice in one object");
}

TEST_CASE("The checkpoint sequence is checked before any file is hashed", "[proof]") {
  // 1,000 entries naming step 0's file, each recording a wrong hash: hashing any of them would
  // add a sha256 mismatch to the failures.
  Fixture fixture;
  Manifest manifest = read_manifest(fixture.dir());
  CheckpointEntry repeated = manifest.checkpoints.front();
  repeated.file.sha256 = sha256_hex("not step 0");
  manifest.checkpoints.assign(1000, repeated);
  test::rechain_and_sign(fixture.dir(), manifest, fixture.forger);

  const Verdict verdict = fixture.verify_all();
  fixture.expect_rejected(verdict, "checkpoints: expected step 5 after 0, found 0 (missing or reordered)");
  CHECK_THAT(all_failures(verdict), !Contains("mismatch"));
  CHECK(fixture.replays == 0);
}

TEST_CASE("A manifest, signature or segment file larger than its cap is refused before it is read", "[proof]") {
  Fixture fixture;
  int replays = 0;
  SECTION("manifest.json over 32 MiB (sparse: the bytes need not exist to be refused)") {
    fs::resize_file(fixture.dir() / "manifest.json", kMaxManifestBytes + 1);
    CHECK_THROWS_WITH(verify_bundle(fixture.dir(), {}, test::toy_replayer_factory(&replays)),
                      Contains("not a bundle") &&
                          Contains("manifest.json: 33554433 bytes, more than the 33554432 a manifest may hold"));
  }
  SECTION("manifest.sig padded past 512 bytes with whitespace a lax reader would strip") {
    test::write_text(fixture.dir() / "manifest.sig", read_file(fixture.dir() / "manifest.sig") + std::string(600, ' '));
    CHECK_THROWS_WITH(verify_bundle(fixture.dir(), {}, test::toy_replayer_factory(&replays)),
                      Contains("not a bundle") && Contains("manifest.sig: 729 bytes, more than the 512 a signature may hold"));
  }
  SECTION("a segment padded past what its steps can take, re-hashed and re-signed") {
    // 5 steps of batch 8: at most 256 + 5 * (128 + 11 * 8) = 1336 bytes.
    const fs::path segment = fixture.dir() / "segments/steps_6-10.json";
    const std::string text = read_file(segment);
    REQUIRE(text.size() < 1336);
    test::write_text(segment, text + std::string(1337 - text.size(), ' '));
    reseal(fixture.dir(), fixture.forger);
    fixture.expect_rejected(fixture.verify_all(),
                            "segments/steps_6-10.json: 1337 bytes, more than the 1336 a segment of that many steps may hold");
    CHECK(fixture.replays == 0);
  }
}

TEST_CASE("The verdict says whether the bundle's task was checked against the one the verifier expects", "[proof]") {
  Fixture fixture;
  const Verdict unchecked = fixture.verify();
  CHECK(unchecked.accepted);
  CHECK_FALSE(unchecked.task_checked);
  CHECK(unchecked.to_json().at("task_checked") == false);

  VerifyOptions expecting;
  expecting.expected_task_sha256 = task_sha256(fixture.task);
  const Verdict checked = fixture.verify(expecting);
  CHECK(checked.accepted);
  CHECK(checked.task_checked);
  CHECK(checked.to_json().at("task_checked") == true);
}

TEST_CASE("A bundle whose checkpoints are not the ones committed while training is rejected as rewritten", "[proof]") {
  Fixture fixture;
  VerifyOptions options;
  for (const CheckpointEntry& entry : read_manifest(fixture.dir()).checkpoints)
    options.committed_checkpoints.push_back(entry.commitment());
  CHECK(fixture.verify(options).accepted);

  const std::string other_hash(64, 'a');
  SECTION("a checkpoint committed with another hash") {
    options.committed_checkpoints[2].sha256 = other_hash;
    fixture.expect_rejected(fixture.verify(options), "commitments: checkpoint step 10 has sha256 " +
                                                         read_manifest(fixture.dir()).checkpoints[2].file.sha256 + " in the bundle, but " +
                                                         other_hash + " was committed while training: the bundle was rewritten");
  }
  SECTION("a committed checkpoint the bundle lacks") {
    options.committed_checkpoints.push_back({12, other_hash});
    fixture.expect_rejected(fixture.verify(options), "commitments: checkpoint step 12 was committed while training (sha256 " +
                                                         other_hash + ") but is not in the bundle");
  }
  CHECK(fixture.replays == 0);  // rejected by the checks before any replay
}

TEST_CASE("A verdict's summary is whether it was accepted, why in one sentence, and the verdict as the report", "[proof]") {
  Fixture fixture;
  const Verdict accepted = fixture.verify();
  const VerdictSummary accepted_summary = accepted.summary();
  CHECK(accepted_summary.accepted);
  CHECK(accepted_summary.reason == "replayed segments match");
  CHECK(accepted_summary.report == accepted.to_json());

  VerifyOptions expecting;
  expecting.expected_task_sha256 = std::string(64, 'b');
  const Verdict rejected = fixture.verify(expecting);
  REQUIRE_FALSE(rejected.failures.empty());
  const VerdictSummary rejected_summary = rejected.summary();
  CHECK_FALSE(rejected_summary.accepted);
  CHECK(rejected_summary.reason == rejected.failures.front());
  CHECK(rejected_summary.report == rejected.to_json());
}

}  // namespace
}  // namespace solver::proof
