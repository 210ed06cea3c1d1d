// NCCL all-reduce bandwidth across local GPUs, the figure nccl-tests' all_reduce_perf reports.
// NCCL is not a build dependency: libnccl is opened with dlopen at run time (like NVML in
// hardware/nvml.h), so `solver` builds and starts on machines without it. On GPU machines
// PyTorch's libtorch_cuda already depends on libnccl.so.2, so the soname is found there.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace solver::kernels {

// The library opened: this environment variable's value (a soname or a path) when set,
// otherwise kNcclLibrary.
inline constexpr std::string_view kNcclLibraryEnv = "SOLVER_NCCL_LIBRARY";
inline constexpr std::string_view kNcclLibrary = "libnccl.so.2";

struct AllReduceBandwidth {
  int ranks = 0;               // one per device
  std::size_t bytes = 0;       // float32 data reduced per rank
  double seconds = 0.0;        // the best pass: group launch to the end of every rank's stream
  double algbw_gb_per_s = 0.0;  // bytes / seconds / 1e9
  double busbw_gb_per_s = 0.0;  // algbw * all_reduce_bus_factor(ranks): comparable across rank counts
  std::string nccl_version;    // "2.21.5"
};

// nccl-tests' bus factor for all-reduce, 2(n-1)/n (doc/PERFORMANCE.md): a ring all-reduce moves
// 2(n-1)/n of the data over each rank's link, so busbw reads against the link's peak whatever
// the rank count. 0 for one rank (nothing crosses a link) and for fewer.
constexpr double all_reduce_bus_factor(int ranks) {
  return ranks <= 1 ? 0.0 : 2.0 * (ranks - 1) / ranks;
}

// Why measure_all_reduce cannot run here: the library's dlopen error or a missing entry point
// ("this build has no CUDA ..." in builds without CUDA); nullopt when NCCL loads. Needs no GPU.
std::optional<std::string> nccl_unavailable_reason();

// All-reduces (float32 sum) `bytes` per rank across `devices` (CUDA device ordinals, one rank
// each, communicators from one thread with ncclCommInitAll): warm-up passes, a check that the
// sums are right, then `repeats` timed passes; returns the best. Blocks until done.
// Throws Error(Config) for an empty or duplicated device list, a negative or absent ordinal,
// bytes not a positive multiple of 4, or repeats < 1 (the list is checked before any CUDA or
// NCCL call); Error(Cuda) when NCCL cannot be loaded, a CUDA or NCCL call fails, or the
// all-reduce returns wrong sums.
AllReduceBandwidth measure_all_reduce(std::span<const int> devices, std::size_t bytes, int repeats);

}  // namespace solver::kernels
