// The host's tensor memory limit (train/host_memory.h) [torch]: the counting allocator sees every
// CPU tensor, a step past the limit ends in Error(OutOfMemory) rather than a crash, and the same
// step with its batch in more shards fits under a limit that one shard does not.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/task.h"
#include "tests/test_support.h"
#include "train/host_memory.h"
#include "train/trainer.h"

namespace {

using namespace solver;
using json = nlohmann::json;

// A convolution's activations (32 channels of 28 x 28 per image) far outweigh its weights, which a
// second shard copies: 2 steps of batches of 512.
Task wide_task() {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["id"] = "wide-cnn";
  task["model"] = {{"kind", "cnn"}, {"channels", {32}}};
  task["training"] = {{"optimizer", {{"kind", "sgd"}, {"lr", 0.01}}}, {"batch_size", 512}, {"steps", 2}};
  task["proof"] = {{"checkpoint_every", 2}};
  task.erase("budget");
  return parse_task(task, test::source_dir());
}

// The peak of tensor memory while training the task with `shards`, from a new Trainer.
std::uint64_t training_peak(const Task& task, int shards) {
  train::reset_host_tensor_peak();
  train::Trainer trainer(task, {.device = "cpu", .threads = 2, .shards = shards});
  trainer.train(0, {});
  return train::host_tensor_memory().peak_bytes;
}

struct LimitLifted {
  ~LimitLifted() { train::limit_host_tensor_memory(0); }
};

}  // namespace

TEST_CASE("host tensor memory: counted while held, given back when freed", "[torch][memory]") {
  const std::uint64_t before = train::host_tensor_memory().held_bytes;
  {
    train::Trainer trainer(wide_task(), {.device = "cpu", .threads = 2});
    // At least the training images, a byte per pixel.
    CHECK(train::host_tensor_memory().held_bytes - before >= 60000 * 784);
  }
  CHECK(train::host_tensor_memory().held_bytes == before);
}

TEST_CASE("host tensor memory: a step past the limit is out of memory, and more shards fit under it", "[torch][memory]") {
  const Task task = wide_task();
  const std::uint64_t one_shard = training_peak(task, 1);
  const std::uint64_t two_shards = training_peak(task, 2);
  INFO("peak with 1 shard " << one_shard << " bytes, with 2 " << two_shards);
  REQUIRE(two_shards + 20'000'000 < one_shard);  // half the activations, one more copy of a small model

  const LimitLifted lifted;
  train::limit_host_tensor_memory((one_shard + two_shards) / 2);
  try {
    training_peak(task, 1);
    FAIL("one shard trained under a limit below its peak");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::OutOfMemory);
    CHECK_THAT(error.what(), Catch::Contains("out of memory on cpu") && Catch::Contains("limits.max_host_memory_gb"));
  }
  CHECK(training_peak(task, 2) <= (one_shard + two_shards) / 2);
}
