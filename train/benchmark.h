// LibTorch measurements for `solver bench`, behind a header with no torch in it: matrix-
// multiply throughput, GPU memory bandwidth, and the training throughput of a task. The host
// figures that need no torch (memory, SHA-256, disk) live in hardware/host_benchmark.h.
//
// Every figure is the work done divided by the seconds of one timed pass, best (or, for
// host<->device copies, median) of several passes after an untimed warm-up. On a GPU a pass
// ends with a device synchronisation, so it times the work, not its queueing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/task.h"

namespace solver::train {

// A GPU multiplies an 8192-square matrix pair in about a millisecond, so one pass there is
// several products, to make the timer's resolution and the launch latency negligible.
inline constexpr int kGpuMatmulsPerPass = 10;

// CUDA devices LibTorch can use: 0 when this LibTorch was built without CUDA (Debian's is) or
// sees no GPU, whatever NVML reports.
int cuda_device_count();

struct MatmulOptions {
  std::string device = "cpu";  // cpu, cuda or cuda:N
  std::string dtype = "fp32";  // fp32 (no TF32: LibTorch's default for matmul) or bf16
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

// Times at::mm on random matrices. Blocks. Throws Error(Config) for a bad device, dtype, size
// or count, Error(Cuda) when the GPU is unusable, Error(Budget) when the matrices do not fit.
MatmulResult measure_matmul(const MatmulOptions& options);

struct DeviceMemoryOptions {
  std::string device = "cuda";  // cuda or cuda:N
  std::size_t bytes = std::size_t{1} << 30;
  int repeats = 10;
};

struct DeviceMemoryBandwidth {
  std::string device;
  std::size_t bytes = 0;
  double device_copy_gb_per_s = 0.0;     // device to device: read + write, 2 x bytes per pass (best)
  double host_to_device_gb_per_s = 0.0;  // from pinned host memory, bytes per pass (median)
  double device_to_host_gb_per_s = 0.0;  // to pinned host memory (median)
};

// Times copies between buffers of `bytes` on a CUDA device and pinned host memory. Blocks.
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
};

// Trains the first warmup_steps + steps steps of `task` (its real data order and learning
// rates, the step `solver run` runs) without a bundle, timing the last `steps` in passes;
// samples_per_second is the fastest pass's. Blocks; sets the Trainer's process-wide switches.
// Throws what Trainer throws, and Error(Config) when a count is not positive, steps < passes,
// or the steps exceed the task's run.
TrainingThroughput measure_training_throughput(const Task& task, const TrainingThroughputOptions& options);

}  // namespace solver::train
