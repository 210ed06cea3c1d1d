#include "tests/forgery.h"

#include <cstring>
#include <optional>

#include "checkpoint/safetensors.h"
#include "common/sha256.h"
#include "common/task.h"
#include "proof/parameters.h"

namespace solver::test {

void reseal_bundle(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key) {
  auto refresh = [&](FileEntry& file) {
    file.size = std::filesystem::file_size(dir / file.path);
    file.sha256 = sha256_file_hex(dir / file.path);
  };
  manifest.task_sha256 = task_sha256(parse_task(manifest.task, dir));
  std::optional<checkpoint::Checkpoint> previous;
  for (std::size_t i = 0; i < manifest.checkpoints.size(); ++i) {
    proof::CheckpointEntry& entry = manifest.checkpoints[i];
    refresh(entry.file);
    checkpoint::Checkpoint state = checkpoint::read_safetensors(dir / entry.file.path);
    entry.update.reset();
    if (previous) entry.update = proof::parameter_distance(previous->tensors, state.tensors);
    if (i > 0 && i - 1 < manifest.segments.size()) refresh(manifest.segments[i - 1].file);
    previous = std::move(state);
  }
  rechain_and_sign(dir, manifest, key);
}

void rechain_and_sign(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key) {
  std::string chain = manifest.task_sha256;
  for (std::size_t i = 0; i < manifest.checkpoints.size(); ++i) {
    proof::CheckpointEntry& entry = manifest.checkpoints[i];
    // Checkpoint i closes segment i-1, if the forger kept it.
    const std::string segment_sha256 = i > 0 && i - 1 < manifest.segments.size() ? manifest.segments[i - 1].file.sha256 : "";
    chain = proof::chain_link(chain, entry.step, entry.file.sha256, segment_sha256);
    entry.chain = chain;
  }
  manifest.chain_root = chain;
  manifest.solver_public_key = key.public_key_hex();
  proof::write_signed_manifest(dir, manifest, key);
}

std::vector<std::byte> with_header_entry(std::span<const std::byte> bytes, const std::string& entry) {
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), sizeof length);
  const std::span<const std::byte> data = bytes.subspan(sizeof length + length);
  std::string header(reinterpret_cast<const char*>(bytes.data()) + sizeof length, length);
  header.insert(1, entry + ",");  // after the opening brace
  header.append((8 - header.size() % 8) % 8, ' ');
  length = header.size();
  std::vector<std::byte> result(sizeof length + header.size());
  std::memcpy(result.data(), &length, sizeof length);
  std::memcpy(result.data() + sizeof length, header.data(), header.size());
  result.insert(result.end(), data.begin(), data.end());
  return result;
}

}  // namespace solver::test
