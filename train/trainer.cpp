// The Trainer: data, model and optimizer of one task on its device (plus model replicas for
// data-parallel shards), and the one training step that both train() and replay() run.
// Invariant (the reproducibility contract of trainer.h): everything a step computes is a
// function of the state before it and of (step, indices, lr); the step re-seeds torch from the
// step number, the batch comes from the indices, and nothing else (wall clock, thread timing,
// call history) may reach the numbers.
// Prefetching changes when a batch is gathered, not what it holds; bf16 autocast is part of the
// task, so solver and verifier run the same numerics; the shard count is part of the runtime, and
// where the shards run is not (replicas compute on exact copies, summed in a fixed order).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "train/trainer.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/stack.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "common/data_order.h"
#include "common/device.h"
#include "common/error.h"
#include "common/log.h"
#include "common/version.h"
#include "train/detail/data.h"
#include "train/detail/device.h"
#include "train/detail/model.h"
#include "train/detail/optimizer.h"
#include "train/detail/step_watchdog.h"

static_assert(std::endian::native == std::endian::little, "checkpoint bytes are little-endian copies of tensor memory");

namespace solver::train {
namespace {

using detail::NamedTensor;
using detail::require_usable_cuda;
using detail::resolved_threads;
using detail::translating_torch_errors;
using Clock = std::chrono::steady_clock;

// Images, or gpt labels (samples x context), per evaluation batch.
constexpr std::int64_t kEvaluationBatchSize = 1000;
constexpr std::int64_t kEvaluationTokens = 16384;
// How often train() reads the resident memory for budget.max_memory_mb (and at its first step).
constexpr std::chrono::milliseconds kMemorySampleInterval{100};
// clip_grad_norm_'s guard against dividing by a zero norm.
constexpr double kClipEpsilon = 1e-6;
// Data-parallel shards per step at most: each is a whole model replica in memory.
constexpr int kMaxShards = 1024;
// step_time_limit_seconds: a step may take this share of budget.max_wall_seconds, and at least
// kStepLimitFloorSeconds of it.
constexpr double kStepLimitShareOfBudget = 0.1;
constexpr double kStepLimitFloorSeconds = 60.0;
// TrainerOptions::max_step_seconds at most: about 11 days, far from the clock's overflow.
constexpr double kMaxStepSeconds = 1e6;

// The LibTorch devices of a device list (common/device.h). Throws Error(Config) naming the bad entry.
std::vector<c10::Device> torch_devices(std::string_view list) {
  std::vector<c10::Device> devices;
  for (const Device& device : parse_device_list(list)) devices.push_back(detail::torch_device(device));
  return devices;
}

// The shard count for a request: 0 = one per device. Throws Error(Config) for a count out of
// range, Error(Input) for a batch the count does not split into equal shards.
int resolved_shards(int requested, std::size_t device_count, std::int64_t batch_size) {
  if (requested < 0 || requested > kMaxShards)
    throw Error(ErrorKind::Config, "shard count " + std::to_string(requested) + " is out of range, expected 0 (one per device) to " +
                                       std::to_string(kMaxShards));
  const int shards = requested > 0 ? requested : static_cast<int>(device_count);
  if (batch_size % shards != 0)
    throw Error(ErrorKind::Input, "training.batch_size: " + std::to_string(batch_size) + " does not split into " +
                                      std::to_string(shards) + " equal data-parallel shards; expected a multiple of " +
                                      std::to_string(shards));
  return shards;
}

// Process-wide switches: deterministic kernels (an op without one throws), no cuDNN autotuning
// (it picks kernels by timing), and a fixed intra-op thread count (CPU reductions split by it).
// TF32 is off for cuBLAS and cuDNN alike (LibTorch's defaults differ, and other code may flip
// them): "fp32" tasks compute in fp32 everywhere; the fast reduced precision is the task's
// explicit bf16.
void configure_determinism(int threads) {
  // cuBLAS is deterministic only with a fixed workspace; LibTorch refuses its matmuls otherwise.
  // It must be set before the first cuBLAS handle is made, so before the model reaches the GPU.
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  at::globalContext().setDeterministicAlgorithms(true, false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  at::set_num_threads(threads);
}

std::optional<checkpoint::DType> checkpoint_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return checkpoint::DType::F64;
    case at::kFloat: return checkpoint::DType::F32;
    case at::kHalf: return checkpoint::DType::F16;
    case at::kBFloat16: return checkpoint::DType::BF16;
    case at::kLong: return checkpoint::DType::I64;
    case at::kInt: return checkpoint::DType::I32;
    case at::kShort: return checkpoint::DType::I16;
    case at::kChar: return checkpoint::DType::I8;
    case at::kByte: return checkpoint::DType::U8;
    case at::kBool: return checkpoint::DType::Bool;
    default: return std::nullopt;
  }
}

at::ScalarType scalar_type(checkpoint::DType dtype) {
  switch (dtype) {
    case checkpoint::DType::F64: return at::kDouble;
    case checkpoint::DType::F32: return at::kFloat;
    case checkpoint::DType::F16: return at::kHalf;
    case checkpoint::DType::BF16: return at::kBFloat16;
    case checkpoint::DType::I64: return at::kLong;
    case checkpoint::DType::I32: return at::kInt;
    case checkpoint::DType::I16: return at::kShort;
    case checkpoint::DType::I8: return at::kChar;
    case checkpoint::DType::U8: return at::kByte;
    case checkpoint::DType::Bool: return at::kBool;
  }
  throw Error(ErrorKind::Internal, "checkpoint dtype " + std::to_string(static_cast<int>(dtype)) + " has no torch type");
}

std::string shape_text(c10::IntArrayRef sizes) {
  std::string text = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

checkpoint::Tensor checkpoint_tensor(const NamedTensor& named) {
  const at::Tensor host = named.tensor.detach().to(c10::kCPU).contiguous();
  const std::optional<checkpoint::DType> dtype = checkpoint_dtype(host.scalar_type());
  if (!dtype)
    throw Error(ErrorKind::Input, "tensor " + named.name + " has dtype " + std::string(c10::toString(host.scalar_type())) +
                                      ", which safetensors checkpoints cannot hold");
  checkpoint::Tensor tensor{named.name, *dtype, host.sizes().vec(), std::vector<std::byte>(host.nbytes())};
  if (!tensor.data.empty()) std::memcpy(tensor.data.data(), host.data_ptr(), tensor.data.size());
  return tensor;
}

// bf16 and fp16 values widened to fp32, which holds each of them exactly, so that a trace
// under autocast compares with the referee's fp32 distances; other tensors as they are.
NamedTensor widened(const NamedTensor& named) {
  const at::ScalarType type = named.tensor.scalar_type();
  if (type != at::kBFloat16 && type != at::kHalf) return named;
  return {named.name, named.tensor.to(at::kFloat)};
}

// Checks a checkpoint tensor against the tensor it is to replace; throws Error(Input) naming it.
void check_compatible(const checkpoint::Tensor& stored, const at::Tensor& target) {
  const at::ScalarType stored_type = scalar_type(stored.dtype);
  if (stored_type != target.scalar_type() || c10::IntArrayRef(stored.shape) != target.sizes())
    throw Error(ErrorKind::Input, "checkpoint: tensor " + stored.name + " is " + c10::toString(stored_type) + " " +
                                      shape_text(stored.shape) + ", expected " + c10::toString(target.scalar_type()) +
                                      " " + shape_text(target.sizes()));
  const auto expected_bytes = static_cast<std::size_t>(target.numel()) * target.element_size();
  if (stored.data.size() != expected_bytes)
    throw Error(ErrorKind::Input, "checkpoint: tensor " + stored.name + " holds " + std::to_string(stored.data.size()) +
                                      " bytes, expected " + std::to_string(expected_bytes) + " for its dtype and shape");
}

void copy_into(const at::Tensor& target, const checkpoint::Tensor& stored) {
  at::Tensor host = at::empty(target.sizes(), target.scalar_type());
  if (!stored.data.empty()) std::memcpy(host.data_ptr(), stored.data.data(), stored.data.size());
  target.detach().copy_(host);
}

std::int64_t metadata_integer(const checkpoint::Checkpoint& state, const std::string& key) {
  const auto entry = state.metadata.find(key);
  if (entry == state.metadata.end())
    throw Error(ErrorKind::Input, "checkpoint: metadata \"" + key + "\" is missing");
  std::int64_t value = -1;
  const std::string& text = entry->second;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || stop != text.data() + text.size() || value < 0)
    throw Error(ErrorKind::Input, "checkpoint: metadata \"" + key + "\" is \"" + text + "\", expected a non-negative integer");
  return value;
}

double resident_memory_mb() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return static_cast<double>(resident_pages) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

}  // namespace

double step_time_limit_seconds(const BudgetSpec& budget, double max_step_seconds) {
  if (budget.max_wall_seconds <= 0.0) return max_step_seconds;
  const double share = std::max(kStepLimitFloorSeconds, kStepLimitShareOfBudget * budget.max_wall_seconds);
  return std::min({share, budget.max_wall_seconds, max_step_seconds});
}

double replay_budget_seconds(const BudgetSpec& budget) { return kReplaySlack * budget.max_wall_seconds; }

struct Trainer::Impl {
  // The model again, for data-parallel shard s > 0 (shard 0 runs on the primary model). Its
  // tensors are in the primary's order; parameters and buffers are copied from the primary at
  // the start of every step, so a replica's own updates (say, running statistics) never last.
  struct Replica {
    c10::Device device;
    std::unique_ptr<detail::Model> model;
    std::vector<NamedTensor> parameters;
    std::vector<NamedTensor> trainable;
    std::vector<NamedTensor> buffers;
  };

  Task task;
  c10::Device device;  // the primary's: shard 0, the optimizer, evaluation
  int threads;
  detail::Dataset train_data;
  detail::Dataset test_data;
  std::unique_ptr<detail::Model> model;
  std::vector<NamedTensor> parameters;  // all, in the model's order
  std::vector<NamedTensor> trainable;   // those requiring gradients: what the optimizer updates
  std::vector<NamedTensor> buffers;
  std::unique_ptr<detail::Optimizer> optimizer;
  std::int64_t total_steps = 0;
  bool bf16_autocast = false;  // training.precision bf16
  std::vector<Replica> replicas;  // shards 1..S-1; empty for one shard
  double max_replay_seconds;      // TrainerOptions'; 0 = none
  double replay_seconds = 0.0;    // spent by replay() and evaluate() so far
  detail::StepWatchdog watchdog;  // times each step and each other pass of the model

  Impl(const Task& task_, const std::vector<c10::Device>& devices, int threads_, int shards, const TrainerOptions& options)
      : task(task_),
        device(devices.front()),
        threads(threads_),
        bf16_autocast(task.training.precision == Precision::Bf16),
        max_replay_seconds(options.max_replay_seconds),
        watchdog(max_replay_seconds > 0.0 ? std::min(options.max_step_seconds, max_replay_seconds)
                                          : step_time_limit_seconds(task.budget, options.max_step_seconds),
                 options.on_stuck_step) {
    for (const c10::Device& each : devices)
      if (each.is_cuda()) require_usable_cuda(each);
    configure_determinism(threads);

    detail::ModelShape shape;
    if (task.dataset.format == DatasetFormat::Tokens) {
      const GptSpec& gpt = task.model.gpt;
      train_data = detail::Dataset::load_tokens(task.dataset.train_tokens, "dataset.train", gpt.vocab_size, gpt.context);
      test_data = detail::Dataset::load_tokens(task.dataset.test_tokens, "dataset.test", gpt.vocab_size, gpt.context);
    } else {
      const detail::Normalization normalization{task.dataset.normalize_mean, task.dataset.normalize_std};
      train_data = detail::Dataset::load_idx(task.dataset.train_images, task.dataset.train_labels, "dataset.train", normalization);
      test_data = detail::Dataset::load_idx(task.dataset.test_images, task.dataset.test_labels, "dataset.test", normalization);
      check_images();
      shape = {1, train_data.height(), train_data.width(), train_data.max_label() + 1};
    }
    if (task.training.batch_size > train_data.size())
      throw Error(ErrorKind::Input, "training.batch_size: " + std::to_string(task.training.batch_size) +
                                        " exceeds the " + std::to_string(train_data.size()) + " training samples");
    model = detail::build_model(task, shape, device, watchdog);
    parameters = model->parameters();
    buffers = model->buffers();
    for (const NamedTensor& parameter : parameters)
      if (parameter.tensor.requires_grad()) trainable.push_back(parameter);
    if (trainable.empty()) throw Error(ErrorKind::Input, "model: no parameter requires a gradient, so there is nothing to train");
    optimizer = detail::make_optimizer(task.training.optimizer, trainable);
    for (int shard = 1; shard < shards; ++shard)
      replicas.push_back(make_replica(devices[static_cast<std::size_t>(shard) % devices.size()], shape));
    total_steps = solver::total_steps(task, train_data.size());
    log_debug("train", "task={} model={} parameters={} device={} threads={} shards={} precision={} steps={} step_limit_s={}",
              task.id, name_of(task.model.kind), parameters.size(), device.str(), threads, shards, name_of(task.training.precision),
              total_steps, watchdog.limit_seconds());
  }

  Replica make_replica(c10::Device replica_device, const detail::ModelShape& shape) {
    Replica replica{replica_device, detail::build_model(task, shape, replica_device, watchdog), {}, {}, {}};
    replica.parameters = replica.model->parameters();
    replica.buffers = replica.model->buffers();
    for (const NamedTensor& parameter : replica.parameters)
      if (parameter.tensor.requires_grad()) replica.trainable.push_back(parameter);
    if (replica.parameters.size() != parameters.size() || replica.trainable.size() != trainable.size() ||
        replica.buffers.size() != buffers.size())
      throw Error(ErrorKind::Internal, "model replica on " + replica_device.str() + " has " +
                                           std::to_string(replica.parameters.size()) + " parameters and " +
                                           std::to_string(replica.buffers.size()) + " buffers, the primary " +
                                           std::to_string(parameters.size()) + " and " + std::to_string(buffers.size()));
    return replica;
  }

  // A background thread gathers the next batch on a GPU (it overlaps the GPU's work) and on a
  // CPU with a core the step's threads leave free; where they use every core it would only
  // take time from them.
  bool gather_in_background() const {
    return device.is_cuda() || static_cast<unsigned>(threads) < std::thread::hardware_concurrency();
  }

  std::int64_t shard_count() const { return static_cast<std::int64_t>(replicas.size()) + 1; }

  void check_images() const {
    if (test_data.height() != train_data.height() || test_data.width() != train_data.width())
      throw Error(ErrorKind::Input, "dataset.test_images: images are " + std::to_string(test_data.height()) + "x" +
                                        std::to_string(test_data.width()) + ", expected the training images' " +
                                        std::to_string(train_data.height()) + "x" + std::to_string(train_data.width()));
    if (test_data.max_label() > train_data.max_label())
      throw Error(ErrorKind::Input, "dataset.test_labels: label " + std::to_string(test_data.max_label()) +
                                        " does not occur in training, whose labels are 0 to " +
                                        std::to_string(train_data.max_label()));
  }

  // Evaluation only reads the model; its batch size sets speed and memory, not the weights. It
  // shrinks with the shards per step, as a step's memory does, so that a run split into more
  // shards after running out of memory does not run out again in its evaluation.
  std::int64_t evaluation_batch_size() const {
    const std::int64_t whole = task.dataset.format != DatasetFormat::Tokens ? kEvaluationBatchSize
                                                                             : kEvaluationTokens / task.model.gpt.context;
    return std::max<std::int64_t>(1, whole / shard_count());
  }

  detail::AutocastGuard autocast() const { return detail::AutocastGuard(device, bf16_autocast); }

  // One training step, the same for train() and replay(). Its batch was requested from
  // `batches`; `next_indices` (empty: none) are requested once it is taken, so the next batch is
  // gathered while this step computes. Returns the batch's mean loss before the update. Throws
  // Error(Input) on a non-finite loss or gradient, before updating.
  float run_step(std::int64_t step, detail::BatchPrefetcher& batches, std::span<const std::uint32_t> next_indices,
                 double lr) {
    return translating_torch_errors(device, "training step " + std::to_string(step), [&] {
      const detail::Batch batch = batches.take();
      if (!next_indices.empty()) batches.request(next_indices);
      const at::Tensor loss = forward_backward(step, batch);
      const at::Tensor gradient_norm = clip_gradients();
      // One device-to-host transfer for both figures; float -> double -> float keeps the loss's bits.
      const at::Tensor figures = at::stack({loss.detach().to(at::kDouble), gradient_norm.to(at::kDouble)}).cpu();
      const float loss_value = static_cast<float>(figures.data_ptr<double>()[0]);
      const double gradient_norm_value = figures.data_ptr<double>()[1];
      if (!std::isfinite(loss_value) || !std::isfinite(gradient_norm_value))
        throw Error(ErrorKind::Input, fmt::format("non-finite loss/gradient at step {} (loss {}, gradient norm {}); "
                                                  "lower training.optimizer.lr or set training.grad_clip_norm",
                                                  step, loss_value, gradient_norm_value));
      optimizer->step(lr);
      clear_gradients();
      return loss_value;
    });
  }

  // The forward and backward pass of step `step` on its batch: leaves the gradient of the batch's
  // mean loss in the primary model's .grad and returns that loss. Each forward pass is seeded
  // just before it, so the step's random draws (dropout) depend on the step number alone.
  at::Tensor forward_backward(std::int64_t step, const detail::Batch& batch,
                              std::vector<NamedTensor>* traced_outputs = nullptr) {
    const std::uint64_t step_seed = derive_seed(task.seed, kStreamStep, static_cast<std::uint64_t>(step));
    if (!replicas.empty()) return sharded_forward_backward(step_seed, batch, traced_outputs);
    at::manual_seed(step_seed);
    const at::Tensor loss = forward_loss(*model, batch, traced_outputs);
    loss.backward();
    return loss;
  }

  // Data parallel (docs/gpu.md): shard s, the s-th of S equal contiguous parts of the batch, runs
  // forward and backward on replica s (shard 0 on the primary model), seeded with the step seed
  // for shard 0 and derive_seed(step seed, kStreamShard, s) otherwise. The gradients are copied
  // (exactly) to the primary device and summed there in shard order, ((g_0 + g_1) + g_2) ...,
  // then divided by S, which is what DDP does for a mean loss; the loss is the same fixed-order
  // mean. Not ncclAllReduce: its summation order depends on the rank count, the topology and the
  // NCCL version, so a verifier with another number of GPUs could not reproduce the bits; a
  // fixed-order sum of exact copies gives the same bits on one device as on S. The shards are
  // launched one after another from this thread; CUDA launches are asynchronous, so shards on
  // different GPUs compute at the same time, and the copies to the primary come after the last
  // launch.
  at::Tensor sharded_forward_backward(std::uint64_t step_seed, const detail::Batch& batch,
                                      std::vector<NamedTensor>* traced_outputs) {
    const std::int64_t shards = shard_count();
    const std::int64_t shard_samples = batch.inputs.size(0) / shards;
    const std::int64_t shard_labels = batch.labels.size(0) / shards;
    copy_state_to_replicas();
    std::vector<at::Tensor> losses;
    for (std::int64_t shard = 0; shard < shards; ++shard) {
      detail::Model& shard_model = shard == 0 ? *model : *replicas[static_cast<std::size_t>(shard) - 1].model;
      const c10::Device shard_device = shard == 0 ? device : replicas[static_cast<std::size_t>(shard) - 1].device;
      // Always a fresh copy: a shard's inputs then have the same layout and alignment (so the
      // same kernels) on the primary's device as on another one.
      const detail::Batch shard_batch{
          batch.inputs.narrow(0, shard * shard_samples, shard_samples)
              .to(shard_device, batch.inputs.scalar_type(), /*non_blocking=*/false, /*copy=*/true),
          batch.labels.narrow(0, shard * shard_labels, shard_labels)
              .to(shard_device, batch.labels.scalar_type(), /*non_blocking=*/false, /*copy=*/true)};
      at::manual_seed(shard == 0 ? step_seed : derive_seed(step_seed, kStreamShard, static_cast<std::uint64_t>(shard)));
      std::vector<NamedTensor> outputs;
      const at::Tensor loss = forward_loss(shard_model, shard_batch, traced_outputs ? &outputs : nullptr);
      loss.backward();
      for (NamedTensor& output : outputs)
        traced_outputs->push_back({output.name + " [shard " + std::to_string(shard) + "]", std::move(output.tensor)});
      losses.push_back(loss.detach());
    }
    sum_shard_gradients();
    at::Tensor total = losses[0].add(losses[1].to(device));
    for (std::size_t shard = 2; shard < losses.size(); ++shard) total.add_(losses[shard].to(device));
    return total.div_(static_cast<double>(shards));
  }

  // Exact copies of the primary's parameters and buffers into every replica.
  void copy_state_to_replicas() {
    at::NoGradGuard no_grad;
    for (Replica& replica : replicas) {
      for (std::size_t i = 0; i < parameters.size(); ++i) replica.parameters[i].tensor.detach().copy_(parameters[i].tensor);
      for (std::size_t i = 0; i < buffers.size(); ++i) replica.buffers[i].tensor.detach().copy_(buffers[i].tensor);
    }
  }

  // The primary's gradients become ((g_0 + g_1) + ... + g_{S-1}) / S, summed on the primary's
  // device; the replicas' gradients are dropped.
  void sum_shard_gradients() {
    at::NoGradGuard no_grad;
    const double shards = static_cast<double>(shard_count());
    for (std::size_t i = 0; i < trainable.size(); ++i) {
      const at::Tensor primary_gradient = trainable[i].tensor.grad();
      at::Tensor total;
      for (std::size_t replica = 0; replica < replicas.size(); ++replica) {
        const at::Tensor gradient = replicas[replica].trainable[i].tensor.grad();
        if (gradient.defined() != primary_gradient.defined())
          throw Error(ErrorKind::Internal, "parameter " + trainable[i].name + " has a gradient in shard " +
                                               (primary_gradient.defined() ? "0" : std::to_string(replica + 1)) +
                                               " but not in shard " +
                                               (primary_gradient.defined() ? std::to_string(replica + 1) : "0"));
        if (!gradient.defined()) continue;
        const at::Tensor copied = gradient.to(device);
        total = total.defined() ? total.add_(copied) : primary_gradient.add(copied);
      }
      if (total.defined()) trainable[i].tensor.mutable_grad() = total.div_(shards);
    }
    clear_replica_gradients();
  }

  // The mean cross-entropy of a model on a batch, under autocast as Python's
  // `with torch.autocast(...): loss = F.cross_entropy(model(x), y)`; backward runs outside it.
  at::Tensor forward_loss(detail::Model& net, const detail::Batch& batch,
                          std::vector<NamedTensor>* traced_outputs = nullptr) const {
    const detail::AutocastGuard autocast_on = autocast();
    const at::Tensor logits =
        traced_outputs ? net.forward_traced(batch.inputs, *traced_outputs) : net.forward(batch.inputs);
    return at::cross_entropy_loss(logits, batch.labels);
  }

  // The total L2 norm of the gradients, computed as torch.nn.utils.clip_grad_norm_ does (the
  // norm of the per-parameter norms); with training.grad_clip_norm > 0 the gradients are then
  // scaled by min(1, max / (total + 1e-6)), where Python's `float / tensor` is reciprocal() * float.
  at::Tensor clip_gradients() {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> norms;
    for (const NamedTensor& parameter : trainable)
      if (parameter.tensor.grad().defined()) norms.push_back(at::linalg_vector_norm(parameter.tensor.grad(), 2));
    const at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
    const double max_norm = task.training.grad_clip_norm;
    if (max_norm > 0.0) {
      const at::Tensor coefficient = total.add(kClipEpsilon).reciprocal().mul(max_norm).clamp_max(1.0);
      for (const NamedTensor& parameter : trainable)
        if (parameter.tensor.grad().defined()) parameter.tensor.grad().mul_(coefficient);
    }
    return total;
  }

  // Throws Error(Input) for a record whose step, batch size or sample indices do not fit the task.
  void check_record(const StepRecord& record, const std::string& where) const {
    if (record.step < 1) throw Error(ErrorKind::Input, where + ": step numbers start at 1");
    if (static_cast<std::int64_t>(record.indices.size()) != task.training.batch_size)
      throw Error(ErrorKind::Input, where + ": " + std::to_string(record.indices.size()) + " sample indices, expected " +
                                        std::to_string(task.training.batch_size) + " (training.batch_size)");
    for (const std::uint32_t index : record.indices)
      if (index >= train_data.size())
        throw Error(ErrorKind::Input, where + ": sample index " + std::to_string(index) + " is out of range, expected < " +
                                          std::to_string(train_data.size()));
  }

  // Drops the gradients (PyTorch's zero_grad(set_to_none=True)): the next backward assigns
  // fresh ones instead of accumulating into old storage.
  void clear_gradients() {
    for (const NamedTensor& parameter : trainable) parameter.tensor.mutable_grad().reset();
    clear_replica_gradients();
  }

  void clear_replica_gradients() {
    for (Replica& replica : replicas)
      for (const NamedTensor& parameter : replica.trainable) parameter.tensor.mutable_grad().reset();
  }

  // Every tensor of the training state under its checkpoint name, aliasing the live tensors.
  std::vector<NamedTensor> named_state() const {
    std::vector<NamedTensor> state;
    for (const NamedTensor& parameter : parameters) state.push_back({"param." + parameter.name, parameter.tensor});
    for (const NamedTensor& buffer : buffers) state.push_back({"buffer." + buffer.name, buffer.tensor});
    for (NamedTensor& slot : optimizer->state()) state.push_back({"optim." + slot.name, std::move(slot.tensor)});
    return state;
  }

  // Adds what a replay or evaluation took since `started` to the replay budget's account, then
  // throws Error(Budget) if the budget is spent; `where` says what ran last ("step 12").
  void charge_replay_budget(Clock::time_point& started, const std::string& where) {
    const Clock::time_point now = Clock::now();
    replay_seconds += std::chrono::duration<double>(now - started).count();
    started = now;
    if (max_replay_seconds > 0.0 && replay_seconds > max_replay_seconds)
      throw Error(ErrorKind::Budget, fmt::format("replay budget exceeded: the replays took {:.2f} s by the end of {}, "
                                                 "over the budget of {} s", replay_seconds, where, max_replay_seconds));
  }

  // Throws Error(Budget) before `what` runs if the replay budget is already spent.
  void require_replay_budget(const std::string& what) const {
    if (max_replay_seconds > 0.0 && replay_seconds > max_replay_seconds)
      throw Error(ErrorKind::Budget, fmt::format("replay budget exceeded before {}: the replays took {:.2f} s, over the "
                                                 "budget of {} s; not run", what, replay_seconds, max_replay_seconds));
  }

  // The memory budget is read from /proc only when `sample_memory` (the loop samples it every
  // kMemorySampleInterval, not every step: it is a system call and a parse).
  void enforce_budgets(std::int64_t step, double elapsed_seconds, std::int64_t last_checkpoint, bool sample_memory) const {
    const auto kept = [&] { return "; checkpoints up to step " + std::to_string(last_checkpoint) + " are kept"; };
    const double max_seconds = task.budget.max_wall_seconds;
    if (max_seconds > 0.0 && elapsed_seconds > max_seconds)
      throw Error(ErrorKind::Budget, fmt::format("budget.max_wall_seconds exceeded: {:.2f} s of training by step {}, "
                                                 "over the budget of {} s{}", elapsed_seconds, step, max_seconds, kept()));
    const std::int64_t max_mb = task.budget.max_memory_mb;
    if (max_mb > 0 && sample_memory) {
      const double resident_mb = resident_memory_mb();
      if (resident_mb > static_cast<double>(max_mb))
        throw Error(ErrorKind::Budget, fmt::format("budget.max_memory_mb exceeded: {:.0f} MB resident at step {}, "
                                                   "over the budget of {} MB{}", resident_mb, step, max_mb, kept()));
    }
  }
};

Trainer::Trainer(const Task& task, const TrainerOptions& options) {
  const std::vector<c10::Device> devices = torch_devices(options.device);
  const int threads = resolved_threads(options.threads);
  const int shards = resolved_shards(options.shards, devices.size(), task.training.batch_size);
  if (!(options.max_step_seconds > 0.0 && options.max_step_seconds <= kMaxStepSeconds))
    throw Error(ErrorKind::Config, fmt::format("max_step_seconds must be > 0 and at most {} (about 11 days), got {}",
                                               kMaxStepSeconds, options.max_step_seconds));
  // Infinite is allowed: twice a task's huge wall budget bounds nothing, but is no error.
  if (!(options.max_replay_seconds >= 0.0))
    throw Error(ErrorKind::Config, fmt::format("max_replay_seconds must be >= 0 (0 = none), got {}", options.max_replay_seconds));
  impl_ = translating_torch_errors(devices.front(), "setting up task " + task.id,
                                   [&] { return std::make_unique<Impl>(task, devices, threads, shards, options); });
}

Trainer::~Trainer() {
  const bool on_cuda = impl_ && impl_->device.is_cuda();
  impl_.reset();
  // Between tasks the agent holds no GPU memory: LibTorch would keep what the task freed.
  if (on_cuda) detail::release_cached_cuda_memory();
}

RuntimeInfo Trainer::runtime() const {
  return RuntimeInfo{std::string(solver_version()), TORCH_VERSION, impl_->device.str(), impl_->threads, true,
                     static_cast<int>(impl_->shard_count())};
}

std::int64_t Trainer::train_samples() const { return impl_->train_data.size(); }
std::int64_t Trainer::steps_per_epoch() const { return impl_->train_data.size() / impl_->task.training.batch_size; }
std::int64_t Trainer::total_steps() const { return impl_->total_steps; }

checkpoint::Checkpoint Trainer::state(std::int64_t step) const {
  return translating_torch_errors(impl_->device, "saving the state after step " + std::to_string(step), [&] {
    checkpoint::Checkpoint state;
    for (const NamedTensor& named : impl_->named_state()) state.tensors.push_back(checkpoint_tensor(named));
    state.metadata["step"] = std::to_string(step);
    state.metadata["optimizer_step"] = std::to_string(impl_->optimizer->step_count());
    return state;
  });
}

void Trainer::load_state(const checkpoint::Checkpoint& state) {
  std::map<std::string_view, const checkpoint::Tensor*> stored_by_name;
  for (const checkpoint::Tensor& tensor : state.tensors)
    if (!stored_by_name.emplace(tensor.name, &tensor).second)
      throw Error(ErrorKind::Input, "checkpoint: tensor " + tensor.name + " appears twice");
  const std::vector<NamedTensor> targets = impl_->named_state();
  std::vector<const checkpoint::Tensor*> sources;
  for (const NamedTensor& target : targets) {
    const auto found = stored_by_name.find(target.name);
    if (found == stored_by_name.end())
      throw Error(ErrorKind::Input, fmt::format("checkpoint: tensor {} is missing (this task's {} model and {} optimizer need it)",
                                                target.name, name_of(impl_->task.model.kind),
                                                name_of(impl_->task.training.optimizer.kind)));
    check_compatible(*found->second, target.tensor);
    sources.push_back(found->second);
    stored_by_name.erase(found);
  }
  if (!stored_by_name.empty())
    throw Error(ErrorKind::Input, "checkpoint: unexpected tensor " + std::string(stored_by_name.begin()->first) +
                                      " (not part of this task's model and optimizer)");
  const std::int64_t optimizer_step = metadata_integer(state, "optimizer_step");

  translating_torch_errors(impl_->device, "loading a checkpoint", [&] {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < targets.size(); ++i) copy_into(targets[i].tensor, *sources[i]);
  });
  impl_->optimizer->set_step_count(optimizer_step);
}

std::int64_t Trainer::train(std::int64_t from_step, const TrainHooks& hooks) {
  Impl& impl = *impl_;
  const Task& task = impl.task;
  const std::int64_t total = impl.total_steps;
  if (task.budget.max_steps > 0 && total > task.budget.max_steps)
    throw Error(ErrorKind::Budget, "budget.max_steps: the run needs " + std::to_string(total) + " steps, over the budget of " +
                                       std::to_string(task.budget.max_steps) + "; nothing was trained");
  if (from_step < 0 || from_step > total)
    throw Error(ErrorKind::Input, "resume step " + std::to_string(from_step) + " is outside the run's steps 0 to " +
                                      std::to_string(total));

  DataOrder order(task.seed, static_cast<std::uint32_t>(impl.train_data.size()),
                  static_cast<std::uint32_t>(task.training.batch_size));
  const Clock::time_point started = Clock::now();
  Clock::time_point last_report = started;
  Clock::time_point last_memory_sample = started - kMemorySampleInterval;
  std::int64_t last_checkpoint = from_step;
  // Time the caller spends in should_stop (the agent waits there while its GPU cools down) is
  // not training time: it counts against neither the wall budget nor the rate.
  Clock::duration time_in_should_stop{};
  if (from_step == 0 && hooks.on_checkpoint) hooks.on_checkpoint(0, state(0));

  // Copies: a span from DataOrder lives only until its next call.
  const auto indices_of = [&](std::int64_t step) {
    const std::span<const std::uint32_t> batch = order.batch(step);
    return std::vector<std::uint32_t>(batch.begin(), batch.end());
  };
  detail::BatchPrefetcher batches(impl.train_data, impl.device, impl.gather_in_background());
  std::vector<std::uint32_t> indices;
  if (from_step < total) {
    indices = indices_of(from_step + 1);
    batches.request(indices);
  }
  for (std::int64_t step = from_step + 1; step <= total; ++step) {
    std::vector<std::uint32_t> next_indices = step < total ? indices_of(step + 1) : std::vector<std::uint32_t>();
    const double lr = learning_rate_at(task.training, step, total);
    detail::StepWatchdog::Watch watch = impl.watchdog.watch("step " + std::to_string(step));
    const float loss = impl.run_step(step, batches, next_indices, lr);
    watch.stop();
    if (hooks.on_step) hooks.on_step(StepRecord{step, std::move(indices), loss, lr});
    indices = std::move(next_indices);
    const bool checkpoint_due = step == next_checkpoint_step(step - 1, task.checkpoint_every, total);
    if (checkpoint_due) {
      if (hooks.on_checkpoint) hooks.on_checkpoint(step, state(step));
      last_checkpoint = step;
    }

    const Clock::time_point now = Clock::now();
    const double elapsed_seconds = std::chrono::duration<double>(now - started - time_in_should_stop).count();
    if (hooks.on_progress && (now - last_report >= std::chrono::seconds(1) || step == total)) {
      last_report = now;
      const auto steps_done = static_cast<double>(step - from_step);
      hooks.on_progress(Progress{step, total, (step - 1) / steps_per_epoch(), loss,
                                 steps_done * static_cast<double>(task.training.batch_size) / elapsed_seconds,
                                 static_cast<double>(total - step) * elapsed_seconds / steps_done});
    }
    const bool sample_memory = now - last_memory_sample >= kMemorySampleInterval;
    if (sample_memory) last_memory_sample = now;
    impl.enforce_budgets(step, elapsed_seconds, last_checkpoint, sample_memory);
    // After the run's budgets, which name the checkpoints kept: a step past its limit that also
    // took the run past its wall budget reports the latter. The step itself is complete and recorded.
    watch.finish();
    if (step < total && hooks.should_stop) {
      const Clock::time_point asked = Clock::now();
      if (hooks.should_stop()) return step;
      time_in_should_stop += Clock::now() - asked;
    }
  }
  return total;
}

std::vector<float> Trainer::replay(std::span<const StepRecord> steps) {
  Impl& impl = *impl_;
  // All records first: a batch is gathered a step ahead, and only checked indices may be.
  for (const StepRecord& record : steps) impl.check_record(record, "replaying step " + std::to_string(record.step));
  if (!steps.empty()) impl.require_replay_budget("step " + std::to_string(steps.front().step));
  std::vector<float> losses;
  losses.reserve(steps.size());
  detail::BatchPrefetcher batches(impl.train_data, impl.device, impl.gather_in_background());
  if (!steps.empty()) batches.request(steps.front().indices);
  Clock::time_point charged_until = Clock::now();
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const std::span<const std::uint32_t> next_indices =
        i + 1 < steps.size() ? std::span<const std::uint32_t>(steps[i + 1].indices) : std::span<const std::uint32_t>();
    const std::string what = "step " + std::to_string(steps[i].step);
    detail::StepWatchdog::Watch watch = impl.watchdog.watch(what);
    losses.push_back(impl.run_step(steps[i].step, batches, next_indices, steps[i].lr));
    watch.stop();
    impl.charge_replay_budget(charged_until, what);
    watch.finish();
  }
  return losses;
}

std::vector<LayerTrace> Trainer::trace_step(const StepRecord& record) {
  Impl& impl = *impl_;
  const std::string where = "tracing step " + std::to_string(record.step);
  impl.check_record(record, where);
  return translating_torch_errors(impl.device, where, [&] {
    // The gradients must not outlive the trace, or the next step would accumulate into them.
    struct GradientsCleared {
      Impl& impl;
      ~GradientsCleared() { impl.clear_gradients(); }
    } cleared{impl};
    // As run_step, up to the clipping: the same seed, batch and passes give the same bits.
    const detail::Batch batch = impl.train_data.gather(record.indices, impl.device);
    std::vector<NamedTensor> outputs;
    detail::StepWatchdog::Watch watch = impl.watchdog.watch(where);
    const at::Tensor loss = impl.forward_backward(record.step, batch, &outputs);
    watch.finish();
    std::vector<LayerTrace> trace;
    for (const NamedTensor& output : outputs) trace.push_back({"output", checkpoint_tensor(widened(output))});
    trace.push_back({"loss", checkpoint_tensor(widened({"loss", loss}))});
    for (const NamedTensor& parameter : impl.trainable)
      if (parameter.tensor.grad().defined())
        trace.push_back({"gradient", checkpoint_tensor({parameter.name, parameter.tensor.grad()})});
    return trace;
  });
}

Trainer::Evaluation Trainer::evaluate() {
  Impl& impl = *impl_;
  return translating_torch_errors(impl.device, "evaluating on the test set", [&] {
    at::NoGradGuard no_grad;
    const detail::AutocastGuard autocast_on = impl.autocast();
    impl.model->set_training(false);
    std::int64_t correct = 0, labels = 0;
    double loss_sum = 0.0;
    const std::int64_t count = impl.test_data.size(), batch_size = impl.evaluation_batch_size();
    impl.require_replay_budget("evaluating the test set");
    Clock::time_point charged_until = Clock::now();
    for (std::int64_t begin = 0; begin < count; begin += batch_size) {
      const std::int64_t samples = std::min(batch_size, count - begin);
      const detail::Batch batch = impl.test_data.slice(begin, samples, impl.device);
      // A step's limit per training batch of samples: an evaluation batch may be many of them,
      // but not more than a whole replay budget.
      double limit_seconds = impl.watchdog.limit_seconds() *
                             std::max(1.0, static_cast<double>(samples) / static_cast<double>(impl.task.training.batch_size));
      if (impl.max_replay_seconds > 0.0) limit_seconds = std::min(limit_seconds, impl.max_replay_seconds);
      const std::string what = fmt::format("evaluating test samples {} to {}", begin, begin + samples - 1);
      detail::StepWatchdog::Watch watch = impl.watchdog.watch(what, limit_seconds);
      const at::Tensor logits = impl.model->forward(batch.inputs);
      correct += logits.argmax(1).eq(batch.labels).sum().item<std::int64_t>();
      loss_sum += at::cross_entropy_loss(logits, batch.labels).item<double>() * static_cast<double>(batch.labels.numel());
      watch.stop();
      impl.charge_replay_budget(charged_until, what);
      watch.finish();
      labels += batch.labels.numel();
    }
    impl.model->set_training(true);
    return Evaluation{static_cast<double>(correct) / static_cast<double>(labels), loss_sum / static_cast<double>(labels)};
  });
}

}  // namespace solver::train
