// `solver bench`: measures this machine and prints each figure beside its datasheet peak where
// one is known (docs/benchmarks.md). The measuring lives in hardware/ (host figures, NVML, the
// datasheet table) and train/benchmark.h (LibTorch); this file picks the sizes and prints.
// Invariant: every number printed was measured in this run, read from NVML, or taken from the
// datasheet table, and the report says which; a peak we do not know is printed as unknown.
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/exit_status.h"
#include "cli/command.h"
#include "cli/common.h"
#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/version.h"
#include "hardware/datasheet_peaks.h"
#include "hardware/host_benchmark.h"
#include "hardware/nvml.h"
#include "kernels/all_reduce.h"
#include "kernels/cuda_device.h"
#include "kernels/distance.h"
#include "kernels/stream.h"
#include "kernels/stress.h"
#include "train/benchmark.h"

namespace solver::cli {
namespace {

struct BenchOptions {
  bool quick = false;  // seconds instead of minutes: smaller sizes, fewer repeats
  bool json = false;
  std::string device;                  // where matmul and training run; "": cuda:0 if LibTorch sees a GPU, else cpu
  std::filesystem::path disk_dir = ".";  // the disk test's folder: where `solver run` writes runs/
  std::optional<std::filesystem::path> save_file;  // also write the JSON here (the agent's bench_file)
};

constexpr std::size_t kMiB = std::size_t{1} << 20;

std::string format_mib(std::size_t bytes) { return fmt::format("{} MiB", bytes / kMiB); }

// The reference transformer's sizes and steps on one kind of device.
struct GptPlan {
  GptSpec model;
  std::int64_t batch_size;
  std::int64_t warmup_steps;
  std::int64_t steps;  // timed, in kTrainingPasses passes
};

// Sizes and repeats. On an idle 2-core machine quick takes about 25 s, most of it training the
// two reference tasks, and full about 90 s; other work on the cores stretches both.
struct BenchPlan {
  std::int64_t cpu_matmul_n;
  int cpu_matmul_repeats;
  std::size_t memory_array_bytes;  // the least; grown to 4x the last-level cache (stream_array_bytes)
  int memory_repeats;
  std::size_t sha256_bytes;
  int sha256_repeats;
  std::size_t disk_bytes;
  std::int64_t training_warmup_steps;
  std::int64_t training_steps;
  std::int64_t gpu_matmul_n;
  int gpu_matmul_repeats;
  std::size_t gpu_memory_bytes;
  int gpu_memory_repeats;
  // On the CPU, the size of configs/tasks/text-gpt.json (a few seconds on 2 cores); on a GPU,
  // nanoGPT's Shakespeare model (quick) and GPT-2 small (full, by estimate about 9 GB at batch 4 in fp32).
  GptPlan cpu_gpt;
  GptPlan gpu_gpt;
  double gpu_stress_seconds;
  std::size_t all_reduce_bytes;  // per GPU
  int all_reduce_repeats;
};
constexpr BenchPlan kQuickPlan{1024, 3, 64 * kMiB, 3, 64 * kMiB, 3, 256 * kMiB, 10, 200, 4096, 3, 256 * kMiB, 5,
                               GptPlan{{256, 64, 2, 2, 64}, 4, 1, 5}, GptPlan{{256, 256, 6, 6, 384}, 64, 3, 25}, 2.0, 64 * kMiB, 5};
constexpr BenchPlan kFullPlan{2048, 5, 256 * kMiB, 5, 256 * kMiB, 3, 1024 * kMiB, 20, 1000, 8192, 5, 1024 * kMiB, 10,
                              GptPlan{{256, 64, 2, 2, 64}, 8, 2, 20}, GptPlan{{50304, 1024, 12, 12, 768}, 4, 3, 20}, 10.0, 256 * kMiB, 10};
// Timed passes of each training measurement; the fastest counts.
constexpr int kTrainingPasses = 5;

// The peaks that apply to the GPU measured as cuda:N. CUDA numbers GPUs in its own order
// (and CUDA_VISIBLE_DEVICES renumbers them), so NVML's GPU N need not be cuda:N; the
// datasheet row is only lent when every GPU has the same name, the PCIe peak only when every
// GPU's link is the same.
struct MeasuredGpuPeaks {
  std::optional<hardware::DatasheetPeaks> datasheet;
  std::optional<double> pcie_gb_per_s;
};

MeasuredGpuPeaks peaks_for_measured_gpu(const hardware::GpuInventory& inventory) {
  MeasuredGpuPeaks peaks;
  if (inventory.gpus.empty()) return peaks;
  const hardware::GpuInfo& first = inventory.gpus.front();
  const auto same = [&](auto field) {
    return std::all_of(inventory.gpus.begin(), inventory.gpus.end(), [&](const hardware::GpuInfo& gpu) { return field(gpu) == field(first); });
  };
  if (same([](const hardware::GpuInfo& gpu) { return gpu.name; })) peaks.datasheet = hardware::datasheet_peaks(first.name);
  if (first.pcie_max_generation && first.pcie_max_width &&
      same([](const hardware::GpuInfo& gpu) { return std::pair(gpu.pcie_max_generation, gpu.pcie_max_width); }))
    peaks.pcie_gb_per_s = hardware::pcie_peak_gb_per_s(*first.pcie_max_generation, *first.pcie_max_width);
  return peaks;
}

struct GpuMeasurements {
  kernels::CudaDeviceProperties properties;
  train::MatmulResult matmul_fp32;
  train::MatmulResult matmul_tf32;
  train::MatmulResult matmul_fp16;
  train::MatmulResult matmul_bf16;
  kernels::DeviceStreamBandwidth stream;  // device memory, by kernels/stream.h
  train::DeviceMemoryBandwidth memory;     // pinned host <-> device
  kernels::StressResult stress;
  std::optional<kernels::AllReduceBandwidth> all_reduce;  // across every visible GPU
  std::string all_reduce_skipped_reason;                  // why `all_reduce` is empty
  MeasuredGpuPeaks peaks;
};

// NCCL's all-reduce across every GPU CUDA sees, when there are two or more; otherwise, or when
// NCCL cannot run, the reason there is no figure (a missing NCCL is not a failed bench).
void measure_all_reduce_if_possible(const BenchPlan& plan, GpuMeasurements& gpu) {
  const int devices = kernels::cuda_device_count();
  if (devices < 2) {
    gpu.all_reduce_skipped_reason = fmt::format("{} GPU visible; an all-reduce needs two or more", devices);
    return;
  }
  std::vector<int> ordinals(static_cast<std::size_t>(devices));
  for (int i = 0; i < devices; ++i) ordinals[static_cast<std::size_t>(i)] = i;
  try {
    gpu.all_reduce = kernels::measure_all_reduce(ordinals, plan.all_reduce_bytes, plan.all_reduce_repeats);
  } catch (const Error& error) {
    gpu.all_reduce_skipped_reason = error.what();
    log_warn("bench", "NCCL all-reduce not measured: {}", error.what());
  }
}

struct BenchReport {
  bool quick = false;
  hardware::HostInfo host;
  train::MatmulResult cpu_matmul;
  hardware::MemoryBandwidth memory;
  hardware::Sha256Throughput sha256;
  hardware::DiskWrite disk;
  train::TrainingThroughput training;  // the MLP reference task
  // The MLP again on the CPU when the bench measured a GPU: what this machine's CPU adds (verifying, a CPU slot).
  std::optional<train::TrainingThroughput> cpu_training;
  train::TrainingThroughput gpt;       // the transformer reference task
  GptSpec gpt_model;                   // its sizes
  std::string gpt_precision;           // its training.precision
  // MFU's denominator, FLOP/s: on a GPU the datasheet's bf16 peak (the gpt trains in bf16 there),
  // on the CPU this run's fp32 matmul; `mfu_peak_source` says which, or why there is none.
  std::optional<double> mfu_peak_flops;
  std::string mfu_peak_source;
  hardware::GpuInventory inventory;
  int torch_cuda_devices = 0;
  std::optional<GpuMeasurements> gpu;
  std::string gpu_skipped_reason;  // why `gpu` is empty
};

// One log line as each measurement starts, with the time so far: a bench takes from seconds to
// minutes, and a silent one looks hung. On stderr, so that --json keeps stdout pure JSON.
class BenchProgress {
 public:
  explicit BenchProgress(int stages) : stages_(stages) {}
  void stage(std::string_view what) {
    log_info("bench", "bench: [{}/{}] {} ({:.0f} s so far)", ++started_, stages_, what, seconds());
  }
  void done() const { log_info("bench", "bench: done in {:.0f} s", seconds()); }

 private:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  int stages_;
  int started_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

constexpr int kCpuStages = 6;  // CPU matmul, memory, SHA-256, disk, the two reference tasks
constexpr int kGpuStages = 5;  // matmul, memory, stress, all-reduce, the MLP again on the CPU

BenchReport measure(const BenchOptions& options) {
  const BenchPlan& plan = options.quick ? kQuickPlan : kFullPlan;
  BenchReport report;
  report.quick = options.quick;
  report.host = hardware::read_host_info();
  report.inventory = hardware::read_gpu_inventory();
  report.torch_cuda_devices = train::torch_cuda_device_count();
  // Parsed once: LibTorch's measurements take its name, the kernels its CUDA ordinal.
  const Device where = !options.device.empty() ? parse_device(options.device)
                                               : Device{report.torch_cuda_devices > 0 ? DeviceKind::Cuda : DeviceKind::Cpu, 0};
  const std::string device = where.name();
  log_info("bench", "bench: {} mode, matmul and training on {}; on an idle 2-core machine this takes {}, longer when other work "
           "shares the cores", options.quick ? "quick" : "full", device, options.quick ? "about 25 s" : "about 90 s");
  BenchProgress progress(kCpuStages + (where.is_cuda() ? kGpuStages : 0));

  // The GPU first: a requested GPU that is unusable fails the command before minutes of CPU work.
  if (where.is_cuda()) {
    GpuMeasurements gpu;
    progress.stage(fmt::format("matmul on {} (fp32, tf32, fp16, bf16)", device));
    gpu.matmul_fp32 = train::measure_matmul({device, "fp32", plan.gpu_matmul_n, plan.gpu_matmul_repeats, 0});
    gpu.matmul_tf32 = train::measure_matmul({device, "tf32", plan.gpu_matmul_n, plan.gpu_matmul_repeats, 0});
    gpu.matmul_fp16 = train::measure_matmul({device, "fp16", plan.gpu_matmul_n, plan.gpu_matmul_repeats, 0});
    gpu.matmul_bf16 = train::measure_matmul({device, "bf16", plan.gpu_matmul_n, plan.gpu_matmul_repeats, 0});
    gpu.properties = kernels::cuda_device_properties(where.index);
    progress.stage(fmt::format("device memory of {} (STREAM) and host <-> device copies", device));
    gpu.stream = kernels::measure_stream_cuda(where.index, plan.gpu_memory_bytes, plan.gpu_memory_repeats);
    gpu.memory = train::measure_device_memory({device, plan.gpu_memory_bytes, plan.gpu_memory_repeats});
    progress.stage(fmt::format("FMA stress on {} for {} s", device, plan.gpu_stress_seconds));
    gpu.stress = kernels::run_stress_cuda(where.index, plan.gpu_stress_seconds);
    if (gpu.stress.mismatched_values > 0)
      log_error("bench", "{}: {} of {} stress results were wrong: this GPU computes wrong under load (heat, power, clocks "
                "or a fault); do not let it take tasks until that is fixed", device, gpu.stress.mismatched_values,
                gpu.stress.checked_values);
    progress.stage("NCCL all-reduce across the visible GPUs");
    measure_all_reduce_if_possible(plan, gpu);
    gpu.peaks = peaks_for_measured_gpu(report.inventory);
    report.gpu = gpu;
  } else {
    report.gpu_skipped_reason = report.torch_cuda_devices == 0
                                    ? "no CUDA device (LibTorch sees none: no GPU or driver, or a LibTorch without CUDA)"
                                    : "--device cpu";
  }

  progress.stage("CPU matmul");
  report.cpu_matmul = train::measure_matmul({"cpu", "fp32", plan.cpu_matmul_n, plan.cpu_matmul_repeats, 0});
  const std::size_t memory_array_bytes = hardware::stream_array_bytes(report.host, plan.memory_array_bytes);
  progress.stage(fmt::format("memory bandwidth over 3 x {}", format_mib(memory_array_bytes)));
  report.memory = hardware::measure_memory_bandwidth({memory_array_bytes, 0, plan.memory_repeats});
  progress.stage("SHA-256");
  report.sha256 = hardware::measure_sha256(plan.sha256_bytes, plan.sha256_repeats);
  progress.stage(fmt::format("disk write + fsync of {} in {}", format_mib(plan.disk_bytes), options.disk_dir.string()));
  report.disk = hardware::measure_disk_write({options.disk_dir, plan.disk_bytes});
  progress.stage(fmt::format("training the reference MLP on {}", device));
  report.training = train::measure_training_throughput(
      parse_embedded_default_task(), {device, 0, plan.training_warmup_steps, plan.training_steps, kTrainingPasses});
  if (where.is_cuda()) {
    progress.stage("training the reference MLP on cpu");
    report.cpu_training = train::measure_training_throughput(
        parse_embedded_default_task(), {"cpu", 0, plan.training_warmup_steps, plan.training_steps, kTrainingPasses});
  }
  const GptPlan& gpt = where.is_cuda() ? plan.gpu_gpt : plan.cpu_gpt;
  progress.stage(fmt::format("training the reference gpt on {}", device));
  report.gpt_model = gpt.model;
  // On a GPU the transformer trains as GPU tasks should (bf16 autocast); LibTorch's CPU bf16
  // kernels are slower than its fp32 ones, so the CPU trains in fp32.
  report.gpt_precision = report.gpu ? "bf16" : "fp32";
  report.gpt = train::measure_reference_gpt_throughput({gpt.model, gpt.batch_size, options.disk_dir, report.gpt_precision,
                                                        {device, 0, gpt.warmup_steps, gpt.steps, kTrainingPasses}});
  if (!report.gpu) {
    report.mfu_peak_flops = report.cpu_matmul.gflops * 1e9;
    report.mfu_peak_source = "measured CPU matmul fp32 (no CPU datasheet)";
  } else if (report.gpu->peaks.datasheet) {
    report.mfu_peak_flops = report.gpu->peaks.datasheet->bf16_dense_tflops * 1e12;
    report.mfu_peak_source = "datasheet bf16 dense (tensor cores)";
  } else {
    report.mfu_peak_source = "unknown: GPU not in the datasheet table";
  }
  progress.done();
  return report;
}

std::optional<double> percent_of(double measured, const std::optional<double>& peak) {
  if (!peak) return std::nullopt;
  return 100.0 * measured / *peak;
}

// ---- table ----

std::string format_value(double value) {
  if (value >= 100.0) return fmt::format("{:.0f}", value);
  if (value >= 10.0) return fmt::format("{:.1f}", value);
  return fmt::format("{:.2f}", value);
}

struct Row {
  std::string figure;
  double value = 0.0;
  std::string unit;
  std::optional<double> peak;  // same unit as value
  bool has_peak = true;        // false: no peak applies (SHA-256, disk, samples/s)
  std::string how;
};

void print_rows(const std::vector<Row>& rows) {
  std::printf("  %-24s %16s  %-16s %9s  %s\n", "figure", "measured", "peak", "of peak", "how");
  for (const Row& row : rows) {
    const std::string measured = format_value(row.value) + " " + row.unit;
    const std::string peak = !row.has_peak ? "-" : row.peak ? format_value(*row.peak) + " " + row.unit : "unknown";
    const std::optional<double> percent = percent_of(row.value, row.peak);
    const std::string share = percent ? fmt::format("{:.0f}%", *percent) : "-";
    std::printf("  %-24s %16s  %-16s %9s  %s\n", row.figure.c_str(), measured.c_str(), peak.c_str(), share.c_str(), row.how.c_str());
  }
}

// Whether the memory arrays obey STREAM's rule (each 4x the last-level cache).
std::string cache_note(const hardware::HostInfo& host, std::size_t array_bytes) {
  if (host.last_level_cache_bytes == 0) return "last-level cache size unknown";
  if (array_bytes >= 4 * host.last_level_cache_bytes)
    return fmt::format("arrays >= 4x the {} last-level cache", format_mib(host.last_level_cache_bytes));
  return fmt::format("arrays < 4x the {} last-level cache (capped at 1/8 of RAM): may measure the cache",
                     format_mib(host.last_level_cache_bytes));
}

std::string matmul_how(const train::MatmulResult& matmul) {
  const std::string cpu = matmul.blas.empty() ? "" : fmt::format("{} LibTorch threads, BLAS {}, ", matmul.threads, matmul.blas);
  return fmt::format("at::mm {0}x{0} (2n^3 = {1:.3g} FLOP), {2}best of {3}", matmul.n, matmul.flop, cpu, matmul.repeats);
}

std::string training_how(const train::TrainingThroughput& training) {
  return fmt::format("{} threads, batch {}, best of {} passes of {} steps", training.threads, training.batch_size, training.passes,
                     training.steps / training.passes);
}

// The reference tasks, each a row, and the transformer's model FLOP/s beside MFU's peak, in
// GFLOP/s on the CPU and TFLOP/s on a GPU.
std::vector<Row> training_rows(const BenchReport& report) {
  const train::TrainingThroughput& mlp = report.training;
  const train::TrainingThroughput& gpt = report.gpt;
  const bool on_gpu = parse_device(gpt.device).is_cuda();
  const double flops_unit = on_gpu ? 1e12 : 1e9;
  std::optional<double> peak;
  if (report.mfu_peak_flops) peak = *report.mfu_peak_flops / flops_unit;
  return {
      {"training mlp", mlp.samples_per_second, "samples/s", std::nullopt, false, mlp.task_id + ", " + training_how(mlp)},
      {"training gpt", gpt.samples_per_second, "samples/s", std::nullopt, false,
       fmt::format("{}: {} layers, {} heads, embed {}, context {}, vocab {}; generated tokens, AdamW, {}; {}", gpt.task_id,
                   report.gpt_model.layers, report.gpt_model.heads, report.gpt_model.embed, report.gpt_model.context,
                   report.gpt_model.vocab_size, report.gpt_precision, training_how(gpt))},
      {"training gpt tokens", gpt.tokens_per_second, "tokens/s", std::nullopt, false,
       fmt::format("samples/s x context {}", gpt.tokens_per_sample)},
      {"gpt model FLOP/s (MFU)", gpt.model_flops_per_second / flops_unit, on_gpu ? "TFLOP/s" : "GFLOP/s", peak, true,
       fmt::format("tokens/s x 6N + 12LHQT = {:.3g} FLOP/token (nanoGPT's estimate, N = {:.3g}); of peak = MFU, peak: {}",
                   gpt.flop_per_token, static_cast<double>(gpt.non_embedding_parameters), report.mfu_peak_source)},
  };
}

std::string optional_text(const auto& value, const char* suffix = "") {
  return value ? fmt::format("{}{}", *value, suffix) : "n/a";
}

void print_gpu_inventory(const hardware::GpuInventory& inventory) {
  if (!inventory.unavailable_reason.empty()) {
    std::printf("\nGPUs: 0 (%s)\n", inventory.unavailable_reason.c_str());
    return;
  }
  std::printf("\nGPUs: %zu (NVIDIA driver %s, CUDA %s)\n", inventory.gpus.size(), inventory.driver_version.c_str(),
              inventory.cuda_driver_version.c_str());
  for (const hardware::GpuInfo& gpu : inventory.gpus) {
    std::printf("  GPU %d: %s, %s\n", gpu.index, gpu.name.c_str(), gpu.uuid.c_str());
    const std::string memory = gpu.memory_total_bytes
                                   ? fmt::format("{:.1f} GiB ({:.1f} GiB used)", *gpu.memory_total_bytes / double(1 << 30),
                                                 gpu.memory_used_bytes.value_or(0) / double(1 << 30))
                                   : "n/a";
    const std::string power = gpu.power_limit_watts ? fmt::format("{:.0f} W", *gpu.power_limit_watts) : "n/a";
    std::string throttle = "n/a";
    if (gpu.throttle_reasons) {
      const std::vector<std::string> names = hardware::throttle_reason_names(*gpu.throttle_reasons);
      throttle = names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "));
    }
    std::printf("    memory %s; PCIe gen %s x%s now, gen %s x%s max; power limit %s; %s; throttle reasons: %s\n",
                memory.c_str(), optional_text(gpu.pcie_generation).c_str(), optional_text(gpu.pcie_width).c_str(),
                optional_text(gpu.pcie_max_generation).c_str(), optional_text(gpu.pcie_max_width).c_str(), power.c_str(),
                optional_text(gpu.temperature_c, " C").c_str(), throttle.c_str());
    if (const auto peaks = hardware::datasheet_peaks(gpu.name))
      std::printf("    datasheet (%s): fp32 %s, tf32 dense %s, fp16 dense %s, bf16 dense %s TFLOP/s; memory %s TB/s\n",
                  std::string(peaks->model).c_str(), format_value(peaks->fp32_tflops).c_str(),
                  format_value(peaks->tf32_dense_tflops).c_str(), format_value(peaks->fp16_dense_tflops).c_str(),
                  format_value(peaks->bf16_dense_tflops).c_str(), format_value(peaks->memory_tb_per_s).c_str());
    else
      std::printf("    datasheet: not in solver's table (peaks unknown)\n");
  }
}

void print_table(const BenchReport& report) {
  const hardware::HostInfo& host = report.host;
  std::printf("solver %s bench (%s)\n", std::string(solver_version()).c_str(), report.quick ? "quick" : "full");
  std::printf("host: %s, %d logical CPUs, %.1f GiB RAM, last-level cache %s\n\n",
              host.cpu_model.empty() ? "CPU model unknown" : host.cpu_model.c_str(), host.logical_cpus,
              host.memory_total_bytes / double(1 << 30),
              host.last_level_cache_bytes > 0 ? format_mib(host.last_level_cache_bytes).c_str() : "unknown");

  std::vector<Row> rows{
      {"matmul fp32 (CPU)", report.cpu_matmul.gflops, "GFLOP/s", std::nullopt, true, matmul_how(report.cpu_matmul)},
      {"memory copy", report.memory.copy_gb_per_s, "GB/s", std::nullopt, true,
       fmt::format("a[i] = b[i], 3 x {}, {} threads, best of {}", format_mib(report.memory.array_bytes), report.memory.threads,
                   report.memory.repeats)},
      {"memory triad", report.memory.triad_gb_per_s, "GB/s", std::nullopt, true,
       "a[i] = b[i] + s * c[i], as above; " + cache_note(report.host, report.memory.array_bytes)},
      {"SHA-256", report.sha256.gb_per_s, "GB/s", std::nullopt, false,
       fmt::format("{} in memory, 1 thread, best of {}", format_mib(report.sha256.buffer_bytes), report.sha256.repeats)},
      {"disk write + fsync", report.disk.gb_per_s, "GB/s", std::nullopt, false,
       fmt::format("{} to a temp file in {}, one pass", format_mib(report.disk.bytes), report.disk.dir.string())},
  };
  if (report.cpu_training)
    rows.push_back({"training mlp (CPU)", report.cpu_training->samples_per_second, "samples/s", std::nullopt, false,
                    report.cpu_training->task_id + ", " + training_how(*report.cpu_training)});
  std::printf("CPU and host (CPU peaks unknown: solver has no table of CPU datasheets)\n");
  print_rows(rows);

  std::printf("\nTraining the reference tasks on %s\n", report.training.device.c_str());
  print_rows(training_rows(report));

  print_gpu_inventory(report.inventory);
  if (!report.gpu) {
    std::printf("\nGPU measurements: skipped: %s\n", report.gpu_skipped_reason.c_str());
    return;
  }
  const GpuMeasurements& gpu = *report.gpu;
  const auto& datasheet = gpu.peaks.datasheet;
  std::optional<double> fp32_peak, tf32_peak, fp16_peak, bf16_peak, memory_peak;
  if (datasheet) {
    fp32_peak = datasheet->fp32_tflops;
    tf32_peak = datasheet->tf32_dense_tflops;
    fp16_peak = datasheet->fp16_dense_tflops;
    bf16_peak = datasheet->bf16_dense_tflops;
    memory_peak = datasheet->memory_tb_per_s * 1e3;
  }
  std::printf("\nGPU measurements on %s: %s, %d SMs, compute capability %d.%d, %.1f GiB%s\n", gpu.matmul_fp32.device.c_str(),
              gpu.properties.name.c_str(), gpu.properties.sm_count, gpu.properties.compute_major, gpu.properties.compute_minor,
              gpu.properties.memory_bytes / double(1 << 30),
              datasheet ? fmt::format(" (peaks: {} datasheet)", datasheet->model).c_str() : " (datasheet peaks unknown)");
  print_rows({
      {"matmul fp32", gpu.matmul_fp32.gflops / 1e3, "TFLOP/s", fp32_peak, true, matmul_how(gpu.matmul_fp32) + ", TF32 off"},
      {"matmul tf32", gpu.matmul_tf32.gflops / 1e3, "TFLOP/s", tf32_peak, true, matmul_how(gpu.matmul_tf32) + ", fp32 data, TF32 on"},
      {"matmul fp16", gpu.matmul_fp16.gflops / 1e3, "TFLOP/s", fp16_peak, true, matmul_how(gpu.matmul_fp16)},
      {"matmul bf16", gpu.matmul_bf16.gflops / 1e3, "TFLOP/s", bf16_peak, true, matmul_how(gpu.matmul_bf16)},
      {"device memory copy", gpu.stream.copy_gb_per_s, "GB/s", memory_peak, true,
       fmt::format("STREAM kernel a[i] = b[i], 3 x {}, best of {}", format_mib(gpu.stream.array_bytes), gpu.stream.repeats)},
      {"device memory triad", gpu.stream.triad_gb_per_s, "GB/s", memory_peak, true, "STREAM kernel a[i] = b[i] + s * c[i], as above"},
      {"FMA stress", gpu.stress.tflops, "TFLOP/s", fp32_peak, true,
       fmt::format("{:.1f} s of dependent fp32 FMAs; {} of {} results wrong{}", gpu.stress.seconds, gpu.stress.mismatched_values,
                   gpu.stress.checked_values, gpu.stress.mismatched_values > 0 ? ": FAULTY GPU" : "")},
      {"host to device", gpu.memory.host_to_device_gb_per_s, "GB/s", gpu.peaks.pcie_gb_per_s, true,
       "pinned host memory, median; peak: the PCIe link's rate"},
      {"device to host", gpu.memory.device_to_host_gb_per_s, "GB/s", gpu.peaks.pcie_gb_per_s, true, "pinned host memory, median"},
  });
  if (!gpu.all_reduce) {
    std::printf("  NCCL all-reduce: skipped: %s\n", gpu.all_reduce_skipped_reason.c_str());
    return;
  }
  const kernels::AllReduceBandwidth& all_reduce = *gpu.all_reduce;
  const std::string how = fmt::format("{} GPUs, {} fp32 sum per GPU, NCCL {}, best; ", all_reduce.ranks, format_mib(all_reduce.bytes),
                                      all_reduce.nccl_version);
  print_rows({
      {"all-reduce algbw", all_reduce.algbw_gb_per_s, "GB/s", std::nullopt, false, how + "bytes / time"},
      {"all-reduce busbw", all_reduce.busbw_gb_per_s, "GB/s", std::nullopt, false, how + "algbw x 2(n-1)/n, as nccl-tests"},
  });
}

// ---- JSON ----

using Json = nlohmann::ordered_json;

template <typename Value>
Json optional_json(const std::optional<Value>& value) {
  return value ? Json(*value) : Json(nullptr);
}

Json gpu_json(const hardware::GpuInfo& gpu) {
  Json throttle = nullptr;
  if (gpu.throttle_reasons) throttle = hardware::throttle_reason_names(*gpu.throttle_reasons);
  Json datasheet = nullptr;
  if (const auto peaks = hardware::datasheet_peaks(gpu.name))
    datasheet = Json{{"model", peaks->model},
                     {"fp32_tflops", peaks->fp32_tflops},
                     {"tf32_dense_tflops", peaks->tf32_dense_tflops},
                     {"fp16_dense_tflops", peaks->fp16_dense_tflops},
                     {"bf16_dense_tflops", peaks->bf16_dense_tflops},
                     {"memory_tb_per_s", peaks->memory_tb_per_s}};
  return Json{{"index", gpu.index},
              {"name", gpu.name},
              {"uuid", gpu.uuid},
              {"memory_total_bytes", optional_json(gpu.memory_total_bytes)},
              {"memory_used_bytes", optional_json(gpu.memory_used_bytes)},
              {"pcie_generation", optional_json(gpu.pcie_generation)},
              {"pcie_width", optional_json(gpu.pcie_width)},
              {"pcie_max_generation", optional_json(gpu.pcie_max_generation)},
              {"pcie_max_width", optional_json(gpu.pcie_max_width)},
              {"power_limit_watts", optional_json(gpu.power_limit_watts)},
              {"temperature_c", optional_json(gpu.temperature_c)},
              {"throttle_reasons", throttle},
              {"datasheet", datasheet}};
}

Json training_json(const train::TrainingThroughput& training) {
  return Json{{"task_id", training.task_id},
              {"device", training.device},
              {"threads", training.threads},
              {"batch_size", training.batch_size},
              {"steps", training.steps},
              {"passes", training.passes},
              {"best_pass_seconds", training.seconds},
              {"setup_seconds", training.setup_seconds},
              {"samples_per_s", training.samples_per_second}};
}

Json gpt_json(const BenchReport& report) {
  const train::TrainingThroughput& gpt = report.gpt;
  Json mfu_percent = nullptr, peak_gflops = nullptr;
  if (report.mfu_peak_flops) {
    mfu_percent = 100.0 * gpt.model_flops_per_second / *report.mfu_peak_flops;
    peak_gflops = *report.mfu_peak_flops / 1e9;
  }
  return Json{{"task_id", gpt.task_id},
              {"device", gpt.device},
              {"threads", gpt.threads},
              {"vocab_size", report.gpt_model.vocab_size},
              {"context", report.gpt_model.context},
              {"layers", report.gpt_model.layers},
              {"heads", report.gpt_model.heads},
              {"embed", report.gpt_model.embed},
              {"precision", report.gpt_precision},
              {"batch_size", gpt.batch_size},
              {"steps", gpt.steps},
              {"passes", gpt.passes},
              {"best_pass_seconds", gpt.seconds},
              {"setup_seconds", gpt.setup_seconds},
              {"samples_per_s", gpt.samples_per_second},
              {"tokens_per_s", gpt.tokens_per_second},
              {"non_embedding_parameters", gpt.non_embedding_parameters},
              {"flop_per_token", gpt.flop_per_token},
              {"model_gflops", gpt.model_flops_per_second / 1e9},
              {"mfu_peak_gflops", peak_gflops},
              {"mfu_peak_source", report.mfu_peak_source},
              {"mfu_percent", mfu_percent}};
}

Json all_reduce_json(const GpuMeasurements& gpu) {
  if (!gpu.all_reduce) return Json{{"skipped_reason", gpu.all_reduce_skipped_reason}};
  const kernels::AllReduceBandwidth& all_reduce = *gpu.all_reduce;
  return Json{{"ranks", all_reduce.ranks},
              {"bytes", all_reduce.bytes},
              {"nccl_version", all_reduce.nccl_version},
              {"algbw_gb_per_s", all_reduce.algbw_gb_per_s},
              {"busbw_gb_per_s", all_reduce.busbw_gb_per_s},
              {"skipped_reason", nullptr}};
}

Json report_json(const BenchReport& report) {
  Json json{
      {"solver_version", std::string(solver_version())},
      {"mode", report.quick ? "quick" : "full"},
      {"host",
       {{"cpu_model", report.host.cpu_model},
        {"logical_cpus", report.host.logical_cpus},
        {"memory_total_bytes", report.host.memory_total_bytes},
        {"last_level_cache_bytes", report.host.last_level_cache_bytes}}},
      {"cpu",
       {{"matmul_fp32_gflops", report.cpu_matmul.gflops},
        {"matmul_n", report.cpu_matmul.n},
        {"matmul_flop_per_product", report.cpu_matmul.flop},
        {"matmul_threads", report.cpu_matmul.threads},
        {"matmul_blas", report.cpu_matmul.blas},
        {"matmul_peak_gflops", nullptr},
        {"memory_copy_gb_per_s", report.memory.copy_gb_per_s},
        {"memory_triad_gb_per_s", report.memory.triad_gb_per_s},
        {"memory_array_bytes", report.memory.array_bytes},
        {"memory_threads", report.memory.threads},
        {"memory_peak_gb_per_s", nullptr},
        {"sha256_gb_per_s", report.sha256.gb_per_s},
        {"sha256_buffer_bytes", report.sha256.buffer_bytes}}},
      {"disk", {{"dir", report.disk.dir.string()}, {"write_fsync_gb_per_s", report.disk.gb_per_s}, {"bytes", report.disk.bytes}}},
      {"training", training_json(report.training)},
      {"training_cpu", report.cpu_training ? training_json(*report.cpu_training) : Json(nullptr)},
      {"training_gpt", gpt_json(report)},
      {"gpu_count", report.inventory.gpus.size()},
      {"cuda_device_count", report.torch_cuda_devices},
      {"nvml",
       {{"available", report.inventory.unavailable_reason.empty()},
        {"unavailable_reason", report.inventory.unavailable_reason},
        {"driver_version", report.inventory.driver_version},
        {"cuda_driver_version", report.inventory.cuda_driver_version}}},
  };
  Json gpus = Json::array();
  for (const hardware::GpuInfo& gpu : report.inventory.gpus) gpus.push_back(gpu_json(gpu));
  json["gpus"] = gpus;
  if (!report.gpu) {
    json["gpu_benchmark"] = Json{{"skipped_reason", report.gpu_skipped_reason}};
    return json;
  }
  const GpuMeasurements& gpu = *report.gpu;
  const auto& datasheet = gpu.peaks.datasheet;
  json["gpu_benchmark"] = Json{
      {"device", gpu.matmul_fp32.device},
      {"name", gpu.properties.name},
      {"sm_count", gpu.properties.sm_count},
      {"compute_capability", fmt::format("{}.{}", gpu.properties.compute_major, gpu.properties.compute_minor)},
      {"memory_bytes_cuda", gpu.properties.memory_bytes},
      {"matmul_n", gpu.matmul_fp32.n},
      {"matmul_fp32_tflops", gpu.matmul_fp32.gflops / 1e3},
      {"matmul_fp32_peak_tflops", datasheet ? Json(datasheet->fp32_tflops) : Json(nullptr)},
      {"matmul_tf32_tflops", gpu.matmul_tf32.gflops / 1e3},
      {"matmul_tf32_peak_tflops", datasheet ? Json(datasheet->tf32_dense_tflops) : Json(nullptr)},
      {"matmul_fp16_tflops", gpu.matmul_fp16.gflops / 1e3},
      {"matmul_fp16_peak_tflops", datasheet ? Json(datasheet->fp16_dense_tflops) : Json(nullptr)},
      {"matmul_bf16_tflops", gpu.matmul_bf16.gflops / 1e3},
      {"matmul_bf16_peak_tflops", datasheet ? Json(datasheet->bf16_dense_tflops) : Json(nullptr)},
      {"memory_bytes", gpu.stream.array_bytes},
      {"memory_copy_gb_per_s", gpu.stream.copy_gb_per_s},
      {"memory_triad_gb_per_s", gpu.stream.triad_gb_per_s},
      {"memory_peak_gb_per_s", datasheet ? Json(datasheet->memory_tb_per_s * 1e3) : Json(nullptr)},
      {"host_to_device_gb_per_s", gpu.memory.host_to_device_gb_per_s},
      {"device_to_host_gb_per_s", gpu.memory.device_to_host_gb_per_s},
      {"pcie_peak_gb_per_s", optional_json(gpu.peaks.pcie_gb_per_s)},
      {"stress_tflops", gpu.stress.tflops},
      {"stress_seconds", gpu.stress.seconds},
      {"stress_checked_values", gpu.stress.checked_values},
      {"stress_mismatched_values", gpu.stress.mismatched_values},
      {"all_reduce", all_reduce_json(gpu)},
      {"skipped_reason", nullptr}};
  return json;
}

// Measures this machine (docs/benchmarks.md) and prints a table or JSON.
int bench_command(const BenchOptions& options) {
  const BenchReport report = measure(options);
  if (options.save_file) {
    if (options.save_file->has_parent_path()) std::filesystem::create_directories(options.save_file->parent_path());
    write_file_durably(*options.save_file, report_json(report).dump(2));
    log_info("bench", "figures saved to {}; the agent registers with them", options.save_file->string());
  }
  if (options.json) {
    std::printf("%s\n", report_json(report).dump(2).c_str());
  } else {
    print_table(report);
  }
  return agent::kExitOk;
}

}  // namespace

Command add_bench_command(CLI::App& parent) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* command = parent.add_subcommand("bench", "Measure this machine: matmul, memory, SHA-256, disk, training, GPUs");
  command->add_flag("--quick", options->quick, "Fewer repeats, smaller sizes: about 25 s on 2 idle cores instead of 90");
  command->add_flag("--json", options->json, "Print the figures as JSON");
  command->add_option("--device", options->device,
                      "Where matmul and training run: cpu, cuda or cuda:N (default: cuda:0 when LibTorch sees a GPU, else cpu)");
  command->add_option("--save", options->save_file,
                      "Also write the figures as JSON to this file; `solver agent` sends them when it registers "
                      "(its default: <work_dir>/bench.json)");
  command->add_option("--dir", options->disk_dir, "Folder for the disk test (default: the current folder)")
      ->check(CLI::ExistingDirectory);
  return {command, [options] { return bench_command(*options); }};
}

}  // namespace solver::cli
