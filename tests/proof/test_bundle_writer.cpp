// BundleWriter on toy runs: every checkpoint and segment lands with its hash and update
// distance, a crashed run resumes from its journal to the same bundle as an uninterrupted
// one, the journal grows by one line per checkpoint, a torn last line is dropped while damage
// elsewhere is named, and misuse (out-of-order steps, a folder holding another bundle) is refused.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string_view>

#include "checkpoint/safetensors.h"
#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "kernels/distance.h"
#include "proof/bundle_writer.h"
#include "common/keys.h"
#include "proof/manifest.h"
#include "tests/proof/toy_training.h"
#include "tests/test_support.h"

namespace solver::proof {
namespace {

using Catch::Matchers::Contains;
using nlohmann::json;
namespace fs = std::filesystem;


BundlePlan toy_plan(const Task& task) {
  return BundlePlan{test::toy_runtime(), test::kToySamples, test::kToySamples / 8, total_steps(task, test::kToySamples)};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t end = text.find('\n', begin);
    REQUIRE(end != std::string::npos);
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

std::string text_of(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

TEST_CASE("A toy run's bundle lists every checkpoint and segment with hashes, distances and chain", "[proof]") {
  test::ScratchDir scratch("bundle");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  const Manifest manifest = *test::write_toy_bundle(scratch.path(), task, key);

  CHECK(fs::exists(scratch / "manifest.json"));
  CHECK(fs::exists(scratch / "manifest.sig"));
  CHECK_FALSE(fs::exists(scratch / "journal.jsonl"));
  CHECK(manifest.total_steps == 23);
  CHECK(manifest.task_sha256 == task_sha256(task));
  CHECK(manifest.solver_public_key == key.public_key_hex());
  CHECK(manifest.model_sha256 == sha256_hex(canonical_json(task_to_json(task).at("model"))));
  CHECK_FALSE(manifest.model_file);

  const std::vector<std::int64_t> expected_steps = {0, 5, 10, 15, 20, 23};
  REQUIRE(manifest.checkpoints.size() == expected_steps.size());
  REQUIRE(manifest.segments.size() == expected_steps.size() - 1);
  std::string chain = manifest.task_sha256;
  std::optional<checkpoint::Checkpoint> previous;
  for (std::size_t i = 0; i < expected_steps.size(); ++i) {
    const CheckpointEntry& entry = manifest.checkpoints[i];
    INFO("checkpoint " << entry.step);
    CHECK(entry.step == expected_steps[i]);
    CHECK(entry.file.path == "ckpt/step_" + std::to_string(entry.step) + ".safetensors");
    CHECK(entry.file.size == fs::file_size(scratch / entry.file.path));
    CHECK(entry.file.sha256 == sha256_file_hex(scratch / entry.file.path));
    std::string segment_sha256;
    if (i > 0) {
      const SegmentEntry& segment = manifest.segments[i - 1];
      CHECK(segment.first_step == expected_steps[i - 1] + 1);
      CHECK(segment.last_step == entry.step);
      CHECK(segment.file.sha256 == sha256_file_hex(scratch / segment.file.path));
      CHECK(decode_segment(read_file(scratch / segment.file.path), segment.file.path).size() ==
            static_cast<std::size_t>(segment.last_step - segment.first_step + 1));
      segment_sha256 = segment.file.sha256;
    }
    chain = chain_link(chain, entry.step, entry.file.sha256, segment_sha256);
    CHECK(entry.chain == chain);

    checkpoint::Checkpoint current = checkpoint::read_safetensors(scratch / entry.file.path);
    REQUIRE(entry.update.has_value() == (i > 0));
    if (previous) {
      const kernels::WeightDistance expected =
          kernels::weight_distance_cpu(previous->find("param.w")->as_f32(), current.find("param.w")->as_f32());
      CHECK(entry.update->l2 == expected.l2);
      CHECK(entry.update->l2 > 0.0);
    }
    previous = std::move(current);
  }
  CHECK(manifest.chain_root == chain);
}

TEST_CASE("A crashed run resumes from its journal to the same bundle as an uninterrupted run", "[proof]") {
  test::ScratchDir whole("bundle-whole");
  test::ScratchDir crashed("bundle-crashed");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  const Manifest uninterrupted = *test::write_toy_bundle(whole.path(), task, key);

  // Crash after step 12: checkpoints 0, 5 and 10 are journaled, steps 11-12 are lost.
  REQUIRE_FALSE(test::write_toy_bundle(crashed.path(), task, key, {.crash_after_step = 12}));
  CHECK(fs::exists(crashed / "journal.jsonl"));
  CHECK_FALSE(fs::exists(crashed / "manifest.json"));
  // Debris of a checkpoint that was being written when the machine died.
  test::write_text(crashed / "ckpt/step_15.safetensors.tmp", "half a checkpoint");
  test::write_text(crashed / "ckpt/step_15.safetensors", "a checkpoint the journal never listed");
  test::write_text(crashed / "segments/steps_11-15.json", "{}");
  test::write_text(crashed / "journal.jsonl.tmp", "{");

  CHECK_THROWS_WITH(test::write_toy_bundle(crashed.path(), task, key),
                    Contains("already holds a bundle; pass --resume or choose another --out"));

  {
    BundleWriter writer(crashed.path(), task, key, toy_plan(task), true);
    const auto point = writer.resume_point();
    REQUIRE(point);
    CHECK(point->first == 10);
    CHECK_FALSE(fs::exists(crashed / "ckpt/step_15.safetensors.tmp"));
    CHECK_FALSE(fs::exists(crashed / "ckpt/step_15.safetensors"));
    CHECK_FALSE(fs::exists(crashed / "segments/steps_11-15.json"));
    CHECK_FALSE(fs::exists(crashed / "journal.jsonl.tmp"));
    CHECK(fs::exists(crashed / "ckpt/step_10.safetensors"));
  }  // destroyed without finishing: a second crash right after resuming

  test::ToyRun resume_run;
  resume_run.resume = true;
  const Manifest resumed = *test::write_toy_bundle(crashed.path(), task, key, resume_run);
  CHECK(resumed.chain_root == uninterrupted.chain_root);
  CHECK(canonical_json(manifest_to_json(resumed)) == canonical_json(manifest_to_json(uninterrupted)));
  CHECK(read_file(crashed / "manifest.json") == read_file(whole / "manifest.json"));
  CHECK_FALSE(fs::exists(crashed / "journal.jsonl"));
}

TEST_CASE("Resuming needs the journal of the same task and an intact last checkpoint", "[proof]") {
  test::ScratchDir scratch("bundle-resume");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();

  CHECK_THROWS_WITH(BundleWriter(scratch / "empty", task, key, toy_plan(task), true),
                    Contains("has no journal.jsonl (no interrupted run was recorded there)"));

  REQUIRE_FALSE(test::write_toy_bundle(scratch.path(), task, key, {.crash_after_step = 7}));
  const Task other = test::toy_task(8);
  CHECK_THROWS_WITH(BundleWriter(scratch.path(), other, key, toy_plan(other), true),
                    Contains("belongs to task " + task_sha256(task)) && Contains("not to this task " + task_sha256(other)));
  CHECK(test::error_kind_of([&] { BundleWriter(scratch.path(), other, key, toy_plan(other), true); }) == ErrorKind::Input);

  BundlePlan other_threads = toy_plan(task);
  other_threads.runtime.threads = 4;
  CHECK_THROWS_WITH(BundleWriter(scratch.path(), task, key, other_threads, true), Contains("same runtime"));

  // Flip one byte of checkpoint 5's data, keeping its size: the journaled hash catches it.
  std::string bytes = read_file(scratch / "ckpt/step_5.safetensors");
  bytes.back() = static_cast<char>(bytes.back() ^ 1);
  write_file_durably(scratch / "ckpt/step_5.safetensors", bytes);
  BundleWriter writer(scratch.path(), task, key, toy_plan(task), true);
  CHECK_THROWS_WITH(writer.resume_point(), Contains("step_5.safetensors has sha256") && Contains("the journal recorded"));
}

TEST_CASE("Each checkpoint appends one line to the journal and rewrites none before it", "[proof]") {
  test::ScratchDir scratch("bundle-journal-lines");
  constexpr std::int64_t kSteps = 50;  // a checkpoint after every step
  Task task = test::toy_task();
  task.training.steps = kSteps;
  task.checkpoint_every = 1;
  const SigningKey key = SigningKey::generate();
  BundleWriter writer(scratch.path(), task, key, toy_plan(task), false);
  const fs::path journal = scratch / "journal.jsonl";
  std::string before = read_file(journal);
  REQUIRE(lines_of(before).size() == 1);  // the header
  checkpoint::Checkpoint state = test::toy_initial_state(task.seed);
  std::size_t longest_line = 0;
  for (std::int64_t step = 0; step <= kSteps; ++step) {
    if (step > 0) {
      const std::vector<std::uint32_t> batch = {static_cast<std::uint32_t>(step % 64), 3};
      writer.record_step(StepRecord{step, batch, test::toy_step(state, batch, 0.1), 0.1});
    }
    writer.add_checkpoint(step, state, 0.1 * static_cast<double>(step));
    writer.flush();
    const std::string after = read_file(journal);
    INFO("checkpoint " << step);
    REQUIRE(after.starts_with(before));
    const std::string added = after.substr(before.size());
    REQUIRE(lines_of(added).size() == 1);
    longest_line = std::max(longest_line, added.size());
    before = after;
  }
  // So the journal's bytes grow linearly: a bounded line per checkpoint, never the whole list again.
  CHECK(longest_line < 1024);
  CHECK(fs::file_size(journal) <= lines_of(before).front().size() + 1 + (kSteps + 1) * longest_line);
}

TEST_CASE("A torn last journal line was never journaled: the run resumes from the checkpoint before it", "[proof]") {
  test::ScratchDir whole("bundle-torn-whole");
  test::ScratchDir crashed("bundle-torn");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  REQUIRE(test::write_toy_bundle(whole.path(), task, key));

  // Crash after step 17: the journal holds the header and checkpoints 0, 5, 10 and 15.
  REQUIRE_FALSE(test::write_toy_bundle(crashed.path(), task, key, {.crash_after_step = 17}));
  const fs::path journal = crashed / "journal.jsonl";
  std::vector<std::string> lines = lines_of(read_file(journal));
  REQUIRE(lines.size() == 5);
  const std::string last = lines.back();
  lines.pop_back();
  const std::string intact = text_of(lines);
  SECTION("cut short: the machine died mid-append") {
    test::write_text(journal, intact + last.substr(0, last.size() / 2));
  }
  SECTION("zeros: the file grew before the line's bytes reached the disk") {
    test::write_text(journal, intact + std::string(last.size(), '\0') + "\n");
  }
  SECTION("complete but for its newline") {
    test::write_text(journal, intact + last);
  }

  {
    BundleWriter writer(crashed.path(), task, key, toy_plan(task), true);
    CHECK(read_file(journal) == intact);  // cut away before anything can be appended after it
    const auto point = writer.resume_point();
    REQUIRE(point);
    CHECK(point->first == 10);
    // The training time of the crashed run, up to its last journaled checkpoint, carries over.
    const double journaled_seconds = json::parse(lines.back())["train_seconds"].get<double>();
    CHECK(journaled_seconds > 0.0);
    CHECK(writer.earlier_train_seconds() == journaled_seconds);
    CHECK_FALSE(fs::exists(crashed / "ckpt/step_15.safetensors"));
    CHECK_FALSE(fs::exists(crashed / "segments/steps_11-15.json"));
  }

  test::ToyRun resume_run;
  resume_run.resume = true;
  REQUIRE(test::write_toy_bundle(crashed.path(), task, key, resume_run));
  CHECK(read_file(crashed / "manifest.json") == read_file(whole / "manifest.json"));
  CHECK_FALSE(fs::exists(journal));
}

TEST_CASE("A damaged journal line before the last is an input error naming the file and line", "[proof]") {
  test::ScratchDir scratch("bundle-damaged");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  REQUIRE_FALSE(test::write_toy_bundle(scratch.path(), task, key, {.crash_after_step = 17}));
  const fs::path journal = scratch / "journal.jsonl";
  std::vector<std::string> lines = lines_of(read_file(journal));  // header, checkpoints 0, 5, 10, 15
  REQUIRE(lines.size() == 5);

  std::string expected;
  SECTION("a line that is not JSON") {
    lines[2].resize(lines[2].size() / 2);
    expected = "journal.jsonl line 3: not valid JSON";
  }
  SECTION("a changed hash: the chain no longer links") {
    const std::size_t hash = lines[3].find("\"sha256\":\"") + 10;  // checkpoint 5's file (keys are sorted)
    lines[3][hash] = lines[3][hash] == '0' ? '1' : '0';
    expected = "journal.jsonl line 4: checkpoint.chain: expected";
  }
  SECTION("a lost line: checkpoint 10 does not follow checkpoint 0") {
    lines.erase(lines.begin() + 2);
    expected = "journal.jsonl line 3: checkpoint: expected the checkpoint after step 0";
  }
  SECTION("a header of another format") {
    const std::size_t schema = lines[0].find("solver.pol-journal/2");
    REQUIRE(schema != std::string::npos);
    lines[0].replace(schema, 20, "solver.pol-journal/9");
    expected = "journal.jsonl line 1: header.schema: expected \"solver.pol-journal/2\"";
  }
  const std::string damaged = text_of(lines);
  test::write_text(journal, damaged);
  CHECK_THROWS_WITH(BundleWriter(scratch.path(), task, key, toy_plan(task), true),
                    Contains("cannot resume: " + journal.string()) && Contains(expected));
  CHECK(test::error_kind_of([&] { BundleWriter(scratch.path(), task, key, toy_plan(task), true); }) == ErrorKind::Input);
  CHECK(read_file(journal) == damaged);  // left for a person to look at
}

TEST_CASE("A journal.json of an earlier solver is read once, rewritten as journal.jsonl", "[proof]") {
  test::ScratchDir whole("bundle-v1-whole");
  test::ScratchDir crashed("bundle-v1");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  const Manifest uninterrupted = *test::write_toy_bundle(whole.path(), task, key);

  // Crashed after step 12 (checkpoints 0, 5, 10), as an earlier solver journaled it: the manifest so far.
  REQUIRE_FALSE(test::write_toy_bundle(crashed.path(), task, key, {.crash_after_step = 12}));
  const std::string journal_lines = read_file(crashed / "journal.jsonl");
  fs::remove(crashed / "journal.jsonl");
  Manifest so_far = uninterrupted;
  so_far.checkpoints.resize(3);
  so_far.segments.resize(2);
  so_far.chain_root = so_far.checkpoints.back().chain;
  so_far.outcome = TrainOutcome{};
  test::write_text(crashed / "journal.json",
                   canonical_json({{"schema", "solver.pol-journal/1"}, {"manifest", manifest_to_json(so_far)}}));

  CHECK_THROWS_WITH(test::write_toy_bundle(crashed.path(), task, key), Contains("already holds a bundle"));
  {
    BundleWriter writer(crashed.path(), task, key, toy_plan(task), true);
    CHECK_FALSE(fs::exists(crashed / "journal.json"));
    // The same lines, but for the training time, which version 1 did not record.
    std::string expected;
    for (const std::string& line : lines_of(journal_lines)) {
      json parsed = json::parse(line);
      if (parsed.contains("train_seconds")) parsed["train_seconds"] = 0.0;
      expected += canonical_json(parsed) + "\n";
    }
    CHECK(read_file(crashed / "journal.jsonl") == expected);
    CHECK(writer.earlier_train_seconds() == 0.0);
  }
  test::ToyRun resume_run;
  resume_run.resume = true;
  REQUIRE(test::write_toy_bundle(crashed.path(), task, key, resume_run));
  CHECK(read_file(crashed / "manifest.json") == read_file(whole / "manifest.json"));
}

TEST_CASE("Checkpoints and steps out of order are refused as bugs", "[proof]") {
  test::ScratchDir scratch("bundle-order");
  const Task task = test::toy_task();
  const SigningKey key = SigningKey::generate();
  BundleWriter writer(scratch.path(), task, key, toy_plan(task), false);
  const checkpoint::Checkpoint state = test::toy_initial_state(task.seed);

  CHECK_THROWS_WITH(writer.add_checkpoint(5, state, 0.0), Contains("the first must be step 0"));
  CHECK_THROWS_WITH(writer.record_step(StepRecord{2, {}, 0.0f, 0.1}), Contains("expected step 1"));
  writer.add_checkpoint(0, state, 0.0);
  CHECK_THROWS_WITH(writer.add_checkpoint(0, state, 0.0), Contains("out of order"));
  for (std::int64_t step = 1; step <= 4; ++step) writer.record_step(StepRecord{step, {1}, 0.5f, 0.1});
  CHECK_THROWS_WITH(writer.add_checkpoint(5, state, 0.0), Contains("the last recorded step is 4"));
  CHECK(test::error_kind_of([&] { writer.add_checkpoint(5, state, 0.0); }) == ErrorKind::Internal);
  CHECK_THROWS_WITH(writer.finish(TrainOutcome{}), Contains("steps 1-4 were recorded after the last checkpoint"));
}

}  // namespace
}  // namespace solver::proof
