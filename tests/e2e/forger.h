// What a cheating solver can do to a bundle without training, shared by the forgery and
// attack tests: read and rewrite checkpoints and segments, then reseal (re-hash every file,
// recompute the update distances and the hash chain, and sign with a key it holds). Only the
// checks that do not trust the manifest (seeded data order, schedule, initialisation, replay)
// can then catch the forgery. Also: running `solver verify` and reading what it replayed.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/keys.h"
#include "proof/manifest.h"
#include "tests/test_support.h"

namespace solver::test {

// One honest `solver run` bundle for forgers to start from (60 steps of small_task, a checkpoint
// every 20), trained once per test process.
struct HonestBundle {
  ScratchDir dir{"forgery-source"};
  std::filesystem::path key;
  std::filesystem::path task;
  std::filesystem::path bundle;
};
const HonestBundle& honest_bundle();
// A copy of it in scratch/bundle.
std::filesystem::path copy_of_honest_bundle(const ScratchDir& scratch);

// Copies the bundle folder `from` to a new folder `to` and returns `to`.
std::filesystem::path copy_bundle(const std::filesystem::path& from, const std::filesystem::path& to);

// Sets every parameter of `state` to from + t * (to - from), leaving other tensors (optimizer
// state, buffers) and metadata as they are.
void interpolate_parameters(checkpoint::Checkpoint& state, const checkpoint::Checkpoint& from, const checkpoint::Checkpoint& to,
                            float t);

class Forger {
 public:
  // Edits the bundle in `dir`; reseal() signs it with the key at `key`, which becomes the
  // manifest's solver_public_key.
  Forger(const std::filesystem::path& dir, const std::filesystem::path& key);

  proof::Manifest& manifest() { return manifest_; }
  std::filesystem::path path(const std::string& relative) const { return dir_ / relative; }

  // Checkpoint `index` in manifest order (0 is step 0) and segment `index` (0 ends at checkpoint 1).
  checkpoint::Checkpoint checkpoint_at(std::size_t index) const;
  void replace_checkpoint(std::size_t index, const checkpoint::Checkpoint& state);
  std::vector<StepRecord> segment(std::size_t index) const;
  void replace_segment(std::size_t index, const std::vector<StepRecord>& steps);

  // Makes every recorded hash, size, distance, task hash and chain link match the files, and signs.
  void reseal();

 private:
  std::filesystem::path dir_;
  proof::Manifest manifest_;
  SigningKey key_;
};

// A `solver verify` run and how many segments it replayed, from its summary line.
struct Verification {
  CommandResult result;
  int segments_replayed = -1;  // -1 when the output has no summary line
  int segments_total = -1;
};
Verification run_verify(const std::filesystem::path& bundle, const std::vector<std::string>& options = {});

// Checks exit status 1, "verdict: REJECTED" and `reason` among the failures.
void check_rejected(const CommandResult& result, const std::string& reason);

}  // namespace solver::test
