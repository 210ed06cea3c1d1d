// Forgers who use what a bundle holds besides the parameters: the optimizer state (a hidden
// channel: the moments steer every later step), the claimed runtime (which picks how a replay
// is compared), and the outcome. Each forges a bundle from honest `solver run` output, re-signs
// it, and must be rejected (or, for a runtime the verifier cannot reproduce, not judged) by
// `solver verify` under its default options, with a message naming the check.
#include <catch2/catch.hpp>

#include <sstream>

#include "checkpoint/safetensors.h"
#include "proof/detail/journal.h"
#include "proof/manifest.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

const std::vector<std::string> kVerifierSeed{"--seed", "7"};

// 120 steps of Adam, a checkpoint every 5 (24 segments), without gradient clipping: the clip's
// bounds would catch a rescaled moment before any replay, and these forgers must get past every
// check that needs no training.
json unclipped_task() {
  json task = small_task("state-forgery", 120, 5);
  task["training"]["grad_clip_norm"] = 0.0;
  return task;
}

struct World {
  ScratchDir dir{"state-forgeries"};
  std::filesystem::path key, task, honest;
};

const World& world() {
  static World* made = [] {
    auto* world = new World;
    world->key = make_key(world->dir.path());
    world->task = write_task(world->dir.path(), "task", unclipped_task());
    world->honest = world->dir / "honest";
    const CommandResult run = run_solver({"run", world->task.string(), "--out", world->honest.string(), "--key", world->key.string()});
    REQUIRE(run.exit_code == 0);
    return world;
  }();
  return *made;
}

void scale_tensors(checkpoint::Checkpoint& state, const std::string& suffix, float factor) {
  for (checkpoint::Tensor& tensor : state.tensors) {
    if (!tensor.name.ends_with(suffix)) continue;
    auto* values = reinterpret_cast<float*>(tensor.data.data());
    for (std::int64_t i = 0; i < tensor.element_count(); ++i) values[i] *= factor;
  }
}

// Turns the finished bundle in `dir` back into a run interrupted right after checkpoint `index`,
// whose state there is `forged`, then lets `solver run --resume` train the rest from it: every
// later segment then replays exactly from the forged state.
void continue_from_forged_state(const std::filesystem::path& dir, std::size_t index, const checkpoint::Checkpoint& forged) {
  const proof::Manifest manifest = proof::read_manifest(dir);
  std::filesystem::remove(dir / "manifest.json");
  std::filesystem::remove(dir / "manifest.sig");
  for (std::size_t i = index + 1; i < manifest.checkpoints.size(); ++i) {
    std::filesystem::remove(dir / manifest.checkpoints[i].file.path);
    std::filesystem::remove(dir / manifest.segments[i - 1].file.path);
  }
  const checkpoint::WrittenFile written = checkpoint::write_safetensors(dir / manifest.checkpoints[index].file.path, forged);
  const proof::detail::Journal journal(dir);
  journal.create({manifest.task_sha256, manifest.runtime, manifest.train_samples, manifest.total_steps});
  std::string chain = manifest.task_sha256;
  for (std::size_t i = 0; i <= index; ++i) {
    proof::CheckpointEntry entry = manifest.checkpoints[i];
    if (i == index) entry.file = {entry.file.path, written.size, written.sha256};  // parameters unchanged: same update
    const std::optional<proof::SegmentEntry> segment =
        i == 0 ? std::nullopt : std::optional<proof::SegmentEntry>(manifest.segments[i - 1]);
    entry.chain = proof::chain_link(chain, entry.step, entry.file.sha256, segment ? segment->file.sha256 : "");
    chain = entry.chain;
    journal.append(entry, segment, static_cast<double>(i));
  }
  const CommandResult resumed =
      run_solver({"run", world().task.string(), "--out", dir.string(), "--resume", "--key", world().key.string()});
  REQUIRE(resumed.exit_code == 0);
}

// The table line of the segment starting at `first_step`, from the verdict's output.
std::string segment_line(const std::string& output, std::int64_t first_step) {
  std::istringstream lines(output);
  const std::string prefix = "steps " + std::to_string(first_step) + "-";
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with(prefix)) return line;
  return "";
}

}  // namespace

TEST_CASE("state forgeries: the honest bundle they start from is accepted with the default selection", "[e2e][forgery]") {
  const Verification honest = run_verify(world().honest, kVerifierSeed);
  CHECK(honest.result.exit_code == 0);
  CHECK(honest.result.output.find("verdict: ACCEPTED") != std::string::npos);
}

TEST_CASE("state forgeries: Adam's second moment rewritten at one checkpoint and trained on from there is ranked for replay and caught",
          "[e2e][forgery]") {
  ScratchDir scratch{"state-forgery-moment"};
  const auto dir = copy_bundle(world().honest, scratch / "bundle");
  constexpr std::size_t kForged = 12;  // step 60: segment 11 (steps 56-60) ends on it
  checkpoint::Checkpoint forged;
  {
    Forger reader(dir, world().key);
    forged = reader.checkpoint_at(kForged);
  }
  // A hundred times the second moment: every later step moves the parameters about a tenth as
  // far, so the parameters' updates after it look ordinary and small.
  scale_tensors(forged, ".exp_avg_sq", 100.0f);
  continue_from_forged_state(dir, kForged, forged);

  const Verification verdict = run_verify(dir, kVerifierSeed);
  check_rejected(verdict.result, "segment steps 56-60: replay differs from the claimed checkpoint");
  CHECK(verdict.result.output.find("first differing tensor optim.") != std::string::npos);
  // Found by the ranking of the whole state's change, not by a lucky random draw.
  CHECK(segment_line(verdict.result.output, 56).find("top-q") != std::string::npos);
  std::printf("attack: %-58s %s, replayed %d of %d segments\n", "optimizer state rewritten, trained on from there",
              verdict.result.exit_code == 1 ? "REJECTED" : "not rejected", verdict.segments_replayed, verdict.segments_total);
}

TEST_CASE("state forgeries: a frozen optimizer with interpolated parameters (steps never computed) fails an invariant before any replay",
          "[e2e][forgery]") {
  ScratchDir scratch{"state-forgery-frozen"};
  const auto dir = copy_bundle(world().honest, scratch / "bundle");
  Forger forger(dir, world().key);
  const std::size_t last = forger.manifest().checkpoints.size() - 1;
  const checkpoint::Checkpoint halfway = forger.checkpoint_at(12);
  const checkpoint::Checkpoint final_model = forger.checkpoint_at(last);
  for (std::size_t i = 13; i <= last; ++i) {
    checkpoint::Checkpoint state = halfway;  // optimizer state copied: no gradient was ever computed
    interpolate_parameters(state, halfway, final_model, static_cast<float>(i - 12) / static_cast<float>(last - 12));
    const std::string step = std::to_string(forger.manifest().checkpoints[i].step);
    state.metadata["step"] = state.metadata["optimizer_step"] = step;
    forger.replace_checkpoint(i, state);
  }
  forger.reseal();

  const Verification verdict = run_verify(dir, kVerifierSeed);
  check_rejected(verdict.result, "invariant at step 65: a parameter moves only with its optimizer state: param.");
  CHECK(verdict.segments_replayed == 0);
}

TEST_CASE("state forgeries: a bundle relabelled as trained on another runtime is not judged, and not accepted", "[e2e][forgery]") {
  ScratchDir scratch{"state-forgery-runtime"};
  // With a runtime the verifier cannot reproduce, a threshold would judge it; none that the bundle
  // could choose is used: without a profile of the verifier's covering that runtime, no verdict.
  const auto relabelled = copy_bundle(world().honest, scratch / "relabelled");
  {
    Forger forger(relabelled, world().key);
    forger.manifest().runtime.device = "cuda:0 (NVIDIA H100 80GB HBM3)";
    forger.reseal();
  }
  const Verification unjudged = run_verify(relabelled, kVerifierSeed);
  CHECK(unjudged.result.exit_code == 3);
  CHECK(unjudged.result.output.find("verdict: NOT JUDGED HERE: runtime: the bundle was trained on cuda:0 (NVIDIA H100") !=
        std::string::npos);
  CHECK(unjudged.result.output.find("ACCEPTED") == std::string::npos);

  // The same label on a bundle whose optimizer state steers training: the state's own bounds
  // reject it before the runtime matters.
  const auto steered = copy_bundle(world().honest, scratch / "steered");
  Forger forger(steered, world().key);
  checkpoint::Checkpoint state = forger.checkpoint_at(12);
  scale_tensors(state, ".exp_avg", 3.0f);
  forger.replace_checkpoint(12, state);
  forger.manifest().runtime.device = "cuda:0 (NVIDIA H100 80GB HBM3)";
  forger.reseal();
  const Verification rejected = run_verify(steered, kVerifierSeed);
  check_rejected(rejected.result, "invariant at step 60: first moment within the second (Cauchy-Schwarz)");
}

TEST_CASE("state forgeries: a lied outcome is measured again and rejected", "[e2e][forgery]") {
  ScratchDir scratch{"state-forgery-outcome"};
  struct Lie {
    const char* name;
    std::function<void(proof::TrainOutcome&)> edit;
    const char* reason;
  };
  const Lie lies[] = {
      {"accuracy", [](proof::TrainOutcome& outcome) { outcome.test_accuracy = std::min(1.0, outcome.test_accuracy + 0.05); },
       "outcome: test_accuracy is "},
      {"loss", [](proof::TrainOutcome& outcome) { outcome.final_loss *= 0.5; }, "outcome: final_loss "},
      {"seconds", [](proof::TrainOutcome& outcome) { outcome.train_seconds = -1.0; }, "outcome: train_seconds -1 is not a duration"},
  };
  for (const Lie& lie : lies) {
    INFO(lie.name);
    const auto dir = copy_bundle(world().honest, scratch / lie.name);
    Forger forger(dir, world().key);
    lie.edit(forger.manifest().outcome);
    forger.reseal();
    const Verification verdict = run_verify(dir, kVerifierSeed);
    check_rejected(verdict.result, lie.reason);
  }
}

TEST_CASE("state forgeries: a checkpoint padded with a tensor or a header the task's state does not have is refused before it is read",
          "[e2e][forgery]") {
  ScratchDir scratch{"state-forgery-padded"};
  const auto extra = copy_bundle(world().honest, scratch / "extra-tensor");
  {
    Forger forger(extra, world().key);
    checkpoint::Checkpoint state = forger.checkpoint_at(12);
    // 64 MB of zeros in a tensor no model of the task has: the verifier would hold it in memory.
    state.tensors.push_back({"buffer.padding", checkpoint::DType::F32, {16 << 20}, std::vector<std::byte>(std::size_t{64} << 20)});
    forger.replace_checkpoint(12, state);
    forger.reseal();
  }
  const Verification padded = run_verify(extra, kVerifierSeed);
  check_rejected(padded.result, "ckpt/step_60.safetensors: ");
  CHECK(padded.result.output.find("bytes a state of the task's model and optimizer can take") != std::string::npos);
  CHECK(padded.segments_replayed == 0);

  const auto header = copy_bundle(world().honest, scratch / "huge-header");
  {
    Forger forger(header, world().key);
    checkpoint::Checkpoint state = forger.checkpoint_at(12);
    state.metadata["note"] = std::string(std::size_t{50} << 20, 'x');  // a 50 MB header
    forger.replace_checkpoint(12, state);
    forger.reseal();
  }
  const Verification huge = run_verify(header, kVerifierSeed);
  check_rejected(huge.result, "bytes a state of the task's model and optimizer can take");
}
