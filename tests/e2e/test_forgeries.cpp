// Forged bundles are rejected with the right reason. Each forger is a program (below), not
// a hand-edited file: it starts from an honest bundle made by `solver run`, changes what a
// cheating solver would change, and (where it has the key, as a cheating solver does)
// re-hashes, recomputes the update distances and the chain, and re-signs.
#include <catch2/catch.hpp>

#include <fstream>

#include "checkpoint/safetensors.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/task.h"
#include "proof/keys.h"
#include "proof/manifest.h"
#include "tests/e2e/e2e_support.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

struct HonestBundle {
  ScratchDir dir{"forgery-source"};
  std::filesystem::path key;
  std::filesystem::path bundle;
};

// One honest bundle for every forger: 60 steps, checkpoints every 20.
const HonestBundle& honest_bundle() {
  static HonestBundle* honest = [] {
    auto* made = new HonestBundle;
    made->key = make_key(made->dir.path());
    made->bundle = made->dir / "bundle";
    const auto task = write_task(made->dir.path(), "honest", small_task("forgery-target", 60, 20));
    const CommandResult run = run_solver({"run", task.string(), "--out", made->bundle.string(), "--key", made->key.string()});
    REQUIRE(run.exit_code == 0);
    return made;
  }();
  return *honest;
}

kernels::WeightDistance parameter_distance(const checkpoint::Checkpoint& from, const checkpoint::Checkpoint& to) {
  kernels::DistanceAccumulator accumulator;
  for (const auto& tensor : to.tensors)
    if (tensor.name.starts_with("param.")) accumulator.add(from.find(tensor.name)->as_f32(), tensor.as_f32());
  return accumulator.finish();
}

// A cheating solver with its own bundle and key.
class Forger {
 public:
  explicit Forger(const std::filesystem::path& dir)
      : dir_(dir),
        manifest_(proof::manifest_from_json(read_json(dir / "manifest.json"))),
        key_(proof::SigningKey::load(honest_bundle().key)) {}

  proof::Manifest& manifest() { return manifest_; }
  std::filesystem::path path(const std::string& relative) const { return dir_ / relative; }

  checkpoint::Checkpoint checkpoint_at(size_t index) const {
    return checkpoint::read_safetensors(path(manifest_.checkpoints.at(index).file.path));
  }
  void replace_checkpoint(size_t index, const checkpoint::Checkpoint& state) {
    checkpoint::write_safetensors(path(manifest_.checkpoints.at(index).file.path), state);
  }
  std::vector<StepRecord> segment(size_t index) const {
    return proof::decode_segment(read_file(path(manifest_.segments.at(index).file.path)), "segment");
  }
  void replace_segment(size_t index, const std::vector<StepRecord>& steps) {
    const auto& entry = manifest_.segments.at(index);
    write_file_durably(path(entry.file.path), proof::encode_segment(entry.first_step, entry.last_step, steps));
  }

  // Makes every recorded hash, size, distance and chain link match the files, and signs.
  void reseal() {
    std::optional<checkpoint::Checkpoint> previous;
    std::string chain = manifest_.task_sha256;
    for (size_t i = 0; i < manifest_.checkpoints.size(); ++i) {
      auto& entry = manifest_.checkpoints[i];
      refresh(entry.file);
      const checkpoint::Checkpoint state = checkpoint::read_safetensors(path(entry.file.path));
      entry.update.reset();
      if (previous) entry.update = parameter_distance(*previous, state);
      std::string segment_sha;
      if (i > 0 && i - 1 < manifest_.segments.size()) {
        refresh(manifest_.segments[i - 1].file);
        segment_sha = manifest_.segments[i - 1].file.sha256;
      }
      chain = proof::chain_link(chain, entry.step, entry.file.sha256, segment_sha);
      entry.chain = chain;
      previous = state;
    }
    manifest_.chain_root = chain;
    proof::write_signed_manifest(dir_, manifest_, key_);
  }

 private:
  void refresh(proof::FileEntry& file) const {
    file.size = std::filesystem::file_size(path(file.path));
    file.sha256 = sha256_file_hex(path(file.path));
  }

  std::filesystem::path dir_;
  proof::Manifest manifest_;
  proof::SigningKey key_;
};

std::filesystem::path copy_of_honest_bundle(const ScratchDir& scratch) {
  const auto copy = scratch / "bundle";
  std::filesystem::copy(honest_bundle().bundle, copy, std::filesystem::copy_options::recursive);
  return copy;
}

CommandResult verify_all(const std::filesystem::path& bundle) {
  return run_solver({"verify", bundle.string(), "--segments", "all"});
}

void check_rejected(const CommandResult& result, const std::string& reason) {
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("verdict: REJECTED") != std::string::npos);
  CHECK(result.output.find(reason) != std::string::npos);
}

float& first_weight(checkpoint::Checkpoint& state) {
  for (auto& tensor : state.tensors)
    if (tensor.name.starts_with("param.")) return *reinterpret_cast<float*>(tensor.data.data());
  FAIL("no parameter tensor in the checkpoint");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("the honest bundle that the forgers start from is accepted", "[e2e][forgery]") {
  ScratchDir scratch("honest");
  CHECK(verify_all(copy_of_honest_bundle(scratch)).exit_code == 0);
}

TEST_CASE("each forged bundle is rejected with the reason", "[e2e][forgery]") {
  ScratchDir scratch("forgery");
  const auto bundle = copy_of_honest_bundle(scratch);
  Forger forger(bundle);

  SECTION("a changed weight byte, not re-signed, fails its file hash") {
    const auto file = forger.path(forger.manifest().checkpoints[2].file.path);
    std::fstream stream(file, std::ios::in | std::ios::out | std::ios::binary);
    stream.seekp(-3, std::ios::end);
    stream.put('\x7f');
    stream.close();
    check_rejected(verify_all(bundle), "sha256");
  }
  SECTION("a changed weight, re-hashed and re-signed, fails the replay") {
    checkpoint::Checkpoint state = forger.checkpoint_at(2);
    first_weight(state) += 0.01f;
    forger.replace_checkpoint(2, state);
    forger.reseal();
    check_rejected(verify_all(bundle), "steps 21-40");
  }
  SECTION("a swapped sample index fails the data-order check") {
    auto steps = forger.segment(1);
    std::swap(steps[3].indices[0], steps[7].indices[0]);
    forger.replace_segment(1, steps);
    forger.reseal();
    check_rejected(verify_all(bundle), "data order");
  }
  SECTION("a missing checkpoint breaks the checkpoint sequence") {
    auto& manifest = forger.manifest();
    manifest.checkpoints.erase(manifest.checkpoints.begin() + 2);
    manifest.segments.erase(manifest.segments.begin() + 1);
    forger.reseal();
    check_rejected(verify_all(bundle), "checkpoints");
  }
  SECTION("reordered checkpoints break the checkpoint sequence") {
    auto& manifest = forger.manifest();
    std::swap(manifest.checkpoints[1], manifest.checkpoints[2]);
    forger.reseal();
    check_rejected(verify_all(bundle), "checkpoints");
  }
  SECTION("a changed loss does not match the replay") {
    auto steps = forger.segment(2);
    steps[4].loss += 0.01f;
    forger.replace_segment(2, steps);
    forger.reseal();
    check_rejected(verify_all(bundle), "loss");
  }
  SECTION("a changed hyperparameter does not match the recorded learning rates") {
    auto& manifest = forger.manifest();
    manifest.task["training"]["optimizer"]["lr"] = 0.004;
    manifest.task_sha256 = task_sha256(parse_task(manifest.task, "/"));
    forger.reseal();
    check_rejected(verify_all(bundle), "learning rate");
  }
  SECTION("a bad signature") {
    std::string signature = read_file(bundle / "manifest.sig");
    signature[0] = signature[0] == '0' ? '1' : '0';
    write_text(bundle / "manifest.sig", signature);
    check_rejected(verify_all(bundle), "signature");
  }
  SECTION("a checkpoint replaced by the interpolation of its neighbours fails the replay") {
    const checkpoint::Checkpoint before = forger.checkpoint_at(1);
    const checkpoint::Checkpoint after = forger.checkpoint_at(3);
    checkpoint::Checkpoint middle = forger.checkpoint_at(2);
    for (auto& tensor : middle.tensors) {
      if (!tensor.name.starts_with("param.")) continue;
      const auto from = before.find(tensor.name)->as_f32();
      const auto to = after.find(tensor.name)->as_f32();
      auto* values = reinterpret_cast<float*>(tensor.data.data());
      for (size_t i = 0; i < from.size(); ++i) values[i] = 0.5f * (from[i] + to[i]);
    }
    forger.replace_checkpoint(2, middle);
    forger.reseal();
    check_rejected(verify_all(bundle), "steps 21-40");
  }
  SECTION("a bundle signed by another solver is rejected when the verifier expects this solver's key") {
    const CommandResult other = run_solver({"keygen", "--key", (scratch / "other.key").string()});
    REQUIRE(other.exit_code == 0);
    const std::string other_public = other.output.substr(other.output.find("public key: ") + 12, 64);
    check_rejected(run_solver({"verify", bundle.string(), "--expect-key", other_public}), "expected " + other_public);
  }
}
