// LibTorch measurements [torch] on tiny sizes: positive, finite figures with the stated FLOP
// count, training throughput from the real trainer, and clear errors for bad options and
// missing GPUs. No speed is asserted.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>

#include "common/error.h"
#include "common/files.h"
#include "common/task.h"
#include "tests/test_support.h"
#include "train/benchmark.h"

using namespace solver;

namespace {

bool positive_finite(double value) { return std::isfinite(value) && value > 0.0; }

// The default task with a small model: 937 steps per epoch, so a few passes fit easily.
Task small_task() {
  nlohmann::json task = nlohmann::json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["model"] = {{"kind", "mlp"}, {"hidden", {16}}};
  return parse_task(task, test::source_dir());
}

}  // namespace

TEST_CASE("CPU matmul reports 2n^3 FLOP per product and a positive rate", "[torch]") {
  const train::MatmulResult matmul = train::measure_matmul({"cpu", "fp32", 64, 2, 2});
  CHECK(matmul.device == "cpu");
  CHECK(matmul.n == 64);
  CHECK(matmul.threads == 2);
  CHECK(matmul.flop == 2.0 * 64 * 64 * 64);
  CHECK_FALSE(matmul.blas.empty());
  CHECK(positive_finite(matmul.best_seconds));
  CHECK(positive_finite(matmul.gflops));
  CHECK(std::abs(matmul.gflops - matmul.flop / matmul.best_seconds / 1e9) < 1e-9 * matmul.gflops);
}

TEST_CASE("Matmul rejects an unknown dtype, a bad size and a bad device", "[torch]") {
  CHECK_THROWS_WITH(train::measure_matmul({"cpu", "fp8", 64, 1, 1}), Catch::Contains("fp32 or bf16"));
  CHECK_THROWS_WITH(train::measure_matmul({"cpu", "fp32", 0, 1, 1}), Catch::Contains("matmul size"));
  CHECK_THROWS_WITH(train::measure_matmul({"gpu0", "fp32", 64, 1, 1}), Catch::Contains("expected cpu, cuda or cuda:N"));
}

TEST_CASE("Without a CUDA device the GPU measurements fail with a GPU error", "[torch]") {
  if (train::torch_cuda_device_count() > 0) return;  // a GPU machine: nothing to check here
  try {
    train::measure_matmul({"cuda:0", "bf16", 64, 1, 0});
    FAIL("expected Error(Cuda)");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Cuda);
  }
  CHECK_THROWS_AS(train::measure_device_memory({"cuda:0", 1 << 20, 1}), Error);
}

TEST_CASE("The device memory benchmark needs a CUDA device", "[torch]") {
  CHECK_THROWS_WITH(train::measure_device_memory({"cpu", 1 << 20, 1}), Catch::Contains("expected a CUDA device"));
}

TEST_CASE("Training throughput times passes of real steps of the task", "[torch]") {
  const train::TrainingThroughput throughput = train::measure_training_throughput(small_task(), {"cpu", 2, 2, 12, 3});
  CHECK(throughput.task_id == "fashion-mnist-mlp");
  CHECK(throughput.device == "cpu");
  CHECK(throughput.threads == 2);
  CHECK(throughput.batch_size == 64);
  CHECK(throughput.steps == 12);
  CHECK(throughput.passes == 3);
  CHECK(positive_finite(throughput.setup_seconds));
  CHECK(positive_finite(throughput.seconds));
  CHECK(positive_finite(throughput.samples_per_second));
  CHECK(std::abs(throughput.samples_per_second - 4 * 64 / throughput.seconds) < 1e-9 * throughput.samples_per_second);
  CHECK(std::isfinite(throughput.last_loss));
}

TEST_CASE("Training throughput refuses more steps than the task has, or fewer than its passes", "[torch]") {
  CHECK_THROWS_WITH(train::measure_training_throughput(small_task(), {"cpu", 2, 10, 100000, 5}), Catch::Contains("has only"));
  CHECK_THROWS_WITH(train::measure_training_throughput(small_task(), {"cpu", 2, 1, 2, 5}), Catch::Contains("steps per pass"));
}
