#include "common/task.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/sha256.h"

namespace solver {
namespace {

using nlohmann::json;

void require(bool condition, const std::string& field, const std::string& message) {
  if (!condition) ObjectReader::fail(field, message);
}

// The names of a choice for an error message: "mlp, cnn, gpt or torchscript".
template <std::size_t N>
std::string alternatives(const std::array<std::string_view, N>& names) {
  std::string text;
  for (std::size_t i = 0; i < N; ++i) text += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(names[i]);
  return text;
}

// The choice the string at `key` names: the enum value at its name's place in `names`.
template <typename Choice, std::size_t N>
Choice read_choice(ObjectReader& reader, std::string_view key, const std::array<std::string_view, N>& names,
                   std::string_view what) {
  const std::string name = reader.string(key);
  const auto found = std::find(names.begin(), names.end(), name);
  if (found == names.end())
    ObjectReader::fail(reader.field(key), "unknown " + std::string(what) + " \"" + name + "\" (expected " + alternatives(names) + ")");
  return static_cast<Choice>(found - names.begin());
}

std::string resolve_location(const std::string& location, const std::filesystem::path& base_dir) {
  constexpr std::string_view kFileScheme = "file://";
  if (location.starts_with(kFileScheme)) return location.substr(kFileScheme.size());
  if (location.find("://") != std::string::npos) return location;
  const std::filesystem::path path(location);
  return (path.is_absolute() ? path : base_dir / path).lexically_normal().string();
}

FileRef read_file_ref(ObjectReader reader, const std::filesystem::path& base_dir) {
  FileRef file;
  file.location = resolve_location(reader.string("location"), base_dir);
  file.sha256 = reader.sha256("sha256");
  if (reader.has("size")) file.size = reader.unsigned_integer("size");
  require(file.size || !is_remote_location(file.location), reader.field("size"),
          "missing: a remote file must declare its size in bytes, so that its download can stop there");
  reader.finish();
  return file;
}

// A bounded positive integer field of the gpt model.
std::int64_t read_size(ObjectReader& reader, std::string_view key, std::int64_t max) {
  const std::int64_t value = reader.integer(key);
  require(value > 0 && value <= max, reader.field(key),
          "expected an integer from 1 to " + std::to_string(max) + ", got " + std::to_string(value));
  return value;
}

// Bounds keep a typo from asking for a model no rig can hold; vocab_size <= 2^16 because
// token files hold uint16.
GptSpec read_gpt(ObjectReader& reader) {
  GptSpec gpt;
  gpt.vocab_size = read_size(reader, "vocab_size", 65536);
  gpt.context = read_size(reader, "context", 8192);
  gpt.layers = read_size(reader, "layers", 96);
  gpt.heads = read_size(reader, "heads", 128);
  gpt.embed = read_size(reader, "embed", 16384);
  require(gpt.embed % gpt.heads == 0, reader.field("embed"),
          "must be a multiple of heads (" + std::to_string(gpt.heads) + "), got " + std::to_string(gpt.embed));
  return gpt;
}

// "size" only when declared, so tasks written before it existed keep their hash.
json file_ref_json(const FileRef& file) {
  json ref{{"location", file.location}, {"sha256", file.sha256}};
  if (file.size) ref["size"] = *file.size;
  return ref;
}

// A model kind: the dataset format it trains on, and its own fields of task.model, read and
// written. One entry per kind, in ModelKind's order.
struct ModelKindEntry {
  ModelKind kind;
  DatasetFormat trains_on;
  void (*read)(ObjectReader& reader, ModelSpec& model, const std::filesystem::path& base_dir);
  void (*write)(const ModelSpec& model, json& out);
  FileRef ModelSpec::*file;  // the module file the model is loaded from (task_files); nullptr for a built-in
};

constexpr ModelKindEntry kModelKindTable[] = {
    {ModelKind::Mlp, DatasetFormat::Idx,
     [](ObjectReader& reader, ModelSpec& model, const std::filesystem::path&) { model.hidden = reader.positive_integers("hidden"); },
     [](const ModelSpec& model, json& out) { out["hidden"] = model.hidden; }, nullptr},
    {ModelKind::Cnn, DatasetFormat::Idx,
     [](ObjectReader& reader, ModelSpec& model, const std::filesystem::path&) {
       model.channels = reader.positive_integers("channels");
       require(model.channels.size() <= 4, reader.field("channels"),
               "at most 4 conv blocks (each halves the image), got " + std::to_string(model.channels.size()));
     },
     [](const ModelSpec& model, json& out) { out["channels"] = model.channels; }, nullptr},
    {ModelKind::Gpt, DatasetFormat::Tokens,
     [](ObjectReader& reader, ModelSpec& model, const std::filesystem::path&) { model.gpt = read_gpt(reader); },
     [](const ModelSpec& model, json& out) {
       const GptSpec& gpt = model.gpt;
       out.update({{"vocab_size", gpt.vocab_size}, {"context", gpt.context}, {"layers", gpt.layers},
                   {"heads", gpt.heads}, {"embed", gpt.embed}});
     },
     nullptr},
    {ModelKind::TorchScript, DatasetFormat::Idx,
     [](ObjectReader& reader, ModelSpec& model, const std::filesystem::path& base_dir) {
       model.file = read_file_ref(reader.object("file"), base_dir);
     },
     [](const ModelSpec& model, json& out) { out["file"] = file_ref_json(model.file); }, &ModelSpec::file},
};

constexpr bool in_model_kind_order() {
  for (std::size_t i = 0; i < std::size(kModelKindTable); ++i)
    if (static_cast<std::size_t>(kModelKindTable[i].kind) != i) return false;
  return std::size(kModelKindTable) == kModelKinds.size();
}
static_assert(in_model_kind_order(), "kModelKindTable: one entry per model kind, in ModelKind's order");

const ModelKindEntry& entry_of(ModelKind kind) { return kModelKindTable[static_cast<std::size_t>(kind)]; }

ModelSpec read_model(ObjectReader reader, const std::filesystem::path& base_dir) {
  ModelSpec model;
  model.kind = read_choice<ModelKind>(reader, "kind", kModelKinds, "model");
  entry_of(model.kind).read(reader, model, base_dir);
  reader.finish();
  return model;
}

DatasetSpec read_dataset(ObjectReader reader, const std::filesystem::path& base_dir) {
  DatasetSpec dataset;
  dataset.format = read_choice<DatasetFormat>(reader, "format", kDatasetFormats, "format");
  if (dataset.format == DatasetFormat::Tokens) {
    dataset.train_tokens = read_file_ref(reader.object("train"), base_dir);
    dataset.test_tokens = read_file_ref(reader.object("test"), base_dir);
    reader.finish();
    return dataset;
  }
  dataset.train_images = read_file_ref(reader.object("train_images"), base_dir);
  dataset.train_labels = read_file_ref(reader.object("train_labels"), base_dir);
  dataset.test_images = read_file_ref(reader.object("test_images"), base_dir);
  dataset.test_labels = read_file_ref(reader.object("test_labels"), base_dir);
  if (reader.has("normalize")) {
    ObjectReader normalize = reader.object("normalize");
    dataset.normalize_mean = normalize.number("mean");
    dataset.normalize_std = normalize.number("std");
    require(dataset.normalize_std > 0, normalize.field("std"), "must be positive");
    normalize.finish();
  }
  reader.finish();
  return dataset;
}

OptimizerSpec read_optimizer(ObjectReader reader) {
  OptimizerSpec optimizer;
  optimizer.kind = read_choice<OptimizerKind>(reader, "kind", kOptimizerKinds, "optimizer");
  optimizer.lr = reader.number("lr");
  require(optimizer.lr > 0, reader.field("lr"), "must be positive, got " + std::to_string(optimizer.lr));
  optimizer.weight_decay = reader.number_or("weight_decay", 0.0);
  require(optimizer.weight_decay >= 0, reader.field("weight_decay"), "must be >= 0");
  if (optimizer.kind == OptimizerKind::Sgd) {
    optimizer.momentum = reader.number_or("momentum", 0.0);
    optimizer.nesterov = reader.boolean_or("nesterov", false);
    require(optimizer.momentum >= 0 && optimizer.momentum < 1, reader.field("momentum"), "must be in [0, 1)");
    require(!optimizer.nesterov || optimizer.momentum > 0, reader.field("nesterov"), "needs momentum > 0");
  } else {
    optimizer.beta1 = reader.number_or("beta1", 0.9);
    optimizer.beta2 = reader.number_or("beta2", 0.999);
    optimizer.eps = reader.number_or("eps", 1e-8);
    require(optimizer.beta1 >= 0 && optimizer.beta1 < 1, reader.field("beta1"), "must be in [0, 1)");
    require(optimizer.beta2 >= 0 && optimizer.beta2 < 1, reader.field("beta2"), "must be in [0, 1)");
    require(optimizer.eps > 0, reader.field("eps"), "must be positive");
  }
  reader.finish();
  return optimizer;
}

ScheduleSpec read_schedule(ObjectReader reader) {
  ScheduleSpec schedule;
  schedule.kind = read_choice<ScheduleKind>(reader, "kind", kScheduleKinds, "schedule");
  schedule.warmup_steps = reader.integer_or("warmup_steps", 0);
  require(schedule.warmup_steps >= 0, reader.field("warmup_steps"), "must be >= 0");
  if (schedule.kind == ScheduleKind::Cosine) {
    schedule.min_lr = reader.number_or("min_lr", 0.0);
    require(schedule.min_lr >= 0, reader.field("min_lr"), "must be >= 0");
  } else if (schedule.kind == ScheduleKind::Step) {
    schedule.step_size = reader.integer("step_size");
    schedule.gamma = reader.number_or("gamma", 0.1);
    require(schedule.step_size > 0, reader.field("step_size"), "must be positive");
    require(schedule.gamma > 0, reader.field("gamma"), "must be positive");
  }
  reader.finish();
  return schedule;
}

TrainingSpec read_training(ObjectReader reader) {
  TrainingSpec training;
  training.optimizer = read_optimizer(reader.object("optimizer"));
  if (reader.has("schedule")) training.schedule = read_schedule(reader.object("schedule"));
  training.batch_size = reader.integer("batch_size");
  require(training.batch_size > 0, reader.field("batch_size"), "expected a positive integer, got " + std::to_string(training.batch_size));
  training.epochs = reader.integer_or("epochs", 0);
  training.steps = reader.integer_or("steps", 0);
  require((training.epochs > 0) != (training.steps > 0), reader.field("epochs"),
          "set exactly one of epochs and steps, each a positive integer");
  training.grad_clip_norm = reader.number_or("grad_clip_norm", 0.0);
  require(training.grad_clip_norm >= 0, reader.field("grad_clip_norm"), "must be >= 0 (0 turns clipping off)");
  if (reader.has("precision")) training.precision = read_choice<Precision>(reader, "precision", kPrecisions, "precision");
  reader.finish();
  return training;
}

BudgetSpec read_budget(ObjectReader reader) {
  BudgetSpec budget;
  budget.max_steps = reader.integer_or("max_steps", 0);
  budget.max_wall_seconds = reader.number_or("max_wall_seconds", 0.0);
  budget.max_memory_mb = reader.integer_or("max_memory_mb", 0);
  require(budget.max_steps >= 0, reader.field("max_steps"), "must be >= 0 (0 = no limit)");
  require(budget.max_wall_seconds >= 0, reader.field("max_wall_seconds"), "must be >= 0 (0 = no limit)");
  require(budget.max_memory_mb >= 0, reader.field("max_memory_mb"), "must be >= 0 (0 = no limit)");
  reader.finish();
  return budget;
}

}  // namespace

Task parse_task(const json& input, const std::filesystem::path& base_dir) {
  ObjectReader reader(input, "task");
  Task task;
  task.id = reader.string("id");
  task.seed = reader.unsigned_integer("seed");
  task.model = read_model(reader.object("model"), base_dir);
  task.dataset = read_dataset(reader.object("dataset"), base_dir);
  const DatasetFormat trains_on = entry_of(task.model.kind).trains_on;
  require(task.dataset.format == trains_on, "task.dataset.format",
          fmt::format("\"{}\" does not fit model.kind \"{}\", which trains on {}", name_of(task.dataset.format),
                      name_of(task.model.kind), name_of(trains_on)));
  task.training = read_training(reader.object("training"));
  {
    ObjectReader proof = reader.object("proof");
    task.checkpoint_every = proof.integer("checkpoint_every");
    require(task.checkpoint_every > 0, "task.proof.checkpoint_every", "expected a positive integer, got " + std::to_string(task.checkpoint_every));
    proof.finish();
  }
  if (reader.has("budget")) task.budget = read_budget(reader.object("budget"));
  reader.finish();
  return task;
}

Task load_task_file(const std::filesystem::path& path) {
  const json parsed = parse_json_document(read_file(path), "task file " + path.string());
  try {
    return parse_task(parsed, std::filesystem::absolute(path).parent_path());
  } catch (const Error& error) {
    throw error.with_context("task file " + path.string());
  }
}

json task_to_json(const Task& task) {
  json model = {{"kind", std::string(name_of(task.model.kind))}};
  entry_of(task.model.kind).write(task.model, model);

  const DatasetSpec& data = task.dataset;
  json dataset = {{"format", std::string(name_of(data.format))}};
  if (data.format == DatasetFormat::Tokens) {
    dataset.update({{"train", file_ref_json(data.train_tokens)}, {"test", file_ref_json(data.test_tokens)}});
  } else {
    dataset.update({{"train_images", file_ref_json(data.train_images)},
                    {"train_labels", file_ref_json(data.train_labels)},
                    {"test_images", file_ref_json(data.test_images)},
                    {"test_labels", file_ref_json(data.test_labels)},
                    {"normalize", {{"mean", data.normalize_mean}, {"std", data.normalize_std}}}});
  }

  const OptimizerSpec& opt = task.training.optimizer;
  json optimizer = {{"kind", std::string(name_of(opt.kind))}, {"lr", opt.lr}, {"weight_decay", opt.weight_decay}};
  if (opt.kind == OptimizerKind::Sgd) {
    optimizer["momentum"] = opt.momentum;
    optimizer["nesterov"] = opt.nesterov;
  } else {
    optimizer["beta1"] = opt.beta1;
    optimizer["beta2"] = opt.beta2;
    optimizer["eps"] = opt.eps;
  }
  const ScheduleSpec& sched = task.training.schedule;
  json schedule = {{"kind", std::string(name_of(sched.kind))}, {"warmup_steps", sched.warmup_steps}};
  if (sched.kind == ScheduleKind::Cosine) schedule["min_lr"] = sched.min_lr;
  if (sched.kind == ScheduleKind::Step) {
    schedule["step_size"] = sched.step_size;
    schedule["gamma"] = sched.gamma;
  }
  json training = {{"optimizer", optimizer},
                   {"schedule", schedule},
                   {"batch_size", task.training.batch_size},
                   {"grad_clip_norm", task.training.grad_clip_norm}};
  if (task.training.epochs > 0) training["epochs"] = task.training.epochs;
  if (task.training.steps > 0) training["steps"] = task.training.steps;
  // Written only when not the default, so that tasks from before the field existed keep their hash.
  if (task.training.precision != Precision::Fp32) training["precision"] = std::string(name_of(task.training.precision));

  return {{"id", task.id},
          {"seed", task.seed},
          {"model", model},
          {"dataset", dataset},
          {"training", training},
          {"proof", {{"checkpoint_every", task.checkpoint_every}}},
          {"budget",
           {{"max_steps", task.budget.max_steps},
            {"max_wall_seconds", task.budget.max_wall_seconds},
            {"max_memory_mb", task.budget.max_memory_mb}}}};
}

std::string canonical_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::strict); }

std::string task_sha256(const Task& task) { return sha256_hex(canonical_json(task_to_json(task))); }

std::int64_t total_steps(const Task& task, std::int64_t train_sample_count) {
  if (task.training.steps > 0) return task.training.steps;
  return task.training.epochs * (train_sample_count / task.training.batch_size);
}

std::int64_t next_checkpoint_step(std::int64_t step, std::int64_t every, std::int64_t total_steps) {
  return std::min((step / every + 1) * every, total_steps);
}

double learning_rate_at(const TrainingSpec& training, std::int64_t step, std::int64_t total) {
  const ScheduleSpec& schedule = training.schedule;
  const double base = training.optimizer.lr;
  if (step <= schedule.warmup_steps) return base * static_cast<double>(step) / static_cast<double>(schedule.warmup_steps);
  if (schedule.kind == ScheduleKind::Cosine) {
    const double span = static_cast<double>(std::max<std::int64_t>(1, total - schedule.warmup_steps));
    const double progress = static_cast<double>(step - schedule.warmup_steps) / span;
    return schedule.min_lr + 0.5 * (base - schedule.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
  }
  if (schedule.kind == ScheduleKind::Step) {
    const auto decays = (step - 1 - schedule.warmup_steps) / schedule.step_size;
    return base * std::pow(schedule.gamma, static_cast<double>(decays));
  }
  return base;
}

bool is_remote_location(std::string_view location) {
  return location.starts_with("https://") || location.starts_with("http://") || location.starts_with("ipfs://") ||
         location.starts_with("s3://");
}

std::vector<std::pair<FileRef*, std::string>> task_files(Task& task) {
  DatasetSpec& data = task.dataset;
  std::vector<std::pair<FileRef*, std::string>> files;
  if (data.format == DatasetFormat::Tokens)
    files = {{&data.train_tokens, "dataset.train"}, {&data.test_tokens, "dataset.test"}};
  else
    files = {{&data.train_images, "dataset.train_images"},
             {&data.train_labels, "dataset.train_labels"},
             {&data.test_images, "dataset.test_images"},
             {&data.test_labels, "dataset.test_labels"}};
  if (FileRef ModelSpec::*file = entry_of(task.model.kind).file) files.emplace_back(&(task.model.*file), "model.file");
  return files;
}

std::filesystem::path checked_local_file(const FileRef& file, std::string_view what) {
  const std::string field(what);
  if (file.local_copy.empty() && is_remote_location(file.location))
    throw Error(ErrorKind::Input, field + ": location " + file.location +
                                      " is remote; solver run reads local paths and file:// only (the agent fetches remote data)");
  const std::filesystem::path path = file.local_copy.empty() ? std::filesystem::path(file.location) : file.local_copy;
  if (!std::filesystem::is_regular_file(path))
    throw Error(ErrorKind::Input, field + ": file " + path.string() + " does not exist");
  if (file.size && std::filesystem::file_size(path) != *file.size)
    throw Error(ErrorKind::Input, field + ": " + path.string() + " has " + std::to_string(std::filesystem::file_size(path)) +
                                      " bytes, the task says " + std::to_string(*file.size));
  const std::string actual = sha256_file_hex(path);
  if (actual != file.sha256)
    throw Error(ErrorKind::Input, field + ": sha256 mismatch for " + path.string() + ": the task says " + file.sha256 +
                                      ", the file has " + actual);
  return path;
}

}  // namespace solver
