// LibTorch measurements for `solver bench`, behind a header with no torch in it: matrix-
// multiply throughput, GPU memory bandwidth, the training throughput of a task, and that of a
// reference transformer trained on generated tokens, with its model FLOPs. The host
// figures that need no torch (memory, SHA-256, disk) live in hardware/host_benchmark.h.
//
// Every figure is the work done divided by the seconds of one timed pass, best (or, for
// host<->device copies, median) of several passes after an untimed warm-up. On a GPU a pass
// ends with a device synchronisation, so it times the work, not its queueing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/task.h"

namespace solver::train {

// A GPU multiplies an 8192-square matrix pair in about a millisecond, so one pass there is
// several products, to make the timer's resolution and the launch latency negligible.
inline constexpr int kGpuMatmulsPerPass = 10;

// CUDA devices LibTorch can use: 0 when this LibTorch was built without CUDA (Debian's is) or
// sees no GPU, whatever NVML reports. Training needs this count; kernels::cuda_device_count()
// is the CUDA runtime's, which sees the GPUs even under a CPU-only LibTorch (the kernels and
// the bench use those).
int torch_cuda_device_count();

struct MatmulOptions {
  std::string device = "cpu";  // cpu, cuda or cuda:N
  std::string dtype = "fp32";  // fp32 (IEEE: TF32 off), bf16, and on CUDA tf32 (fp32 tensors on TF32 tensor cores) or fp16
  std::int64_t n = 2048;       // multiplies two n x n matrices
  int repeats = 5;             // timed passes; on a GPU a pass is kGpuMatmulsPerPass products
  int threads = 0;             // CPU: intra-op threads, 0 = one per logical CPU; process-wide
};

struct MatmulResult {
  std::string device;
  std::string dtype;
  std::int64_t n = 0;
  int threads = 0;            // CPU threads used; 0 on a GPU
  int repeats = 0;
  std::string blas;           // CPU: the BLAS LibTorch was built against (BLAS_INFO: "mkl", "open", "generic" =
                              // the system libblas.so.3, which may be the slow reference BLAS); "" on a GPU
  double flop = 0.0;          // per product: 2 n^3 (n^2 outputs, n multiplies and n adds each)
  double best_seconds = 0.0;  // of one product
  double gflops = 0.0;        // flop / best_seconds / 1e9
};

// Times at::mm on random matrices. Blocks. For tf32 it allows TF32 in cuBLAS for this
// measurement only and restores the previous setting afterwards, so fp32 stays IEEE fp32.
// Throws Error(Config) for a bad device, dtype (tf32 or fp16 on the CPU), size or count, Error(Cuda)
// when the GPU is unusable, Error(Budget) when the matrices do not fit.
MatmulResult measure_matmul(const MatmulOptions& options);

struct DeviceMemoryOptions {
  std::string device = "cuda";  // cuda or cuda:N
  std::size_t bytes = std::size_t{1} << 30;
  int repeats = 10;
};

struct DeviceMemoryBandwidth {
  std::string device;
  std::size_t bytes = 0;
  double host_to_device_gb_per_s = 0.0;  // from pinned host memory, bytes per pass (median)
  double device_to_host_gb_per_s = 0.0;  // to pinned host memory (median)
};

// Times copies of `bytes` between pinned host memory and a CUDA device, both ways (the
// device's own memory bandwidth is kernels/stream.h's STREAM). Blocks.
// Throws Error(Config) for a CPU device or a zero size, Error(Cuda) when the GPU is unusable.
DeviceMemoryBandwidth measure_device_memory(const DeviceMemoryOptions& options);

struct TrainingThroughputOptions {
  std::string device = "cpu";
  int threads = 0;                // as TrainerOptions: 0 = min(hardware threads, 4)
  std::int64_t warmup_steps = 10;  // run first, untimed (allocator and kernel caches warm up)
  std::int64_t steps = 200;        // timed, in `passes` equal passes (the rest of steps / passes is not run)
  int passes = 5;                  // the fastest pass counts, as elsewhere: the least disturbed
};

struct TrainingThroughput {
  std::string task_id;
  std::string device;
  int threads = 0;
  std::int64_t batch_size = 0;
  std::int64_t steps = 0;      // timed steps, all passes
  int passes = 0;
  double setup_seconds = 0.0;  // checking and loading the data, building the model
  double seconds = 0.0;        // the fastest pass, of steps / passes steps
  double samples_per_second = 0.0;
  float last_loss = 0.0f;
  // A gpt only (0 for other models). A sample is a window of context + 1 tokens that predicts
  // `context` of them, so tokens are samples x context, as nanoGPT's tokens per iteration.
  std::int64_t tokens_per_sample = 0;
  double tokens_per_second = 0.0;
  std::int64_t non_embedding_parameters = 0;  // N of gpt_flop_per_token
  double flop_per_token = 0.0;                // gpt_flop_per_token
  double model_flops_per_second = 0.0;        // flop_per_token x tokens_per_second: MFU's numerator
};

// The FLOPs of training on one token of a gpt, forward and backward, as nanoGPT's
// GPT.estimate_mfu counts them (karpathy/nanoGPT model.py, after the PaLM paper's appendix B):
// 6N + 12 L H Q T, with N the parameters less the position embedding (nanoGPT's
// get_num_params(): the token embedding stays, being the tied head's weight too), L layers,
// H heads, Q = embed / heads and T = context: 6N for the weight matmuls, 12 L H Q T for
// attention's scores and weighted sums. Elementwise work is not counted.
double gpt_flop_per_token(const GptSpec& model, std::int64_t non_embedding_parameters);

// Trains the first warmup_steps + steps steps of `task` (its real data order and learning
// rates, the step `solver run` runs) without a bundle, timing the last `steps` in passes;
// samples_per_second is the fastest pass's. Blocks; sets the Trainer's process-wide switches.
// Throws what Trainer throws, and Error(Config) when a count is not positive, steps < passes,
// or the steps exceed the task's run.
TrainingThroughput measure_training_throughput(const Task& task, const TrainingThroughputOptions& options);

// The reference transformer: a gpt of the given sizes trained with AdamW, in fp32 as the
// Trainer trains, on tokens drawn from a fixed seed, so every machine runs the same work.
struct ReferenceGptOptions {
  GptSpec model;
  std::int64_t batch_size = 8;
  std::filesystem::path scratch_dir;  // where the generated token file lives while it is used
  std::string precision = "fp32";     // training.precision: "bf16" trains under autocast, as GPU tasks should
  TrainingThroughputOptions training;
};

// Writes exactly enough tokens for the run to a temp file in scratch_dir, trains on them as
// measure_training_throughput does, and removes the file (also on failure). task_id is
// kReferenceGptTaskId. Throws what measure_training_throughput throws, and Error(Io) when the
// file cannot be written.
inline constexpr const char* kReferenceGptTaskId = "bench-gpt";
TrainingThroughput measure_reference_gpt_throughput(const ReferenceGptOptions& options);

}  // namespace solver::train
