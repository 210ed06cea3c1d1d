#include "tests/e2e/forger.h"

#include <catch2/catch.hpp>

#include <cstdio>

#include "common/files.h"
#include "tests/e2e/e2e_support.h"
#include "tests/forgery.h"

namespace solver::test {

std::filesystem::path copy_bundle(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
  return to;
}

void interpolate_parameters(checkpoint::Checkpoint& state, const checkpoint::Checkpoint& from, const checkpoint::Checkpoint& to,
                            float t) {
  for (auto& tensor : state.tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    const auto start = from.find(tensor.name)->as_f32();
    const auto end = to.find(tensor.name)->as_f32();
    auto* values = reinterpret_cast<float*>(tensor.data.data());
    for (std::size_t i = 0; i < start.size(); ++i) values[i] = start[i] + t * (end[i] - start[i]);
  }
}

Forger::Forger(const std::filesystem::path& dir, const std::filesystem::path& key)
    : dir_(dir), manifest_(proof::manifest_from_json(read_json(dir / "manifest.json"))), key_(SigningKey::load(key)) {}

checkpoint::Checkpoint Forger::checkpoint_at(std::size_t index) const {
  return checkpoint::read_safetensors(path(manifest_.checkpoints.at(index).file.path));
}

void Forger::replace_checkpoint(std::size_t index, const checkpoint::Checkpoint& state) {
  checkpoint::write_safetensors(path(manifest_.checkpoints.at(index).file.path), state);
}

std::vector<StepRecord> Forger::segment(std::size_t index) const {
  return proof::decode_segment(read_file(path(manifest_.segments.at(index).file.path)), "segment");
}

void Forger::replace_segment(std::size_t index, const std::vector<StepRecord>& steps) {
  const auto& entry = manifest_.segments.at(index);
  write_file_durably(path(entry.file.path), proof::encode_segment(entry.first_step, entry.last_step, steps));
}

void Forger::reseal() { reseal_bundle(dir_, manifest_, key_); }

Verification run_verify(const std::filesystem::path& bundle, const std::vector<std::string>& options) {
  std::vector<std::string> arguments{"verify", bundle.string()};
  arguments.insert(arguments.end(), options.begin(), options.end());
  Verification verification{run_solver(arguments)};
  const std::string& output = verification.result.output;
  const std::size_t summary = output.find("replayed ");
  if (summary != std::string::npos)
    std::sscanf(output.c_str() + summary, "replayed %d of %d segments", &verification.segments_replayed,
                &verification.segments_total);
  return verification;
}

const HonestBundle& honest_bundle() {
  static HonestBundle* honest = [] {
    auto* made = new HonestBundle;
    made->key = make_key(made->dir.path());
    made->bundle = made->dir / "bundle";
    made->task = write_task(made->dir.path(), "honest", small_task("forgery-target", 60, 20));
    const CommandResult run =
        run_solver({"run", made->task.string(), "--out", made->bundle.string(), "--key", made->key.string()});
    REQUIRE(run.exit_code == 0);
    return made;
  }();
  return *honest;
}

std::filesystem::path copy_of_honest_bundle(const ScratchDir& scratch) {
  return copy_bundle(honest_bundle().bundle, scratch / "bundle");
}

void check_rejected(const CommandResult& result, const std::string& reason) {
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("verdict: REJECTED") != std::string::npos);
  CHECK(result.output.find(reason) != std::string::npos);
}

}  // namespace solver::test
