// `solver bench` end to end: quick mode prints valid JSON whose figures are positive and
// finite, the reference transformer's FLOPs follow nanoGPT's count of this model, and MFU is
// model FLOP/s over the peak it names; without NVML the GPU section is a clean "0 GPUs"; a GPU
// that is not there is exit status 69. Speeds are not asserted, nor the time quick mode takes:
// other work shares the cores.
#include <catch2/catch.hpp>

#include <cmath>
#include <regex>

#include "common/files.h"
#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using nlohmann::json;

namespace {

void check_positive_finite(const json& figure, const std::string& name) {
  INFO(name << " = " << figure.dump());
  REQUIRE(figure.is_number());
  const double value = figure.get<double>();
  CHECK(std::isfinite(value));
  CHECK(value > 0.0);
}

// One quick JSON bench, shared by the test cases that read it: each run takes seconds. Its
// stderr (the log) goes to a file of its own, so `result.output` is stdout alone.
struct QuickBench {
  ScratchDir dir{"bench"};
  ScratchDir saved{"bench-saved"};
  CommandResult result = run_command({"/bin/sh", "-c", "log=$1; shift; exec \"$@\" 2>\"$log\"", "sh", (saved / "bench.log").string(),
                                      solver_binary().string(), "bench", "--quick", "--json", "--dir", dir.path().string(),
                                      "--save", (saved / "bench.json").string()});
  std::string log = solver::read_file(saved / "bench.log");
};

const QuickBench& quick_bench() {
  static const QuickBench bench;
  return bench;
}

}  // namespace

TEST_CASE("solver bench --quick --json measures the host and prints positive figures", "[e2e]") {
  const QuickBench& bench = quick_bench();
  const ScratchDir& dir = bench.dir;
  REQUIRE(bench.result.exit_code == 0);

  const json report = json::parse(bench.result.output);
  CHECK(report["mode"] == "quick");
  CHECK(read_json(bench.saved / "bench.json") == report);  // --save keeps what was printed, for the agent
  for (const char* name : {"matmul_fp32_gflops", "matmul_flop_per_product", "memory_copy_gb_per_s", "memory_triad_gb_per_s", "sha256_gb_per_s"})
    check_positive_finite(report["cpu"][name], name);
  CHECK(report["cpu"]["matmul_flop_per_product"] == 2.0 * std::pow(report["cpu"]["matmul_n"].get<double>(), 3));
  CHECK(report["cpu"]["matmul_peak_gflops"].is_null());
  check_positive_finite(report["disk"]["write_fsync_gb_per_s"], "disk write");
  CHECK(report["disk"]["dir"] == dir.path().string());
  check_positive_finite(report["training"]["samples_per_s"], "training");
  CHECK(report["training"]["task_id"] == "fashion-mnist-mlp");
  CHECK(std::filesystem::is_empty(dir.path()));  // the disk test's file and the generated tokens are gone

  CHECK(report["gpu_count"] == report["gpus"].size());
  if (!report["nvml"]["available"].get<bool>()) {
    CHECK(report["gpu_count"] == 0);
    CHECK(report["nvml"]["unavailable_reason"].get<std::string>().starts_with("no NVIDIA driver (NVML not found"));
  }
  if (report["cuda_device_count"] == 0) {
    CHECK(report["gpu_benchmark"]["skipped_reason"].get<std::string>().starts_with("no CUDA device"));
  } else {
    for (const char* name : {"matmul_fp32_tflops", "matmul_tf32_tflops", "matmul_fp16_tflops", "matmul_bf16_tflops"})
      check_positive_finite(report["gpu_benchmark"][name], name);
  }
}

TEST_CASE("solver bench --quick logs each stage as it starts, on stderr, with the time so far", "[e2e]") {
  const QuickBench& bench = quick_bench();
  REQUIRE(bench.result.exit_code == 0);
  INFO(bench.log);
  CHECK_THAT(bench.log, Catch::Contains("this takes about 25 s"));
  for (const char* stage : {"] CPU matmul (", "] memory bandwidth over 3 x ", "] SHA-256 (", "] disk write + fsync of ",
                            "] training the reference MLP on ", "] training the reference gpt on ", "bench: done in "})
    CHECK_THAT(bench.log, Catch::Contains(stage));
  std::smatch stages;  // counted at the start, and the last one is that count
  REQUIRE(std::regex_search(bench.log, stages, std::regex(R"(bench: \[1/([0-9]+)\] )")));
  CHECK_THAT(bench.log, Catch::Contains("bench: [" + stages[1].str() + "/" + stages[1].str() + "] "));
}

TEST_CASE("solver bench --quick --json trains the reference gpt and reports tokens/s and MFU", "[e2e]") {
  const QuickBench& bench = quick_bench();
  REQUIRE(bench.result.exit_code == 0);
  const json report = json::parse(bench.result.output);
  const json& gpt = report["training_gpt"];
  INFO(gpt.dump(2));
  CHECK(gpt["task_id"] == "bench-gpt");
  CHECK(gpt["device"] == report["training"]["device"]);
  for (const char* name : {"samples_per_s", "tokens_per_s", "flop_per_token", "model_gflops"}) check_positive_finite(gpt[name], name);

  const double vocab = gpt["vocab_size"], context = gpt["context"], layers = gpt["layers"], heads = gpt["heads"], embed = gpt["embed"];
  CHECK(gpt["tokens_per_s"].get<double>() == Approx(gpt["samples_per_s"].get<double>() * context));
  // nanoGPT's N: the tied token embedding, per block 2 LayerNorms (2E each), attention
  // (E x 3E + 3E, E x E + E) and MLP (E x 4E + 4E, 4E x E + E), the final LayerNorm; not wpe.
  const double parameters = vocab * embed + layers * (12 * embed * embed + 13 * embed) + 2 * embed;
  CHECK(gpt["non_embedding_parameters"].get<double>() == parameters);
  CHECK(gpt["flop_per_token"].get<double>() == 6 * parameters + 12 * layers * heads * (embed / heads) * context);
  CHECK(gpt["model_gflops"].get<double>() == Approx(gpt["tokens_per_s"].get<double>() * gpt["flop_per_token"].get<double>() / 1e9));
  if (gpt["device"] != "cpu" && gpt["mfu_peak_gflops"].is_null()) {
    CHECK(gpt["mfu_peak_source"].get<std::string>().starts_with("unknown"));  // a GPU missing from the datasheet table
    return;
  }
  check_positive_finite(gpt["mfu_percent"], "mfu_percent");
  CHECK(gpt["mfu_percent"].get<double>() == Approx(100.0 * gpt["model_gflops"].get<double>() / gpt["mfu_peak_gflops"].get<double>()));
  // On the CPU, MFU is of this run's measured matmul, and says so.
  if (gpt["device"] == "cpu") {
    CHECK(gpt["mfu_peak_gflops"].get<double>() == Approx(report["cpu"]["matmul_fp32_gflops"].get<double>()));
    CHECK(gpt["mfu_peak_source"].get<std::string>().starts_with("measured CPU matmul"));
  }
}

TEST_CASE("solver bench's table says when there is no GPU, and a missing GPU is exit status 69", "[e2e]") {
  ScratchDir dir("bench-table");
  const CommandResult version = run_solver({"version", "--json"});
  REQUIRE(version.exit_code == 0);
  if (json::parse(version.output)["cuda_devices"] != 0) return;  // a GPU machine: the case below does not apply

  const CommandResult table = run_solver({"bench", "--quick", "--dir", dir.path().string()});
  REQUIRE(table.exit_code == 0);
  CHECK(table.output.find("matmul fp32 (CPU)") != std::string::npos);
  CHECK(table.output.find("training mlp") != std::string::npos);
  CHECK(table.output.find("training gpt tokens") != std::string::npos);
  CHECK(table.output.find("gpt model FLOP/s (MFU)") != std::string::npos);
  CHECK(table.output.find("GPU measurements: skipped: no CUDA device") != std::string::npos);

  const CommandResult gpu = run_solver({"bench", "--quick", "--device", "cuda:0", "--dir", dir.path().string()});
  CHECK(gpu.exit_code == 69);
  CHECK(gpu.output.find("CUDA is unavailable") != std::string::npos);
}
