// LibTorch measurements. Invariant: a timed region holds only the work its figure counts;
// allocation, random fills and the first (warm-up) call happen before the clock starts, and
// on a GPU the clock stops only after torch::cuda::synchronize. TF32 is allowed in cuBLAS only
// inside the tf32 matmul measurement.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "train/benchmark.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/rand.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "common/data_order.h"
#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "train/detail/device.h"
#include "train/trainer.h"

namespace solver::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void wait_for(c10::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

at::ScalarType matmul_scalar_type(const std::string& dtype) {
  if (dtype == "fp32" || dtype == "tf32") return at::kFloat;
  if (dtype == "fp16") return at::kHalf;
  if (dtype == "bf16") return at::kBFloat16;
  throw Error(ErrorKind::Config,
              "matmul dtype: expected fp32 or bf16, or on a CUDA device also tf32 or fp16, got \"" + dtype + "\"");
}

// Sets whether cuBLAS may run fp32 matmuls on TF32 tensor cores while alive, then puts the
// previous setting back. LibTorch 2.9 added fp32_precision as the new switch; this legacy one
// still sets both, and still exists in 1.13, so one call serves every LibTorch we build against.
class CublasTf32Setting {
 public:
  explicit CublasTf32Setting(bool allowed) : previous_(at::globalContext().allowTF32CuBLAS()) {
    at::globalContext().setAllowTF32CuBLAS(allowed);
  }
  ~CublasTf32Setting() { at::globalContext().setAllowTF32CuBLAS(previous_); }
  CublasTf32Setting(const CublasTf32Setting&) = delete;
  CublasTf32Setting& operator=(const CublasTf32Setting&) = delete;

 private:
  bool previous_;
};

void require_at_least_one(std::int64_t value, const std::string& what) {
  if (value < 1) throw Error(ErrorKind::Config, what + ": expected at least 1, got " + std::to_string(value));
}

// Seconds of one pass of `body`, which runs on `device`: best (or median) of `repeats`.
template <typename Body>
std::vector<double> timed_passes(c10::Device device, int repeats, Body&& body) {
  body();  // warm-up: lazy initialisation, allocator caches, kernel selection
  wait_for(device);
  std::vector<double> seconds;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const Clock::time_point start = Clock::now();
    body();
    wait_for(device);
    seconds.push_back(seconds_since(start));
  }
  return seconds;
}

// BLAS_INFO from LibTorch's build configuration: on the CPU the BLAS, not the CPU, often
// decides the matmul figure.
std::string blas_info() {
  const std::string config = at::show_config();
  const std::string key = "BLAS_INFO=";
  const std::size_t begin = config.find(key);
  if (begin == std::string::npos) return "unknown";
  const std::size_t value = begin + key.size();
  return config.substr(value, config.find_first_of(", \n", value) - value);
}

// Steps per timed pass, after checking the counts.
std::int64_t steps_per_pass(const TrainingThroughputOptions& options) {
  require_at_least_one(options.warmup_steps, "training benchmark warm-up steps");
  require_at_least_one(options.passes, "training benchmark passes");
  require_at_least_one(options.steps / options.passes, "training benchmark steps per pass");
  return options.steps / options.passes;
}

// nanoGPT's get_num_params(): every parameter but the position embedding's.
std::int64_t gpt_non_embedding_parameters(const Trainer& trainer) {
  std::int64_t count = 0;
  for (const checkpoint::Tensor& tensor : trainer.state(0).tensors)
    if (tensor.name.starts_with("param.") && tensor.name != "param.wpe.weight") count += tensor.element_count();
  return count;
}

// Deletes a file when it goes out of scope, whatever happened meanwhile.
class FileRemover {
 public:
  explicit FileRemover(std::filesystem::path path) : path_(std::move(path)) {}
  ~FileRemover() {
    std::error_code ignored;  // nothing left to do about a file we cannot delete
    std::filesystem::remove(path_, ignored);
  }
  FileRemover(const FileRemover&) = delete;
  FileRemover& operator=(const FileRemover&) = delete;

 private:
  std::filesystem::path path_;
};

double best(const std::vector<double>& values) { return *std::min_element(values.begin(), values.end()); }

double median(std::vector<double> values) {
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return *middle;
}

}  // namespace

int torch_cuda_device_count() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

MatmulResult measure_matmul(const MatmulOptions& options) {
  const c10::Device device = detail::torch_device(parse_device(options.device));
  const at::ScalarType scalar_type = matmul_scalar_type(options.dtype);
  require_at_least_one(options.n, "matmul size n");
  require_at_least_one(options.repeats, "matmul repeats");
  if (options.threads < 0) throw Error(ErrorKind::Config, "matmul threads: expected 0 (one per CPU) or more, got " + std::to_string(options.threads));
  if ((options.dtype == "tf32" || options.dtype == "fp16") && !device.is_cuda())
    throw Error(ErrorKind::Config, "matmul dtype " + options.dtype +
                                       ": expected a CUDA device (tensor cores; LibTorch 1.13 has no fp16 CPU matmul), got " +
                                       device.str());
  if (device.is_cuda()) detail::require_usable_cuda(device);
  const int threads = device.is_cuda() ? 0 : options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (!device.is_cuda()) at::set_num_threads(threads);
  const int products_per_pass = device.is_cuda() ? kGpuMatmulsPerPass : 1;

  const double seconds = detail::translating_torch_errors(device, "matmul benchmark on " + device.str(), [&] {
    std::optional<CublasTf32Setting> tf32;
    if (device.is_cuda()) tf32.emplace(options.dtype == "tf32");
    const at::TensorOptions tensor_options = at::TensorOptions().dtype(at::kFloat).device(device);
    const at::Tensor a = at::rand({options.n, options.n}, tensor_options).to(scalar_type);
    const at::Tensor b = at::rand({options.n, options.n}, tensor_options).to(scalar_type);
    at::Tensor product = at::empty({options.n, options.n}, tensor_options.dtype(scalar_type));
    return best(timed_passes(device, options.repeats, [&] {
             for (int i = 0; i < products_per_pass; ++i) at::mm_out(product, a, b);
           })) /
           products_per_pass;
  });
  const double n = static_cast<double>(options.n);
  const double flop = 2.0 * n * n * n;
  return MatmulResult{device.str(), options.dtype, options.n, threads, options.repeats, device.is_cuda() ? "" : blas_info(),
                      flop, seconds, flop / seconds / 1e9};
}

DeviceMemoryBandwidth measure_device_memory(const DeviceMemoryOptions& options) {
  const c10::Device device = detail::torch_device(parse_device(options.device));
  if (!device.is_cuda()) throw Error(ErrorKind::Config, "device memory benchmark: expected a CUDA device, got " + options.device);
  require_at_least_one(static_cast<std::int64_t>(options.bytes), "device memory benchmark size (bytes)");
  require_at_least_one(options.repeats, "device memory benchmark repeats");
  detail::require_usable_cuda(device);

  return detail::translating_torch_errors(device, "memory benchmark on " + device.str(), [&] {
    const auto size = static_cast<std::int64_t>(options.bytes);
    const at::Tensor source = at::empty({size}, at::TensorOptions().dtype(at::kByte).device(device)).fill_(1);
    at::Tensor target = at::empty_like(source);
    at::Tensor host = at::empty({size}, at::TensorOptions().dtype(at::kByte).pinned_memory(true)).fill_(2);
    const double bytes = static_cast<double>(options.bytes);
    DeviceMemoryBandwidth result{device.str(), options.bytes};
    result.host_to_device_gb_per_s = bytes / median(timed_passes(device, options.repeats, [&] { target.copy_(host); })) / 1e9;
    result.device_to_host_gb_per_s = bytes / median(timed_passes(device, options.repeats, [&] { host.copy_(source); })) / 1e9;
    return result;
  });
}

double gpt_flop_per_token(const GptSpec& model, std::int64_t non_embedding_parameters) {
  require_at_least_one(model.heads, "gpt heads");
  const double head_size = static_cast<double>(model.embed / model.heads);
  return 6.0 * static_cast<double>(non_embedding_parameters) +
         12.0 * static_cast<double>(model.layers) * static_cast<double>(model.heads) * head_size * static_cast<double>(model.context);
}

TrainingThroughput measure_training_throughput(const Task& task, const TrainingThroughputOptions& options) {
  const std::int64_t pass_steps = steps_per_pass(options);
  const std::int64_t run_steps = options.warmup_steps + pass_steps * options.passes;
  const Clock::time_point setup_start = Clock::now();
  Trainer trainer(task, TrainerOptions{options.device, options.threads});
  const double setup_seconds = seconds_since(setup_start);
  const std::int64_t total = trainer.total_steps();
  if (run_steps > total)
    throw Error(ErrorKind::Config, "training benchmark: " + std::to_string(run_steps) + " steps asked, but task " + task.id +
                                       " has only " + std::to_string(total));

  // The steps `solver run` would take first: the task's data order and learning-rate schedule.
  DataOrder order(task.seed, static_cast<std::uint32_t>(trainer.train_samples()),
                  static_cast<std::uint32_t>(task.training.batch_size));
  std::vector<StepRecord> records;
  for (std::int64_t step = 1; step <= run_steps; ++step) {
    const std::span<const std::uint32_t> indices = order.batch(step);
    records.push_back(StepRecord{step, {indices.begin(), indices.end()}, 0.0f, learning_rate_at(task.training, step, total)});
  }
  std::span<const StepRecord> remaining(records);
  trainer.replay(remaining.first(static_cast<std::size_t>(options.warmup_steps)));
  remaining = remaining.subspan(static_cast<std::size_t>(options.warmup_steps));
  double fastest = std::numeric_limits<double>::infinity();
  float last_loss = 0.0f;
  for (int pass = 0; pass < options.passes; ++pass) {
    const Clock::time_point start = Clock::now();
    last_loss = trainer.replay(remaining.first(static_cast<std::size_t>(pass_steps))).back();
    fastest = std::min(fastest, seconds_since(start));
    remaining = remaining.subspan(static_cast<std::size_t>(pass_steps));
  }

  const RuntimeInfo runtime = trainer.runtime();
  TrainingThroughput result{task.id,
                            runtime.device,
                            runtime.threads,
                            task.training.batch_size,
                            pass_steps * options.passes,
                            options.passes,
                            setup_seconds,
                            fastest,
                            static_cast<double>(pass_steps * task.training.batch_size) / fastest,
                            last_loss};
  if (task.model.kind == ModelKind::Gpt) {
    result.tokens_per_sample = task.model.gpt.context;
    result.tokens_per_second = result.samples_per_second * static_cast<double>(result.tokens_per_sample);
    result.non_embedding_parameters = gpt_non_embedding_parameters(trainer);
    result.flop_per_token = gpt_flop_per_token(task.model.gpt, result.non_embedding_parameters);
    result.model_flops_per_second = result.flop_per_token * result.tokens_per_second;
  }
  return result;
}

TrainingThroughput measure_reference_gpt_throughput(const ReferenceGptOptions& options) {
  require_at_least_one(options.batch_size, "reference gpt batch size");
  require_at_least_one(options.model.context, "reference gpt context");
  constexpr std::int64_t kTokenValues = 1 << 16;  // the token file holds uint16
  if (options.model.vocab_size < 1 || options.model.vocab_size > kTokenValues)
    throw Error(ErrorKind::Config, "reference gpt vocab_size: expected 1 to " + std::to_string(kTokenValues) +
                                       " (uint16 tokens), got " + std::to_string(options.model.vocab_size));
  const TrainingThroughputOptions& training = options.training;
  const std::int64_t run_steps = training.warmup_steps + steps_per_pass(training) * training.passes;

  // One epoch of exactly the run's windows (context + 1 tokens each), uniform over the
  // vocabulary from a fixed seed: std::mt19937_64's sequence is fixed by the C++ standard.
  constexpr std::uint64_t kTokenSeed = 20261125;
  std::mt19937_64 generator(kTokenSeed);
  const std::int64_t token_count = options.batch_size * run_steps * (options.model.context + 1);
  std::vector<std::byte> bytes(static_cast<std::size_t>(token_count) * 2);
  for (std::size_t i = 0; i < bytes.size(); i += 2) {
    const auto token = static_cast<std::uint16_t>(generator() % static_cast<std::uint64_t>(options.model.vocab_size));
    bytes[i] = static_cast<std::byte>(token & 0xff);
    bytes[i + 1] = static_cast<std::byte>(token >> 8);
  }
  const std::filesystem::path tokens_file =
      options.scratch_dir / (".solver-bench-tokens-" + std::to_string(::getpid()) + ".bin");
  const FileRemover remover(tokens_file);
  write_file_durably(tokens_file, bytes);

  const nlohmann::json tokens{{"location", tokens_file.string()}, {"sha256", sha256_hex(bytes)}};
  const GptSpec& model = options.model;
  const nlohmann::json task_json{
      {"id", kReferenceGptTaskId},
      {"seed", kTokenSeed},
      {"model",
       {{"kind", "gpt"},
        {"vocab_size", model.vocab_size},
        {"context", model.context},
        {"layers", model.layers},
        {"heads", model.heads},
        {"embed", model.embed}}},
      {"dataset", {{"format", "tokens"}, {"train", tokens}, {"test", tokens}}},  // the test set is never evaluated here
      {"training",
       {{"optimizer", {{"kind", "adamw"}, {"lr", 3e-4}, {"weight_decay", 0.1}}},
        {"batch_size", options.batch_size},
        {"steps", run_steps},
        {"grad_clip_norm", 1.0},
        {"precision", options.precision}}},
      {"proof", {{"checkpoint_every", run_steps}}}};
  return measure_training_throughput(parse_task(task_json, options.scratch_dir), training);
}

}  // namespace solver::train
