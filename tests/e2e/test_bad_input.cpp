// Bad input gets a clear message naming what was wrong and exit status 2 (64 for usage,
// 78 for configuration), never a crash.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "common/files.h"
#include "common/sha256.h"
#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

namespace {

void check_fails(const CommandResult& result, int exit_code, const std::string& message) {
  CHECK(result.exit_code == exit_code);
  CHECK(result.output.find(message) != std::string::npos);
}

// Exports a model of tests/python/export_checked_models.py into dir/model.pt.
std::filesystem::path export_checked_model(const std::filesystem::path& dir, const std::string& kind) {
  const auto model = dir / "model.pt";
  const CommandResult exported = run_command(
      {system_python(), (source_dir() / "tests/python/export_checked_models.py").string(), kind, model.string()});
  INFO(exported.output);
  REQUIRE(exported.exit_code == 0);
  return model;
}

json torchscript_model(const std::filesystem::path& model) {
  return {{"kind", "torchscript"}, {"file", {{"location", model.string()}, {"sha256", solver::sha256_file_hex(model)}}}};
}

}  // namespace

TEST_CASE("solver run rejects malformed and inconsistent tasks with exit status 2 and the reason", "[e2e]") {
  ScratchDir dir("bad-task");
  const auto key = make_key(dir.path());
  auto run = [&](const std::filesystem::path& task) {
    return run_solver({"run", task.string(), "--out", (dir / "out").string(), "--key", key.string()});
  };

  SECTION("malformed JSON") {
    const auto path = dir / "broken.json";
    write_text(path, "{\"id\": \"x\", ");
    check_fails(run(path), 2, "not valid JSON");
  }
  SECTION("a dataset file whose sha256 does not match") {
    json task = small_task("bad-hash", 10, 5);
    task["dataset"]["train_labels"]["sha256"] = std::string(64, 'a');
    check_fails(run(write_task(dir.path(), "t", task)), 2, "sha256 mismatch");
  }
  SECTION("a missing dataset file") {
    json task = small_task("missing", 10, 5);
    task["dataset"]["test_images"]["location"] = (dir / "nowhere.gz").string();
    check_fails(run(write_task(dir.path(), "t", task)), 2, "does not exist");
  }
  SECTION("an unknown model") {
    json task = small_task("unknown-model", 10, 5, {{"kind", "resnet9000"}});
    check_fails(run(write_task(dir.path(), "t", task)), 2, "unknown model");
  }
  SECTION("a misspelt field") {
    json task = small_task("typo", 10, 5);
    task["training"]["learning_rate"] = 0.1;
    check_fails(run(write_task(dir.path(), "t", task)), 2, "task.training.learning_rate: unknown field");
  }
  SECTION("a task longer than its step budget") {
    json task = small_task("too-long", 500, 50);
    task["budget"] = {{"max_steps", 100}};
    check_fails(run(write_task(dir.path(), "t", task)), 2, "max_steps");
  }
  SECTION("a run that exceeds its wall-clock budget keeps its checkpoints") {
    json task = small_task("too-slow", 100000, 50);
    task["budget"] = {{"max_wall_seconds", 1.5}};
    check_fails(run(write_task(dir.path(), "t", task)), 2, "budget");
    CHECK(std::filesystem::exists(dir / "out" / "ckpt" / "step_50.safetensors"));
    CHECK(std::filesystem::exists(dir / "out" / "journal.jsonl"));
  }
  SECTION("a TorchScript file that is not a model") {
    const auto fake = dir / "fake.pt";
    write_text(fake, "not a zip archive");
    json task = small_task("fake-model", 10, 5,
                           {{"kind", "torchscript"}, {"file", {{"location", fake.string()}, {"sha256", solver::sha256_file_hex(fake)}}}});
    check_fails(run(write_task(dir.path(), "t", task)), 2, "fake.pt");
  }
  SECTION("a TorchScript model that reads a local file") {
    const auto model = export_checked_model(dir.path(), "reads_file");
    json task = small_task("reads-file", 10, 5, torchscript_model(model));
    check_fails(run(write_task(dir.path(), "t", task)), 2, "model.file: operator aten::from_file is not allowed (in forward, ");
    CHECK_FALSE(std::filesystem::exists(dir / "out"));  // refused before the bundle was started
  }
}

TEST_CASE("solver run ends a step stuck past its time limit with exit status 2, and --resume reports it instead of "
          "running it again", "[e2e]") {
  ScratchDir dir("stuck-step");
  const auto key = make_key(dir.path());
  // 40 passes of slow work per step: half a minute or more on a 2-core machine, several seconds
  // on a fast one, while the budget of 1 s gives every step a limit of 1 s.
  json task = small_task("stuck-step", 10, 5, torchscript_model(export_checked_model(dir.path(), "slow:40")));
  task["budget"] = {{"max_wall_seconds", 1}};
  const auto task_path = write_task(dir.path(), "t", task);
  const auto out = dir / "out";

  const auto started = std::chrono::steady_clock::now();
  const CommandResult run = run_solver({"run", task_path.string(), "--out", out.string(), "--key", key.string()});
  std::printf("solver run with a stuck step ended after %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  // The watchdog's message ("still running"), not the one of a step that ended late ("it took").
  const std::string reason = "step 1 ran past its time limit of 1 s and is still running";
  check_fails(run, 2, reason);
  REQUIRE(std::filesystem::exists(out / "stuck_step.txt"));
  CHECK(solver::read_file(out / "stuck_step.txt") == reason);

  const CommandResult resume =
      run_solver({"run", task_path.string(), "--out", out.string(), "--key", key.string(), "--resume"});
  check_fails(resume, 2, reason + " (recorded in " + (out / "stuck_step.txt").string());
  CHECK(resume.output.find("the task cannot go on in this folder") != std::string::npos);
}

TEST_CASE("solver verify of something that is not a readable bundle exits 2 with the reason", "[e2e]") {
  ScratchDir dir("bad-bundle");
  SECTION("a folder without a manifest") {
    check_fails(run_solver({"verify", dir.path().string()}), 2, "manifest.json");
  }
  SECTION("a manifest that is not JSON") {
    write_text(dir / "manifest.json", "[1, 2");
    write_text(dir / "manifest.sig", "00\n");
    check_fails(run_solver({"verify", dir.path().string()}), 2, "manifest.json");
  }
}

TEST_CASE("solver resumes only from an intact checkpoint: a truncated one is a clear error", "[e2e]") {
  ScratchDir dir("truncated");
  const auto key = make_key(dir.path());
  json task = small_task("truncated", 100000, 50);
  task["budget"] = {{"max_wall_seconds", 1.5}};
  const auto task_path = write_task(dir.path(), "t", task);
  const auto out = dir / "out";
  REQUIRE(run_solver({"run", task_path.string(), "--out", out.string(), "--key", key.string()}).exit_code == 2);
  // The journal's last line is the last checkpoint's manifest entry.
  std::ifstream journal(out / "journal.jsonl");
  std::string line;
  std::string last_line;
  while (std::getline(journal, line)) last_line = line;
  const std::string last = json::parse(last_line)["file"]["path"];
  std::filesystem::resize_file(out / last, std::filesystem::file_size(out / last) / 2);
  check_fails(run_solver({"run", task_path.string(), "--out", out.string(), "--key", key.string(), "--resume"}), 2, last);
}

TEST_CASE("usage errors exit 64 and a key readable by others exits 78", "[e2e]") {
  ScratchDir dir("usage");
  CHECK(run_solver({"run", "--no-such-flag"}).exit_code == 64);
  CHECK(run_solver({"frobnicate"}).exit_code == 64);
  // A mistyped command names itself and the closest command, past global options and their values.
  check_fails(run_solver({"agnet"}), 64, "unknown command \"agnet\"; did you mean `agent`?");
  check_fails(run_solver({"-v", "--log-format", "json", "verfy"}), 64, "did you mean `verify`?");
  // --version needs no command, as every tool's does.
  const CommandResult version = run_solver({"--version"});
  CHECK(version.exit_code == 0);
  const std::string named = version.output.substr(0, version.output.find('\n'));
  CHECK_THAT(named, Catch::Matches(R"(solver \d+\.\d+\.\d+)"));
  CHECK_THAT(run_solver({"version"}).output, Catch::StartsWith(named + " "));

  const auto key = make_key(dir.path());
  ::chmod(key.c_str(), 0644);
  const auto task = write_task(dir.path(), "t", small_task("open-key", 10, 5));
  check_fails(run_solver({"run", task.string(), "--out", (dir / "out").string(), "--key", key.string()}), 78, "chmod 600");
}
