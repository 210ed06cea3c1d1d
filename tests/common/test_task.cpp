// The task format: the shipped example parses to the fields it says, the normalised JSON
// round-trips to the same task hash, every kind of bad input is an Input error naming its
// field, data files are checked against their hashes, and the schedules give the documented
// learning rates.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <numbers>
#include <string>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/task.h"
#include "tests/test_support.h"

using nlohmann::json;
using solver::Error;
using solver::ErrorKind;

namespace {

std::filesystem::path example_task_path() { return solver::test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"; }

json example_task_json() { return json::parse(solver::read_file(example_task_path())); }

// Parses `task` and expects an Input error whose message contains `field` and `problem`.
void require_rejected(const json& task, const std::string& field, const std::string& problem) {
  try {
    solver::parse_task(task, "/tmp");
    FAIL("the task was accepted; expected an error naming " << field);
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::Contains(field) && Catch::Contains(problem));
  }
}

}  // namespace

TEST_CASE("The Fashion-MNIST MLP example parses to the fields it declares", "[common]") {
  const solver::Task task = solver::load_task_file(example_task_path());
  CHECK(task.id == "fashion-mnist-mlp");
  CHECK(task.seed == 20261125u);
  CHECK(task.model.kind == solver::ModelKind::Mlp);
  CHECK(task.model.hidden == std::vector<std::int64_t>{128, 64});
  CHECK(task.dataset.format == solver::DatasetFormat::Idx);
  CHECK(task.dataset.train_images.location == "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
  CHECK(task.dataset.train_labels.sha256 == "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056");
  CHECK(task.dataset.normalize_mean == 0.2860);
  CHECK(task.dataset.normalize_std == 0.3530);
  CHECK(task.training.optimizer.kind == solver::OptimizerKind::AdamW);
  CHECK(task.training.optimizer.lr == 0.002);
  CHECK(task.training.optimizer.weight_decay == 0.01);
  CHECK(task.training.optimizer.beta1 == 0.9);  // defaults filled in
  CHECK(task.training.optimizer.beta2 == 0.999);
  CHECK(task.training.schedule.kind == solver::ScheduleKind::Cosine);
  CHECK(task.training.schedule.warmup_steps == 100);
  CHECK(task.training.schedule.min_lr == 0.0001);
  CHECK(task.training.batch_size == 64);
  CHECK(task.training.epochs == 2);
  CHECK(task.training.steps == 0);
  CHECK(task.training.grad_clip_norm == 1.0);
  CHECK(task.checkpoint_every == 100);
  CHECK(task.budget.max_steps == 10000);
  CHECK(task.budget.max_wall_seconds == 1800.0);
  CHECK(task.budget.max_memory_mb == 4096);
  CHECK(solver::total_steps(task, 60000) == 2 * 937);
}

TEST_CASE("The normalised JSON parses back to a task with the same hash", "[common]") {
  const solver::Task task = solver::load_task_file(example_task_path());
  const solver::Task again = solver::parse_task(solver::task_to_json(task), "/elsewhere");
  CHECK(solver::task_sha256(again) == solver::task_sha256(task));
  CHECK(solver::is_sha256_hex(solver::task_sha256(task)));
  CHECK(solver::canonical_json(solver::task_to_json(again)) == solver::canonical_json(solver::task_to_json(task)));

  solver::Task other = task;
  other.seed += 1;
  CHECK(solver::task_sha256(other) != solver::task_sha256(task));
}

TEST_CASE("training.precision defaults to fp32, which leaves the hash of a task without the field unchanged, and bf16 is hashed", "[common]") {
  const json without_field = example_task_json();
  const solver::Task task = solver::parse_task(without_field, "/tmp");
  CHECK(task.training.precision == solver::Precision::Fp32);
  CHECK_FALSE(solver::task_to_json(task)["training"].contains("precision"));

  json explicit_fp32 = without_field;
  explicit_fp32["training"]["precision"] = "fp32";
  CHECK(solver::task_sha256(solver::parse_task(explicit_fp32, "/tmp")) == solver::task_sha256(task));

  json bf16 = without_field;
  bf16["training"]["precision"] = "bf16";
  const solver::Task mixed = solver::parse_task(bf16, "/tmp");
  CHECK(mixed.training.precision == solver::Precision::Bf16);
  CHECK(solver::task_sha256(mixed) != solver::task_sha256(task));
  const solver::Task again = solver::parse_task(solver::task_to_json(mixed), "/elsewhere");
  CHECK(again.training.precision == solver::Precision::Bf16);
  CHECK(solver::task_sha256(again) == solver::task_sha256(mixed));
}

TEST_CASE("A task's sha256 is a protocol value: tasks of each model kind and each named choice keep their recorded hashes", "[common]") {
  const json mlp = example_task_json();
  CHECK(solver::task_sha256(solver::parse_task(mlp, "/tmp")) == "43e4eb06b9888c9994800eb8161be6d02e4a946954da38b23208ffca330b248d");
  const json cnn = json::parse(solver::read_file(solver::test::source_dir() / "configs/tasks/fashion-mnist-cnn.json"));
  CHECK(solver::task_sha256(solver::parse_task(cnn, "/tmp")) == "76b91f464ff089573f66ae6f75e3ec23b34afd41d71808c36e4f517054b6102d");

  json sgd = mlp;
  sgd["training"]["precision"] = "bf16";
  sgd["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.1}, {"momentum", 0.9}, {"nesterov", true}};
  sgd["training"]["schedule"] = {{"kind", "step"}, {"step_size", 5}, {"gamma", 0.5}};
  CHECK(solver::task_sha256(solver::parse_task(sgd, "/tmp")) == "b4326891e16ba13f34919b10747ffbddf133bf4e8732cf794447575b1f5146c6");

  json script = mlp;
  script["training"]["optimizer"] = {{"kind", "adam"}, {"lr", 0.1}};
  script["training"]["schedule"] = {{"kind", "constant"}};
  script["model"] = {{"kind", "torchscript"}, {"file", {{"location", "/models/m.pt"}, {"sha256", std::string(64, '0')}}}};
  CHECK(solver::task_sha256(solver::parse_task(script, "/tmp")) == "62d461be9fb5c5b65b5aac3c2f30ddee9ceeba6ff053981f6376c23c4f953759");

  json gpt = json::parse(solver::read_file(solver::test::source_dir() / "configs/tasks/text-gpt.json"));
  gpt["dataset"]["train"]["location"] = "/data/train.bin";
  gpt["dataset"]["test"]["location"] = "/data/test.bin";
  CHECK(solver::task_sha256(solver::parse_task(gpt, "/tmp")) == "119282c078833ecaa7a542c2a7e0e40583589dd0a9bc1cd5c1332d9f0f59852d");
}

TEST_CASE("Every model kind the agent advertises (kModelKinds) is one a task may name, and is written back by that name", "[common]") {
  for (const std::string_view name : solver::kModelKinds) {
    INFO("model kind " << name);
    json task = example_task_json();
    if (name == "gpt") task = json::parse(solver::read_file(solver::test::source_dir() / "configs/tasks/text-gpt.json"));
    if (name == "cnn") task["model"] = {{"kind", "cnn"}, {"channels", {8}}};
    if (name == "torchscript") task["model"] = {{"kind", "torchscript"}, {"file", {{"location", "/m.pt"}, {"sha256", std::string(64, '0')}}}};
    const solver::Task parsed = solver::parse_task(task, solver::test::source_dir() / "configs/tasks");
    CHECK(solver::name_of(parsed.model.kind) == name);
    CHECK(solver::task_to_json(parsed)["model"]["kind"] == std::string(name));
  }
}

TEST_CASE("Checkpoints fall every k steps from 0 and on the last step", "[common]") {
  // 0, 4, 8, 10 for k = 4 over 10 steps.
  CHECK(solver::next_checkpoint_step(0, 4, 10) == 4);
  CHECK(solver::next_checkpoint_step(3, 4, 10) == 4);
  CHECK(solver::next_checkpoint_step(4, 4, 10) == 8);
  CHECK(solver::next_checkpoint_step(8, 4, 10) == 10);
  CHECK(solver::next_checkpoint_step(9, 4, 10) == 10);
  // k past the run: only the last step after step 0.
  CHECK(solver::next_checkpoint_step(0, 50, 10) == 10);
  CHECK(solver::next_checkpoint_step(0, 1, 3) == 1);
  CHECK(solver::next_checkpoint_step(2, 1, 3) == 3);
}

TEST_CASE("A task file that is not JSON is an Input error naming the file", "[common]") {
  solver::test::ScratchDir scratch("task-malformed");
  const std::filesystem::path path = scratch / "task.json";
  solver::test::write_text(path, R"({"id": "x", "seed": )");
  try {
    solver::load_task_file(path);
    FAIL("a truncated task file was accepted");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::Contains(path.string()) && Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("Bad task fields are Input errors naming the field", "[common]") {
  json task = example_task_json();
  SECTION("missing field") {
    task["training"]["optimizer"].erase("lr");
    require_rejected(task, "task.training.optimizer.lr", "missing");
  }
  SECTION("misspelt optional field") {
    task["training"].erase("grad_clip_norm");
    task["training"]["grad_clip_nrom"] = 1.0;
    require_rejected(task, "task.training.grad_clip_nrom", "unknown field");
  }
  SECTION("unknown model kind") {
    task["model"]["kind"] = "transformer";
    require_rejected(task, "task.model.kind", "unknown model \"transformer\"");
  }
  SECTION("negative batch size") {
    task["training"]["batch_size"] = -3;
    require_rejected(task, "task.training.batch_size", "got -3");
  }
  SECTION("both epochs and steps") {
    task["training"]["steps"] = 500;
    require_rejected(task, "task.training.epochs", "exactly one of epochs and steps");
  }
  SECTION("sha256 that is not hex") {
    task["dataset"]["train_images"]["sha256"] = "B0564C3E";
    require_rejected(task, "task.dataset.train_images.sha256", "64 lowercase hex digits");
  }
  SECTION("unknown precision") {
    task["training"]["precision"] = "fp16";
    require_rejected(task, "task.training.precision", "unknown precision \"fp16\" (expected fp32 or bf16)");
  }
  SECTION("remote file without a declared size") {
    task["dataset"]["train_images"]["location"] = "https://data.example/train-images.gz";
    require_rejected(task, "task.dataset.train_images.size", "a remote file must declare its size");
  }
  SECTION("size of the wrong type") {
    task["dataset"]["train_images"]["size"] = -1;
    require_rejected(task, "task.dataset.train_images.size", "");
  }
  SECTION("seed of the wrong type") {
    task["seed"] = "20261125";
    require_rejected(task, "task.seed", "non-negative integer");
  }
}

TEST_CASE("checked_local_file refuses missing files and hash mismatches", "[common]") {
  solver::test::ScratchDir scratch("task-files");
  const std::filesystem::path path = scratch / "labels.bin";
  solver::test::write_text(path, "labels");
  const std::string actual = solver::sha256_hex(std::string_view("labels"));

  CHECK(solver::checked_local_file({path.string(), actual}, "dataset.train_labels") == path);

  const std::string wrong(64, '0');
  CHECK_THROWS_WITH(solver::checked_local_file({path.string(), wrong}, "dataset.train_labels"),
                    Catch::StartsWith("dataset.train_labels: sha256 mismatch") && Catch::Contains(wrong) && Catch::Contains(actual));
  CHECK_THROWS_WITH(solver::checked_local_file({(scratch / "absent.bin").string(), actual}, "dataset.test_labels"),
                    Catch::StartsWith("dataset.test_labels: ") && Catch::Contains("absent.bin does not exist"));
  CHECK_THROWS_WITH(solver::checked_local_file({"ipfs://bafy", actual}, "model.file"), Catch::Contains("is remote"));
  CHECK_THROWS_WITH(solver::checked_local_file({path.string(), actual, 7}, "dataset.train_labels"),
                    Catch::Contains("has 6 bytes, the task says 7"));
}

TEST_CASE("A declared size is part of the task's hash, and a task without sizes keeps its hash", "[common]") {
  json task = example_task_json();
  const std::string without = solver::task_sha256(solver::parse_task(task, "/tmp"));
  task["dataset"]["train_images"]["size"] = 26421880;
  const solver::Task sized = solver::parse_task(task, "/tmp");
  CHECK(sized.dataset.train_images.size == 26421880u);
  CHECK(solver::task_sha256(sized) != without);
  CHECK(solver::task_to_json(sized)["dataset"]["train_images"]["size"] == 26421880);
  CHECK_FALSE(solver::task_to_json(solver::parse_task(example_task_json(), "/tmp"))["dataset"]["train_images"].contains("size"));
}

TEST_CASE("Learning-rate schedules give the documented rates", "[common]") {
  solver::TrainingSpec training;
  training.optimizer.lr = 1.0;

  SECTION("constant") {
    CHECK(solver::learning_rate_at(training, 1, 100) == 1.0);
    CHECK(solver::learning_rate_at(training, 100, 100) == 1.0);
  }
  SECTION("cosine with warm-up") {
    training.schedule.kind = solver::ScheduleKind::Cosine;
    training.schedule.warmup_steps = 10;
    training.schedule.min_lr = 0.1;
    CHECK(solver::learning_rate_at(training, 1, 110) == Approx(0.1));
    CHECK(solver::learning_rate_at(training, 5, 110) == Approx(0.5));
    CHECK(solver::learning_rate_at(training, 10, 110) == Approx(1.0));
    CHECK(solver::learning_rate_at(training, 60, 110) == Approx(0.55));  // halfway: min + (lr - min) / 2
    CHECK(solver::learning_rate_at(training, 110, 110) == Approx(0.1));
  }
  SECTION("step decay") {
    training.schedule.kind = solver::ScheduleKind::Step;
    training.schedule.step_size = 10;
    training.schedule.gamma = 0.5;
    CHECK(solver::learning_rate_at(training, 1, 100) == 1.0);
    CHECK(solver::learning_rate_at(training, 10, 100) == 1.0);
    CHECK(solver::learning_rate_at(training, 11, 100) == 0.5);
    CHECK(solver::learning_rate_at(training, 25, 100) == 0.25);
  }
}

TEST_CASE("The text gpt example parses, round-trips to its hash, and bad gpt fields are Input errors naming the field", "[common]") {
  const std::filesystem::path path = solver::test::source_dir() / "configs/tasks/text-gpt.json";
  const solver::Task task = solver::load_task_file(path);
  CHECK(task.model.kind == solver::ModelKind::Gpt);
  CHECK(task.model.gpt.vocab_size == 256);
  CHECK(task.model.gpt.context == 64);
  CHECK(task.model.gpt.layers == 2);
  CHECK(task.model.gpt.heads == 2);
  CHECK(task.model.gpt.embed == 64);
  CHECK(task.dataset.format == solver::DatasetFormat::Tokens);
  CHECK(task.dataset.train_tokens.location == (solver::test::source_dir() / "configs/data/gpl3-train.bin").lexically_normal().string());
  CHECK(task.dataset.test_tokens.sha256 == "9bc1e1c18f56e1854a7773fdaf9699511e6c35cb91edb03886c3508733f933dc");
  const solver::Task again = solver::parse_task(solver::task_to_json(task), "/elsewhere");
  CHECK(solver::task_sha256(again) == solver::task_sha256(task));

  json bad = json::parse(solver::read_file(path));
  SECTION("embed not a multiple of heads") {
    bad["model"]["heads"] = 3;
    require_rejected(bad, "task.model.embed", "multiple of heads (3), got 64");
  }
  SECTION("zero layers") {
    bad["model"]["layers"] = 0;
    require_rejected(bad, "task.model.layers", "from 1 to 96, got 0");
  }
  SECTION("a vocabulary uint16 tokens cannot hold") {
    bad["model"]["vocab_size"] = 70000;
    require_rejected(bad, "task.model.vocab_size", "from 1 to 65536, got 70000");
  }
  SECTION("missing context") {
    bad["model"].erase("context");
    require_rejected(bad, "task.model.context", "missing");
  }
  SECTION("image fields in a token dataset") {
    bad["dataset"]["train_images"] = bad["dataset"]["train"];
    require_rejected(bad, "task.dataset.train_images", "unknown field");
  }
  SECTION("a gpt on images") {
    json images = example_task_json();
    images["model"] = bad["model"];
    require_rejected(images, "task.dataset.format", "\"idx\" does not fit model.kind \"gpt\"");
  }
  SECTION("an mlp on tokens") {
    bad["model"] = {{"kind", "mlp"}, {"hidden", {8}}};
    require_rejected(bad, "task.dataset.format", "\"tokens\" does not fit model.kind \"mlp\"");
  }
}
