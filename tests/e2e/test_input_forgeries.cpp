// Forgeries aimed at how a verifier reads a bundle rather than at what the training claims:
// a checkpoint header that names a tensor twice, bundle files that are symlinks (to a copy, or
// to a local file whose hash and size the verdict would print), a manifest that lists one file
// 100,000 times, and a bundle judged without the task it should be for. Each forger starts from
// an honest `solver run` bundle and re-signs with the solver's key, as a cheating solver can;
// each forgery is rejected under `solver verify`'s default options, naming the check.
#include <catch2/catch.hpp>

#include <cstring>

#include "common/files.h"
#include "common/keys.h"
#include "common/sha256.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"
#include "tests/forgery.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

// A file of `size` bytes that no bundle holds, outside the bundle.
std::string write_local_file(const std::filesystem::path& path, std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>('a' + (i * 7919) % 26);
  write_text(path, bytes);
  return bytes;
}

}  // namespace

TEST_CASE("input forgery: a checkpoint whose header names a tensor twice is rejected naming the key", "[e2e][forgery]") {
  ScratchDir scratch("input-forgery-duplicate");
  const auto bundle = copy_of_honest_bundle(scratch);
  Forger forger(bundle, honest_bundle().key);
  proof::Manifest& manifest = forger.manifest();
  const std::filesystem::path path = forger.path(manifest.checkpoints[1].file.path);

  // The first parameter named again, first, as raw bytes over the same range: a parser that
  // keeps the last value of a repeated key reads the honest checkpoint.
  const std::string honest = read_file(path);
  std::uint64_t length = 0;
  std::memcpy(&length, honest.data(), sizeof length);
  const json header = json::parse(honest.substr(sizeof length, length));
  std::string name;
  for (const auto& [key, value] : header.items())
    if (key.starts_with("param.")) {
      name = key;
      break;
    }
  REQUIRE_FALSE(name.empty());
  json decoy = header.at(name);
  decoy["dtype"] = "U8";
  decoy["shape"] = json::array({decoy["data_offsets"][1].get<std::int64_t>() - decoy["data_offsets"][0].get<std::int64_t>()});
  const std::vector<std::byte> forged =
      with_header_entry(std::as_bytes(std::span(honest.data(), honest.size())), json(name).dump() + ":" + decoy.dump());
  write_file_durably(path, forged);
  manifest.checkpoints[1].file.size = forged.size();
  manifest.checkpoints[1].file.sha256 = sha256_hex(forged);
  rechain_and_sign(bundle, manifest, SigningKey::load(honest_bundle().key));

  check_rejected(run_verify(bundle).result, "key \"" + name + "\" appears twice in one object");
}

TEST_CASE("input forgery: a checkpoint that is a symlink to a copy outside the bundle is rejected naming it", "[e2e][forgery]") {
  ScratchDir scratch("input-forgery-symlink");
  const auto bundle = copy_of_honest_bundle(scratch);
  const std::filesystem::path checkpoint = bundle / "ckpt/step_20.safetensors";
  std::filesystem::copy_file(checkpoint, scratch / "step_20.safetensors");
  std::filesystem::remove(checkpoint);
  std::filesystem::create_symlink(scratch / "step_20.safetensors", checkpoint);

  check_rejected(run_verify(bundle).result,
                 "ckpt/step_20.safetensors: is a symlink (bundle files must be regular files inside the bundle)");
}

TEST_CASE("input forgery: a checkpoint that is a symlink to a local file is rejected, and the verdict tells nothing of that file", "[e2e][forgery]") {
  ScratchDir scratch("input-forgery-local-file");
  const auto bundle = copy_of_honest_bundle(scratch);
  const std::filesystem::path checkpoint = bundle / "ckpt/step_40.safetensors";
  // Another size, which a size check would print; the same size, which a hash check would reach.
  const std::size_t size = GENERATE_COPY(std::size_t{123457}, static_cast<std::size_t>(std::filesystem::file_size(checkpoint)));
  const std::string local = write_local_file(scratch / "local.txt", size);
  std::filesystem::remove(checkpoint);
  std::filesystem::create_symlink(scratch / "local.txt", checkpoint);

  for (const std::vector<std::string>& options : {std::vector<std::string>{}, std::vector<std::string>{"--json"}}) {
    const CommandResult verify = run_verify(bundle, options).result;
    INFO(verify.output);
    CHECK(verify.exit_code == 1);
    CHECK(verify.output.find("ckpt/step_40.safetensors: is a symlink") != std::string::npos);
    CHECK(verify.output.find(sha256_hex(local)) == std::string::npos);
    CHECK(verify.output.find("file " + std::to_string(size)) == std::string::npos);
    if (size == 123457) CHECK(verify.output.find("123457") == std::string::npos);
  }
}

TEST_CASE("input forgery: a manifest of 100,000 checkpoints naming one file is rejected by the sequence, hashing nothing", "[e2e][forgery]") {
  ScratchDir scratch("input-forgery-long-manifest");
  const auto bundle = copy_of_honest_bundle(scratch);
  Forger forger(bundle, honest_bundle().key);
  proof::Manifest& manifest = forger.manifest();
  // Each entry records a hash the file does not have: hashing any of them would add a mismatch.
  proof::CheckpointEntry repeated = manifest.checkpoints.front();
  repeated.file.sha256 = sha256_hex("not step 0");
  manifest.checkpoints.assign(100'000, repeated);
  rechain_and_sign(bundle, manifest, SigningKey::load(honest_bundle().key));
  REQUIRE(std::filesystem::file_size(bundle / "manifest.json") > 10'000'000);

  const CommandResult verify = run_verify(bundle).result;
  check_rejected(verify, "checkpoints: expected step 20 after 0, found 0 (missing or reordered)");
  CHECK(verify.output.find("mismatch") == std::string::npos);
}

TEST_CASE("input forgery: verify without --task says it checked self-consistency only, with --task it does not", "[e2e][forgery]") {
  ScratchDir scratch("input-forgery-no-task");
  const auto bundle = copy_of_honest_bundle(scratch);
  const std::string self_consistent =
      "verdict: ACCEPTED as self-consistent only: no --task was given, so the bundle's own task was trusted; pass --task to "
      "check it is the task you expect";

  const CommandResult without = run_verify(bundle).result;
  CHECK(without.exit_code == 0);
  CHECK(without.output.find(self_consistent) != std::string::npos);
  const CommandResult as_json = run_verify(bundle, {"--json"}).result;
  CHECK(json::parse(as_json.output.substr(as_json.output.find('{'))).at("task_checked") == false);

  const CommandResult with = run_verify(bundle, {"--task", honest_bundle().task.string()}).result;
  CHECK(with.exit_code == 0);
  CHECK(with.output.find("verdict: ACCEPTED\n") != std::string::npos);
  CHECK(with.output.find("self-consistent") == std::string::npos);

  // A task whose hash differs is what --task catches, and what the bundle alone cannot show.
  json other = read_json(honest_bundle().task);
  other["seed"] = other["seed"].get<std::uint64_t>() + 1;
  const std::filesystem::path other_task = write_task(scratch.path(), "other", other);
  check_rejected(run_verify(bundle, {"--task", other_task.string()}).result, "task: the bundle is for task ");
}
