#include "tests/forgery.h"

#include <optional>

#include "checkpoint/safetensors.h"
#include "common/sha256.h"
#include "common/task.h"
#include "proof/parameters.h"

namespace solver::test {

void reseal_bundle(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key) {
  auto refresh = [&](proof::FileEntry& file) {
    file.size = std::filesystem::file_size(dir / file.path);
    file.sha256 = sha256_file_hex(dir / file.path);
  };
  manifest.task_sha256 = task_sha256(parse_task(manifest.task, dir));
  std::string chain = manifest.task_sha256;
  std::optional<checkpoint::Checkpoint> previous;
  for (std::size_t i = 0; i < manifest.checkpoints.size(); ++i) {
    proof::CheckpointEntry& entry = manifest.checkpoints[i];
    refresh(entry.file);
    checkpoint::Checkpoint state = checkpoint::read_safetensors(dir / entry.file.path);
    entry.update.reset();
    if (previous) entry.update = proof::parameter_distance(previous->tensors, state.tensors);
    std::string segment_sha256;  // checkpoint i closes segment i-1, if the forger kept it
    if (i > 0 && i - 1 < manifest.segments.size()) {
      refresh(manifest.segments[i - 1].file);
      segment_sha256 = manifest.segments[i - 1].file.sha256;
    }
    chain = proof::chain_link(chain, entry.step, entry.file.sha256, segment_sha256);
    entry.chain = chain;
    previous = std::move(state);
  }
  manifest.chain_root = chain;
  manifest.solver_public_key = key.public_key_hex();
  proof::write_signed_manifest(dir, manifest, key);
}

}  // namespace solver::test
