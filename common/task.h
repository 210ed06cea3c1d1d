// A training task: what a submitter asks a solver to train, parsed and validated.
// The format is documented in docs/task-format.md. Every field is checked at parse time so
// that nothing touches a GPU or the disk with a bad task; errors name the field, the value
// and what was expected. task_to_json() gives the normalised form (defaults filled in, local
// paths absolute) whose canonical bytes define the task hash recorded in every bundle.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace solver {

// A file a task depends on. `location` is an absolute local path after parsing, or a URL
// (ipfs://, s3://, https://) that the agent's fetcher resolves.
struct FileRef {
  std::string location;
  std::string sha256;  // lowercase hex
  // Bytes. Required for remote locations: a download stops there, so a server cannot fill the
  // rig's disk. Optional for local files, whose size the disk already tells.
  std::optional<std::uint64_t> size;
  // Where the agent's fetcher put a remote file. Not part of the task: never hashed or written.
  std::filesystem::path local_copy;
};

// The sizes of the built-in decoder-only transformer ("gpt").
struct GptSpec {
  std::int64_t vocab_size = 0;  // tokens are 0 to vocab_size - 1
  std::int64_t context = 0;     // tokens a sample predicts from (block size)
  std::int64_t layers = 0;
  std::int64_t heads = 0;
  std::int64_t embed = 0;  // a multiple of heads
};

// The choices a task makes, each spelt in the task's JSON by its name in the table beside it
// (in the enum's order; name_of gives it). Only parse_task and task_to_json read or write the
// names: the code switches on the enums.

// The built-in models and a TorchScript module. Adding a kind: its name here, its entry in
// common/task.cpp's table (its fields, its dataset format) and its builder in train/models.cpp.
enum class ModelKind { Mlp, Cnn, Gpt, TorchScript };
// Every model kind a task may name; the agent advertises them all and the market matches on them.
inline constexpr std::array<std::string_view, 4> kModelKinds = {"mlp", "cnn", "gpt", "torchscript"};

// "idx": MNIST-style images and labels, optionally gzip-compressed. "tokens": flat
// little-endian uint16 files (nanoGPT's .bin).
enum class DatasetFormat { Idx, Tokens };
inline constexpr std::array<std::string_view, 2> kDatasetFormats = {"idx", "tokens"};

enum class OptimizerKind { Sgd, Adam, AdamW };
inline constexpr std::array<std::string_view, 3> kOptimizerKinds = {"sgd", "adam", "adamw"};

enum class ScheduleKind { Constant, Cosine, Step };
inline constexpr std::array<std::string_view, 3> kScheduleKinds = {"constant", "cosine", "step"};

// Bf16 autocasts the forward pass and the loss as torch.autocast does (matmuls and
// convolutions in bf16; weights and optimizer state stay fp32).
enum class Precision { Fp32, Bf16 };
inline constexpr std::array<std::string_view, 2> kPrecisions = {"fp32", "bf16"};

constexpr std::string_view name_of(ModelKind kind) { return kModelKinds[static_cast<std::size_t>(kind)]; }
constexpr std::string_view name_of(DatasetFormat format) { return kDatasetFormats[static_cast<std::size_t>(format)]; }
constexpr std::string_view name_of(OptimizerKind kind) { return kOptimizerKinds[static_cast<std::size_t>(kind)]; }
constexpr std::string_view name_of(ScheduleKind kind) { return kScheduleKinds[static_cast<std::size_t>(kind)]; }
constexpr std::string_view name_of(Precision precision) { return kPrecisions[static_cast<std::size_t>(precision)]; }

struct ModelSpec {
  ModelKind kind = ModelKind::Mlp;
  std::vector<std::int64_t> hidden;    // mlp: widths of the hidden layers
  std::vector<std::int64_t> channels;  // cnn: output channels of each conv block
  GptSpec gpt;                    // gpt
  FileRef file;                   // torchscript: the exported module
};

struct DatasetSpec {
  DatasetFormat format = DatasetFormat::Idx;
  FileRef train_images, train_labels, test_images, test_labels;  // idx
  FileRef train_tokens, test_tokens;  // tokens
  double normalize_mean = 0.0;  // idx: pixels are scaled to [0, 1], then (x - mean) / std
  double normalize_std = 1.0;
};

struct OptimizerSpec {
  OptimizerKind kind = OptimizerKind::Sgd;
  double lr = 0.0;
  double momentum = 0.0;  // sgd
  bool nesterov = false;  // sgd
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam, adamw
  double weight_decay = 0.0;  // sgd/adam: L2 added to the gradient; adamw: decoupled
};

struct ScheduleSpec {
  ScheduleKind kind = ScheduleKind::Constant;
  std::int64_t warmup_steps = 0;  // linear warm-up from lr/warmup to lr
  double min_lr = 0.0;            // cosine: the floor reached at the last step
  std::int64_t step_size = 0;     // step: multiply by gamma every step_size steps
  double gamma = 0.1;
};

struct TrainingSpec {
  OptimizerSpec optimizer;
  ScheduleSpec schedule;
  std::int64_t batch_size = 0;
  std::int64_t epochs = 0;  // exactly one of epochs and steps is set
  std::int64_t steps = 0;
  double grad_clip_norm = 0.0;  // 0 = no clipping
  Precision precision = Precision::Fp32;
};

struct BudgetSpec {  // 0 = no limit
  std::int64_t max_steps = 0;
  double max_wall_seconds = 0.0;
  std::int64_t max_memory_mb = 0;
};

struct Task {
  std::string id;
  std::uint64_t seed = 0;
  ModelSpec model;
  DatasetSpec dataset;
  TrainingSpec training;
  std::int64_t checkpoint_every = 0;  // proof.checkpoint_every: k
  BudgetSpec budget;
};

// Parses and validates a task. Relative local paths resolve against `base_dir`.
// Throws Error(Input) naming the field ("task.training.batch_size: expected a positive integer, got -3").
Task parse_task(const nlohmann::json& json, const std::filesystem::path& base_dir);
// Reads, parses and validates a task file. Throws Error(Input) or Error(Io).
Task load_task_file(const std::filesystem::path& path);

nlohmann::json task_to_json(const Task& task);
// sha256 of the canonical bytes of task_to_json(task).
std::string task_sha256(const Task& task);

// Compact JSON with sorted keys and no whitespace: the bytes we hash and sign.
std::string canonical_json(const nlohmann::json& json);

// Total optimizer steps of the run, given the number of training samples.
std::int64_t total_steps(const Task& task, std::int64_t train_sample_count);
// The checkpoint schedule of a run of `total_steps` steps with a checkpoint every `every` (> 0)
// steps: steps 0, every, 2 every, ... and the last step, so the last interval may be shorter.
// Returns the step of the first checkpoint after `step` (0 <= step < total_steps).
std::int64_t next_checkpoint_step(std::int64_t step, std::int64_t every, std::int64_t total_steps);
// The learning rate used by 1-based step `step` of a run of `total` steps.
double learning_rate_at(const TrainingSpec& training, std::int64_t step, std::int64_t total);

// Whether a location is fetched by the agent (https://, http://, ipfs://, s3://), not read from this disk.
bool is_remote_location(std::string_view location);

// Every file the task depends on (its data for its dataset format, and a TorchScript model),
// each with its field name for errors ("dataset.train_images"): what a fetcher resolves.
std::vector<std::pair<FileRef*, std::string>> task_files(Task& task);

// The local path of a file (its local_copy when fetched), after checking it exists and matches its sha256.
// `what` names the field in errors ("dataset.train_images"). Throws Error(Input).
std::filesystem::path checked_local_file(const FileRef& file, std::string_view what);

}  // namespace solver
