// Published attacks on proof of learning, each a program that forges a bundle from honest
// `solver run` output (tests/e2e/forger.h) and must be rejected by `solver verify` with its
// default selection (top-q per epoch plus random segments) and a fixed verifier seed, so the
// verdicts are reproducible. Each prints how many segments the verifier replayed to catch it.
// Tasks run on a 960-sample cut of Fashion-MNIST so that a few seconds of training span
// several epochs: 30 steps per epoch, 4 epochs, a checkpoint every 5 steps (24 segments).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <regex>
#include <span>

#include "checkpoint/safetensors.h"
#include "common/sha256.h"
#include "common/keys.h"
#include "proof/verify.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

constexpr int kTrainSamples = 960;
constexpr int kSegmentsPerEpoch = 6;  // 30 steps per epoch, checkpoints every 5
constexpr int kEpochs = 4;
constexpr int kSegments = kSegmentsPerEpoch * kEpochs;
const std::vector<std::string> kVerifierSeed{"--seed", "7"};

// Writes the first `train` training and `test` test samples of Fashion-MNIST as plain IDX files.
void write_small_dataset(const std::filesystem::path& dir, int train, int test) {
  const char* script = R"(
import gzip, struct, sys
source, target, train, test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for name, count in [("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", train),
                    ("t10k-images-idx3-ubyte", test), ("t10k-labels-idx1-ubyte", test)]:
    data = gzip.open(f"{source}/{name}.gz").read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    item = 1
    for size in shape[1:]:
        item *= size
    header = data[:4] + struct.pack(">I", count) + data[8:4 + 4 * dims]
    with open(f"{target}/{name}", "wb") as out:
        out.write(header + data[4 + 4 * dims:4 + 4 * dims + count * item])
)";
  std::filesystem::create_directories(dir);
  const CommandResult cut = run_command({system_python(), "-c", script, fashion_mnist_dir().string(), dir.string(),
                                         std::to_string(train), std::to_string(test)});
  INFO(cut.output);
  REQUIRE(cut.exit_code == 0);
}

// The attacks' task: 120 steps over the small dataset in `data`, with the given seed and model.
json attack_task(const std::filesystem::path& data, std::uint64_t seed,
                 const json& model = {{"kind", "mlp"}, {"hidden", {32}}}) {
  json task = small_task("attack-target", 120, 5, model);
  task["seed"] = seed;
  auto file = [&](const char* name) {
    return json{{"location", (data / name).string()}, {"sha256", sha256_file_hex(data / name)}};
  };
  task["dataset"]["train_images"] = file("train-images-idx3-ubyte");
  task["dataset"]["train_labels"] = file("train-labels-idx1-ubyte");
  task["dataset"]["test_images"] = file("t10k-images-idx3-ubyte");
  task["dataset"]["test_labels"] = file("t10k-labels-idx1-ubyte");
  return task;
}

std::filesystem::path run_honestly(const std::filesystem::path& task, const std::filesystem::path& key,
                                   const std::filesystem::path& out) {
  const CommandResult run = run_solver({"run", task.string(), "--out", out.string(), "--key", key.string()});
  REQUIRE(run.exit_code == 0);
  return out;
}

struct AttackWorld {
  ScratchDir dir{"attacks"};
  std::filesystem::path data;    // the small dataset
  std::filesystem::path key;     // the cheating solver's own key
  std::filesystem::path task;    // the task every forged bundle claims to have done (seed 1234)
  std::filesystem::path honest;  // `solver run` of that task
  std::filesystem::path stolen;  // `solver run` of the same task with seed 99: a final model obtained elsewhere
};

const AttackWorld& world() {
  static AttackWorld* made = [] {
    auto* world = new AttackWorld;
    world->data = world->dir / "data";
    write_small_dataset(world->data, kTrainSamples, 1000);
    world->key = make_key(world->dir.path());
    world->task = write_task(world->dir.path(), "task", attack_task(world->data, 1234));
    world->honest = run_honestly(world->task, world->key, world->dir / "honest");
    const auto other = write_task(world->dir.path(), "other-seed", attack_task(world->data, 99));
    const auto other_key = make_key(world->dir / "other-solver");
    world->stolen = run_honestly(other, other_key, world->dir / "stolen");
    return world;
  }();
  return *made;
}

checkpoint::Checkpoint final_state(const std::filesystem::path& bundle) {
  Forger reader(bundle, world().key);
  return reader.checkpoint_at(reader.manifest().checkpoints.size() - 1);
}

// For the closing table of attacks: was it caught, and at what replay cost.
void report(const std::string& attack, const Verification& verification) {
  std::printf("attack: %-58s %s, replayed %d of %d segments\n", attack.c_str(),
              verification.result.exit_code == 1 ? "REJECTED" : "not rejected", verification.segments_replayed,
              verification.segments_total);
}

int failed_replays(const CommandResult& result) {
  int failed = 0;
  for (std::size_t at = result.output.find(" FAIL\n"); at != std::string::npos; at = result.output.find(" FAIL\n", at + 1))
    ++failed;
  return failed;
}

double update_l2(const proof::Manifest& manifest, int segment) { return manifest.checkpoints.at(segment + 1).update->l2; }

// What the default selection replays: the top 2 of each epoch, the final segment unless top-q
// already took it (the verdict's table then names it "final"), and 1 at random.
int default_replays(const Verification& verification) {
  const bool final_apart = std::regex_search(verification.result.output, std::regex("steps [0-9]+-[0-9]+ +final "));
  return 2 * kEpochs + (final_apart ? 1 : 0) + 1;
}

}  // namespace

TEST_CASE("the honest bundle that the attacks start from is accepted with the default selection", "[e2e][attack]") {
  const Verification honest = run_verify(world().honest, kVerifierSeed);
  CHECK(honest.result.exit_code == 0);
  CHECK(honest.result.output.find("verdict: ACCEPTED") != std::string::npos);
  CHECK(honest.segments_replayed == default_replays(honest));
  CHECK(honest.segments_total == kSegments);
}

TEST_CASE("infinitesimal-update attack (Fang et al.): checkpoints interpolated to a stolen final model", "[e2e][attack]") {
  ScratchDir scratch("attack-infinitesimal");
  const auto bundle = copy_bundle(world().honest, scratch / "bundle");
  Forger forger(bundle, world().key);
  const proof::Manifest honest_manifest = forger.manifest();
  const checkpoint::Checkpoint stolen = final_state(world().stolen);
  const std::size_t last = forger.manifest().checkpoints.size() - 1;

  SECTION("from a fake initialisation next to the stolen model, every update tiny: caught by the initialisation check") {
    // The start: the stolen parameters scaled by 0.9999, which the seed does not give.
    checkpoint::Checkpoint fake_start = stolen;
    for (auto& tensor : fake_start.tensors)
      if (tensor.name.starts_with("param."))
        for (float& value : std::span(reinterpret_cast<float*>(tensor.data.data()), tensor.data.size() / sizeof(float)))
          value *= 0.9999f;
    for (std::size_t i = 0; i <= last; ++i) {
      checkpoint::Checkpoint state = forger.checkpoint_at(i);
      interpolate_parameters(state, fake_start, stolen, static_cast<float>(i) / static_cast<float>(last));
      forger.replace_checkpoint(i, state);
    }
    forger.reseal();
    // Tiny: below every honest update.
    double largest_forged = 0.0, smallest_honest = 1e300;
    for (int segment = 0; segment < kSegments; ++segment) {
      largest_forged = std::max(largest_forged, update_l2(forger.manifest(), segment));
      smallest_honest = std::min(smallest_honest, update_l2(honest_manifest, segment));
    }
    INFO("largest forged update " << largest_forged << ", smallest honest update " << smallest_honest);
    REQUIRE(largest_forged < smallest_honest);

    const Verification verification = run_verify(bundle, kVerifierSeed);
    check_rejected(verification.result, "initialisation: step 0 differs from the weights the task seed gives");
    CHECK(verification.segments_replayed == 0);
    report("infinitesimal updates from a fake initialisation", verification);
  }
  SECTION("from the true initialisation: caught by the replay of any segment") {
    const checkpoint::Checkpoint start = forger.checkpoint_at(0);
    for (std::size_t i = 1; i <= last; ++i) {
      checkpoint::Checkpoint state = forger.checkpoint_at(i);
      interpolate_parameters(state, start, stolen, static_cast<float>(i) / static_cast<float>(last));
      forger.replace_checkpoint(i, state);
    }
    forger.reseal();

    const Verification verification = run_verify(bundle, kVerifierSeed);
    check_rejected(verification.result, "replay differs from the claimed checkpoint");
    CHECK(verification.segments_replayed == default_replays(verification));
    CHECK(failed_replays(verification.result) == verification.segments_replayed);
    report("interpolation from the true initialisation to a stolen model", verification);
  }
}

TEST_CASE("blindfold top-q: honest largest updates in each epoch, the rest interpolated, is caught by top-q on the whole state",
          "[e2e][attack]") {
  // In each epoch the first 2 segments (the default q) are the honest ones; the checkpoints
  // after them are replaced by a straight line from the end of those to the next honest
  // checkpoint, so the faked updates are smaller than the 2 honest ones and a top-q by the
  // parameters' update never looks at them. The ranking by the whole state's change does: the
  // line's steady parameter steps beside the honest optimizer state are what stands out. The next honest checkpoint is the next epoch's start, except in the last epoch: the
  // final segment is always replayed, so the forger computes it honestly and the line ends at its start.
  ScratchDir scratch("attack-blindfold");
  const auto bundle = copy_bundle(world().honest, scratch / "bundle");
  Forger forger(bundle, world().key);
  constexpr int kHonestPerEpoch = 2;
  auto next_honest_checkpoint = [](int epoch) { return std::min((epoch + 1) * kSegmentsPerEpoch, kSegments - 1); };
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    const int honest_end = epoch * kSegmentsPerEpoch + kHonestPerEpoch;  // checkpoint index
    const int next_honest = next_honest_checkpoint(epoch);
    const checkpoint::Checkpoint from = forger.checkpoint_at(honest_end);
    const checkpoint::Checkpoint to = forger.checkpoint_at(next_honest);
    for (int i = honest_end + 1; i < next_honest; ++i) {
      checkpoint::Checkpoint state = forger.checkpoint_at(i);
      interpolate_parameters(state, from, to, static_cast<float>(i - honest_end) / static_cast<float>(next_honest - honest_end));
      forger.replace_checkpoint(i, state);
    }
  }
  forger.reseal();
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    const int first = epoch * kSegmentsPerEpoch;
    double smallest_honest = 1e300, largest_other = 0.0;
    for (int segment = first; segment < first + kHonestPerEpoch; ++segment)
      smallest_honest = std::min(smallest_honest, update_l2(forger.manifest(), segment));
    for (int segment = first + kHonestPerEpoch; segment < first + kSegmentsPerEpoch; ++segment)
      largest_other = std::max(largest_other, update_l2(forger.manifest(), segment));
    INFO("epoch " << epoch << ": smallest honest update " << smallest_honest << ", largest of the others " << largest_other);
    REQUIRE(smallest_honest > largest_other);
  }

  // Top-q alone (no random draw) already replays faked segments.
  const Verification top_q_only = run_verify(bundle, {"--seed", "7", "--random", "0"});
  check_rejected(top_q_only.result, "replay differs from the claimed checkpoint");
  CHECK(failed_replays(top_q_only.result) >= 1);
  report("blindfold top-q, verified with top-q alone (--random 0)", top_q_only);

  const Verification verification = run_verify(bundle, kVerifierSeed);
  check_rejected(verification.result, "replay differs from the claimed checkpoint");
  CHECK(failed_replays(verification.result) >= failed_replays(top_q_only.result));
  report("blindfold top-q, default selection", verification);
}

TEST_CASE("a bundle trained honestly on a data order from another seed is rejected by the data-order check",
          "[e2e][attack]") {
  // A TorchScript model starts from the module's weights, not the seed, so the seed decides only
  // the data order (and dropout): the run below is honest training in every respect but the order.
  ScratchDir scratch("attack-data-order");
  const auto model = scratch / "model.pt";
  const CommandResult exported =
      run_command({system_python(), (source_dir() / "tests/python/export_model.py").string(), model.string()});
  INFO(exported.output);
  REQUIRE(exported.exit_code == 0);
  const json torchscript{{"kind", "torchscript"}, {"file", {{"location", model.string()}, {"sha256", sha256_file_hex(model)}}}};
  const auto claimed_task = write_task(scratch.path(), "claimed", attack_task(world().data, 1234, torchscript));
  const auto trained_task = write_task(scratch.path(), "trained", attack_task(world().data, 99, torchscript));
  const auto bundle = run_honestly(trained_task, world().key, scratch / "bundle");

  Forger forger(bundle, world().key);
  auto& manifest = forger.manifest();
  manifest.task["seed"] = 1234;
  manifest.seed = 1234;
  forger.reseal();

  // The bundle claims exactly the task the verifier expects.
  const Verification verification = run_verify(bundle, {"--seed", "7", "--task", claimed_task.string()});
  check_rejected(verification.result, "data order: step 1 used indices the task seed does not give (and 119 more steps)");
  CHECK(verification.result.output.find("task: ") == std::string::npos);
  CHECK(verification.result.output.find("initialisation") == std::string::npos);
  CHECK(verification.segments_replayed == 0);
  report("data order drawn with another seed, trained honestly", verification);
}

TEST_CASE("a bundle trained on half of the training data is rejected by the data-order check", "[e2e][attack]") {
  ScratchDir scratch("attack-half-data");
  const auto bundle = copy_bundle(world().honest, scratch / "bundle");
  Forger forger(bundle, world().key);
  for (int segment = 0; segment < kSegments; ++segment) {
    std::vector<StepRecord> steps = forger.segment(segment);
    for (StepRecord& step : steps)
      for (std::uint32_t& index : step.indices) index %= kTrainSamples / 2;
    forger.replace_segment(segment, steps);
  }
  forger.reseal();

  const Verification verification = run_verify(bundle, kVerifierSeed);
  check_rejected(verification.result, "data order: step ");
  CHECK(verification.segments_replayed == 0);
  report("indices only from the first half of the training set", verification);
}

TEST_CASE("a bundle stolen and re-signed by another solver is rejected when the verifier expects the victim's key",
          "[e2e][attack]") {
  ScratchDir scratch("attack-stolen");
  const auto bundle = copy_bundle(world().honest, scratch / "bundle");
  const std::string victim = SigningKey::load(world().key).public_key_hex();
  const auto thief_key = make_key(scratch / "thief");
  Forger thief(bundle, thief_key);
  thief.reseal();
  const std::string thief_public = thief.manifest().solver_public_key;
  REQUIRE(thief_public != victim);

  const Verification verification = run_verify(bundle, {"--seed", "7", "--expect-key", victim});
  check_rejected(verification.result, "signature: the bundle is signed by " + thief_public + ", expected " + victim);
  CHECK(verification.segments_replayed == 0);
  report("someone else's bundle re-signed, --expect-key the victim's", verification);

  // Without an expected key the stolen bundle is valid work, validly signed: only the market's
  // record of who committed the chain while training can tell the thief from the solver.
  const Verification unbound = run_verify(bundle, kVerifierSeed);
  CHECK(unbound.result.exit_code == 0);
  report("someone else's bundle re-signed, no expected key", unbound);
}
