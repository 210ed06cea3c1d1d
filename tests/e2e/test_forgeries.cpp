// Forged bundles are rejected with the right reason. Each forger is a program (below), not
// a hand-edited file: it starts from an honest bundle made by `solver run`, changes what a
// cheating solver would change, and (where it has the key, as a cheating solver does)
// re-hashes, recomputes the update distances and the chain, and re-signs (tests/e2e/forger.h).
// The published attacks on proof of learning are in test_attacks.cpp.
#include <catch2/catch.hpp>

#include <fstream>

#include "checkpoint/safetensors.h"
#include "common/files.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;

namespace {

CommandResult verify_all(const std::filesystem::path& bundle) {
  return run_solver({"verify", bundle.string(), "--segments", "all"});
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
  Forger forger(bundle, honest_bundle().key);

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
    interpolate_parameters(middle, before, after, 0.5f);
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
