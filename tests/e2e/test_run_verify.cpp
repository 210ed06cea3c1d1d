// solver run + solver verify on real data: honest bundles accepted, a killed run resumed.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>

#include "common/sha256.h"
#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

TEST_CASE("solver run trains a small MLP on Fashion-MNIST and solver verify accepts its bundle", "[e2e]") {
  ScratchDir dir("run-verify");
  const auto key = make_key(dir.path());
  const auto task = write_task(dir.path(), "mlp", small_task("e2e-mlp", 60, 20));
  const auto bundle = dir / "bundle";

  const CommandResult run = run_solver({"run", task.string(), "--out", bundle.string(), "--key", key.string()});
  REQUIRE(run.exit_code == 0);
  CHECK(run.output.find("test accuracy") != std::string::npos);
  for (int step : {0, 20, 40, 60}) CHECK(std::filesystem::exists(bundle / "ckpt" / ("step_" + std::to_string(step) + ".safetensors")));
  CHECK(std::filesystem::exists(bundle / "manifest.sig"));
  CHECK_FALSE(std::filesystem::exists(bundle / "journal.jsonl"));

  const json manifest = read_json(bundle / "manifest.json");
  CHECK(manifest["total_steps"] == 60);
  CHECK(manifest["checkpoints"].size() == 4);
  CHECK(manifest["segments"].size() == 3);

  const CommandResult verify = run_solver({"verify", bundle.string(), "--segments", "all", "--task", task.string()});
  CHECK(verify.exit_code == 0);
  CHECK(verify.output.find("verdict: ACCEPTED") != std::string::npos);

  const CommandResult as_json = run_solver({"verify", bundle.string(), "--json", "--seed", "7"});
  REQUIRE(as_json.exit_code == 0);
  const json verdict = json::parse(as_json.output.substr(as_json.output.find('{')));
  CHECK(verdict["accepted"] == true);
  CHECK(verdict["random_seed"] == 7);
  CHECK(verdict["same_runtime"] == true);
  CHECK(verdict["detection"]["faked_fractions"].size() == 3);

  // Every segment replayed: a forger is caught for sure, and the table says so.
  CHECK(verify.output.find("chance to catch a forger who faked 1 segment: 100%") != std::string::npos);
  // A probability of 1 instead of a count draws every segment that top-q and the final one left.
  const CommandResult certain = run_solver({"verify", bundle.string(), "--json", "--catch-probability", "1"});
  REQUIRE(certain.exit_code == 0);
  const json certain_verdict = json::parse(certain.output.substr(certain.output.find('{')));
  CHECK(certain_verdict["segments_replayed"] == 3);
  CHECK(certain_verdict["detection"]["one_segment"] == 1.0);
  const CommandResult impossible = run_solver({"verify", bundle.string(), "--catch-probability", "0"});
  CHECK(impossible.exit_code == 64);
  CHECK(impossible.output.find("the catch probability must be above 0 and at most 1, got 0") != std::string::npos);
  CHECK(run_solver({"verify", bundle.string(), "--catch-probability", "0.5", "--random", "2"}).exit_code == 64);
}

TEST_CASE("solver run with two data-parallel shards writes a bundle that solver verify replays bitwise", "[e2e]") {
  ScratchDir dir("run-verify-shards");
  const auto key = make_key(dir.path());
  const auto task = write_task(dir.path(), "mlp", small_task("e2e-shards", 20, 10));
  const auto bundle = dir / "bundle";
  const CommandResult run = run_solver(
      {"run", task.string(), "--out", bundle.string(), "--key", key.string(), "--threads", "1", "--shards", "2"});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  const json manifest = read_json(bundle / "manifest.json");
  CHECK(manifest["runtime"]["shards"] == 2);
  CHECK(manifest["runtime"]["device"] == "cpu");
  CHECK(manifest["seeds"]["streams"]["shard"] == 5);

  const CommandResult verify = run_solver({"verify", bundle.string(), "--segments", "all", "--json"});
  INFO(verify.output);
  REQUIRE(verify.exit_code == 0);
  const json verdict = json::parse(verify.output.substr(verify.output.find('{')));
  CHECK(verdict["accepted"] == true);
  CHECK(verdict["same_runtime"] == true);

  // A device list trains one shard per device: the same bits as two shards on one device.
  const auto listed = dir / "listed";
  REQUIRE(run_solver({"run", task.string(), "--out", listed.string(), "--key", key.string(), "--threads", "1",
                      "--device", "cpu,cpu"}).exit_code == 0);
  const json listed_manifest = read_json(listed / "manifest.json");
  CHECK(listed_manifest["runtime"]["shards"] == 2);
  CHECK(listed_manifest["chain_root"] == manifest["chain_root"]);

  const CommandResult odd = run_solver({"run", task.string(), "--out", (dir / "odd").string(), "--key", key.string(),
                                        "--shards", "3"});
  CHECK(odd.exit_code == 2);
  CHECK(odd.output.find("training.batch_size: 32 does not split into 3 equal data-parallel shards") != std::string::npos);
}

TEST_CASE("solver run trains the small CNN and its bundle verifies", "[e2e]") {
  ScratchDir dir("cnn");
  const auto key = make_key(dir.path());
  const auto task = write_task(dir.path(), "cnn", small_task("e2e-cnn", 20, 10, {{"kind", "cnn"}, {"channels", {4, 8}}}));
  const auto bundle = dir / "bundle";
  REQUIRE(run_solver({"run", task.string(), "--out", bundle.string(), "--key", key.string()}).exit_code == 0);
  const CommandResult verify = run_solver({"verify", bundle.string(), "--segments", "all"});
  CHECK(verify.exit_code == 0);
}

TEST_CASE("solver run trains the example gpt on byte tokens of the GPL-3 text and solver verify accepts its bundle", "[e2e]") {
  ScratchDir dir("text-gpt");
  const auto key = make_key(dir.path());
  const auto bundle = dir / "bundle";
  // The example task, shortened to 40 steps so that training and replaying all of it stay quick.
  json task = read_json(source_dir() / "configs/tasks/text-gpt.json");
  task["training"]["steps"] = 40;
  task["proof"]["checkpoint_every"] = 20;
  for (const char* part : {"train", "test"})
    task["dataset"][part]["location"] = (source_dir() / "configs/data" / (std::string("gpl3-") + part + ".bin")).string();
  const auto task_file = write_task(dir.path(), "text-gpt", task);

  const CommandResult run =
      run_solver({"run", task_file.string(), "--out", bundle.string(), "--key", key.string(), "--threads", "1"});
  REQUIRE(run.exit_code == 0);
  CHECK(run.output.find("test accuracy") != std::string::npos);
  // The mean next-token cross-entropy on the held-out text, below chance (ln 256 = 5.55) after 40 steps.
  std::smatch loss;
  REQUIRE(std::regex_search(run.output, loss, std::regex("test loss ([0-9.]+)")));
  CHECK(std::stod(loss[1]) < 5.5);
  for (int step : {0, 20, 40}) CHECK(std::filesystem::exists(bundle / "ckpt" / ("step_" + std::to_string(step) + ".safetensors")));
  const json manifest = read_json(bundle / "manifest.json");
  CHECK(manifest["total_steps"] == 40);
  CHECK(manifest["segments"].size() == 2);

  const CommandResult verify = run_solver({"verify", bundle.string(), "--segments", "all"});
  CHECK(verify.exit_code == 0);
  CHECK(verify.output.find("verdict: ACCEPTED") != std::string::npos);
}

TEST_CASE("a TorchScript model exported by PyTorch is trained by solver run and its bundle verifies", "[e2e]") {
  ScratchDir dir("torchscript");
  const auto model = dir / "model.pt";
  const CommandResult export_run =
      run_command({system_python(), (source_dir() / "tests/python/export_model.py").string(), model.string()});
  INFO(export_run.output);
  REQUIRE(export_run.exit_code == 0);

  json task = small_task("e2e-torchscript", 30, 10,
                         {{"kind", "torchscript"}, {"file", {{"location", "model.pt"}, {"sha256", solver::sha256_file_hex(model)}}}});
  const auto task_path = write_task(dir.path(), "torchscript", task);
  const auto key = make_key(dir.path());
  const auto bundle = dir / "bundle";
  REQUIRE(run_solver({"run", task_path.string(), "--out", bundle.string(), "--key", key.string()}).exit_code == 0);
  CHECK(std::filesystem::exists(bundle / "model.pt"));

  // The verifier needs only the bundle (the model travels inside it) and the public data.
  std::filesystem::remove(model);
  const CommandResult verify = run_solver({"verify", bundle.string(), "--segments", "all"});
  CHECK(verify.exit_code == 0);
}

TEST_CASE("a run killed with SIGKILL mid-segment resumes to the same bundle an uninterrupted run writes", "[e2e]") {
  ScratchDir dir("resume");
  const auto key = make_key(dir.path());
  const auto task = write_task(dir.path(), "resume", small_task("e2e-resume", 1200, 100));
  const auto whole = dir / "whole";
  const auto resumed = dir / "resumed";
  REQUIRE(run_solver({"run", task.string(), "--out", whole.string(), "--key", key.string()}).exit_code == 0);

  // Start the same run and kill it once a checkpoint after step 0 is journaled.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(null_fd, STDERR_FILENO);
    const std::string binary = solver_binary().string();
    ::execl(binary.c_str(), binary.c_str(), "run", task.c_str(), "--out", resumed.c_str(), "--key", key.c_str(), nullptr);
    ::_exit(127);
  }
  const auto journal = resumed / "journal.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool mid_run = false;
  while (!mid_run && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    // The header, then a line per checkpoint: three lines once a checkpoint after step 0 is
    // journaled. A journal not there yet, or gone as the run finishes, reads as no lines.
    std::ifstream in(journal);
    mid_run = std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n') >= 3;
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(mid_run);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE_FALSE(std::filesystem::exists(resumed / "manifest.json"));
  // The training time the killed run journaled with its last checkpoint.
  double journaled_seconds = 0.0;
  {
    std::ifstream in(journal);
    for (std::string line; std::getline(in, line);)
      if (const json entry = json::parse(line, nullptr, false); entry.is_object() && entry.contains("train_seconds"))
        journaled_seconds = entry["train_seconds"].get<double>();
  }
  REQUIRE(journaled_seconds > 0.0);

  const CommandResult resume = run_solver({"run", task.string(), "--out", resumed.string(), "--key", key.string(), "--resume"});
  REQUIRE(resume.exit_code == 0);
  CHECK(resume.output.find("resuming from checkpoint") != std::string::npos);
  CHECK(run_solver({"verify", resumed.string(), "--segments", "all"}).exit_code == 0);

  // Training is a pure function of the task and the checkpointed state: the chain of every
  // checkpoint and segment hash matches the run that was never interrupted.
  CHECK(read_json(resumed / "manifest.json")["chain_root"] == read_json(whole / "manifest.json")["chain_root"]);
  // The resumed bundle's training time counts the killed run's too, not only the last run's.
  CHECK(read_json(resumed / "manifest.json")["outcome"]["train_seconds"].get<double>() > journaled_seconds);
}

TEST_CASE("a run stopped by SIGINT prints the exact command that resumes it, which finishes the run without a log line "
          "written over the progress line",
          "[e2e]") {
  ScratchDir dir("resume-hint");
  const auto key = make_key(dir.path());
  const auto task = write_task(dir.path(), "hint", small_task("e2e-hint", 1200, 100));
  const auto out = dir / "my runs" / "hint";  // a space: the hint must quote it
  BackgroundProcess run({solver_binary().string(), "run", task.string(), "--out", out.string(), "--key", key.string()},
                        dir / "run.log");
  const auto journal = out / "journal.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool mid_run = false;
  while (!mid_run && run.running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream in(journal);  // the header, then a line per checkpoint
    mid_run = std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n') >= 3;
  }
  REQUIRE(mid_run);
  run.signal(SIGINT);
  REQUIRE(run.wait(60) == 0);
  std::smatch hint;
  const std::string stopped = run.output();
  INFO(stopped);
  REQUIRE(std::regex_search(stopped, hint, std::regex("continue with: solver (.*)\n")));

  // Typed as shown (by a shell, on a terminal: `script` gives it one, so progress is drawn in place).
  const std::string command = solver_binary().string() + " " + hint[1].str();
  const CommandResult resumed = run_command({"/usr/bin/script", "-qec", command, "/dev/null"});
  INFO(command << "\n" << resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from checkpoint") && Catch::Contains("trained e2e-hint"));
  CHECK(std::filesystem::exists(out / "manifest.json"));
  CHECK_THAT(resumed.output, Catch::Contains("\rstep "));
  CHECK_FALSE(std::regex_search(resumed.output, std::regex("ETA [0-9:]+ *[0-9]{4}-[0-9]{2}-[0-9]{2}T")));
}
