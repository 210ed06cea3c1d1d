// NCCL all-reduce bandwidth (all_reduce.h) for builds with CUDA: buffers, streams and the
// checks go through the static cudart, NCCL through dlopen. Plain C++20 compiled by the host
// compiler: it launches no kernel of its own, NCCL does. no_cuda.cpp replaces this file in
// builds without CUDA.
//
// Timing follows nccl-tests (src/common.cu): a host clock around one group of all-reduces,
// one per rank, and the synchronisation of every rank's stream; out-of-place buffers.
#include "kernels/all_reduce.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "kernels/detail/cuda_devices.h"

namespace solver::kernels {
namespace {

// NCCL's C ABI as nccl.h (src/nccl.h.in) declares it, unchanged across NCCL 2.x: every call
// returns ncclResult_t (ncclSuccess = 0), communicators are opaque pointers, and the enums
// ncclResult_t, ncclDataType_t and ncclRedOp_t are C enums, passed as int.
using NcclComm = struct NcclCommOpaque*;  // ncclComm_t
using NcclResult = int;                   // ncclResult_t
constexpr NcclResult kNcclSuccess = 0;
constexpr int kNcclFloat32 = 7;  // ncclDataType_t ncclFloat32
constexpr int kNcclSum = 0;      // ncclRedOp_t ncclSum

struct Nccl {
  std::string library;
  std::string unavailable_reason;  // empty when every entry point below is bound
  NcclResult (*get_version)(int*) = nullptr;
  NcclResult (*comm_init_all)(NcclComm*, int, const int*) = nullptr;
  NcclResult (*all_reduce)(const void*, void*, std::size_t, int, int, NcclComm, cudaStream_t) = nullptr;
  NcclResult (*group_start)() = nullptr;
  NcclResult (*group_end)() = nullptr;
  NcclResult (*comm_destroy)(NcclComm) = nullptr;
  const char* (*error_string)(NcclResult) = nullptr;
};

// Rank r's element i holds (r + 1) * (1 + i % kDistinctValues): small integers whose sum over
// kMaxRanks ranks stays below 2^24, so every partial sum is exact in float32 whatever order
// NCCL adds in, and the result can be compared exactly.
constexpr std::size_t kDistinctValues = 251;  // prime, so a shifted chunk shows as wrong values
constexpr std::size_t kMaxRanks = 256;
constexpr std::size_t kPatternFloats = kDistinctValues * 256;  // copied from the host, then doubled on the device
// The first pass also sets up NCCL's connections (lazily, since NCCL 2.12): never timed.
constexpr int kWarmupPasses = 2;

std::string nccl_library_name() {
  const char* configured = std::getenv(std::string(kNcclLibraryEnv).c_str());
  return configured != nullptr && *configured != '\0' ? std::string(configured) : std::string(kNcclLibrary);
}

// Opened and never closed: NCCL's threads and its own static cudart may outlive a communicator,
// and unmapping code under them would crash; dlopen of a library already loaded (by this call
// before, or by libtorch_cuda) only counts a reference.
Nccl load_nccl() {
  Nccl nccl;
  nccl.library = nccl_library_name();
  void* handle = ::dlopen(nccl.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    nccl.unavailable_reason = "NCCL library " + nccl.library + " could not be loaded (" +
                              (why != nullptr ? std::string(why) : std::string("dlopen gave no reason")) + "); set " +
                              std::string(kNcclLibraryEnv) + " to libnccl.so.2's path";
    return nccl;
  }
  const char* missing = nullptr;
  const auto bind = [&](const char* symbol, auto& function) {
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(::dlsym(handle, symbol));
    if (function == nullptr && missing == nullptr) missing = symbol;
  };
  bind("ncclGetVersion", nccl.get_version);
  bind("ncclCommInitAll", nccl.comm_init_all);
  bind("ncclAllReduce", nccl.all_reduce);
  bind("ncclGroupStart", nccl.group_start);
  bind("ncclGroupEnd", nccl.group_end);
  bind("ncclCommDestroy", nccl.comm_destroy);
  bind("ncclGetErrorString", nccl.error_string);
  if (missing != nullptr)
    nccl.unavailable_reason = nccl.library + " lacks NCCL's entry point " + missing + " (not an NCCL 2 library?)";
  return nccl;
}

void check_nccl(const Nccl& nccl, NcclResult status, const char* call) {
  if (status == kNcclSuccess) return;
  const char* text = nccl.error_string(status);
  throw Error(ErrorKind::Cuda, std::string("all-reduce: ") + call + " failed: " +
                                   (text != nullptr ? text : "no error text") + " (ncclResult_t " +
                                   std::to_string(status) + ")");
}

void check_cuda(cudaError_t status, const char* call, int device) {
  if (status == cudaSuccess) return;
  throw Error(ErrorKind::Cuda, std::string("all-reduce: ") + call + " on device " + std::to_string(device) +
                                   " failed: " + cudaGetErrorString(status));
}

// NCCL_VERSION(X,Y,Z) of nccl.h: X*1000 + Y*100 + Z up to 2.8, X*10000 + Y*100 + Z after.
std::string version_text(int code) {
  const bool wide = code >= 10000;
  const int major = wide ? code / 10000 : code / 1000;
  const int minor = wide ? code % 10000 / 100 : code % 1000 / 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

// Everything measure_all_reduce checks before touching CUDA or NCCL.
void check_arguments(std::span<const int> devices, std::size_t bytes, int repeats) {
  if (devices.empty())
    throw Error(ErrorKind::Config, "all-reduce: the device list is empty; expected one or more CUDA device ordinals");
  if (devices.size() > kMaxRanks)
    throw Error(ErrorKind::Config, "all-reduce: " + std::to_string(devices.size()) + " devices given; expected at most " +
                                       std::to_string(kMaxRanks) + " (the result check's sums must stay exact)");
  for (const int device : devices)
    if (device < 0)
      throw Error(ErrorKind::Config, "all-reduce: device ordinal " + std::to_string(device) +
                                         " is negative; expected CUDA ordinals 0, 1, ...");
  std::vector<int> sorted(devices.begin(), devices.end());
  std::sort(sorted.begin(), sorted.end());
  if (const auto twin = std::adjacent_find(sorted.begin(), sorted.end()); twin != sorted.end())
    throw Error(ErrorKind::Config, "all-reduce: device " + std::to_string(*twin) +
                                       " is listed twice; expected each device once (NCCL runs one rank per device)");
  if (bytes == 0 || bytes % sizeof(float) != 0)
    throw Error(ErrorKind::Config, "all-reduce: " + std::to_string(bytes) +
                                       " bytes per rank; expected a positive multiple of 4 (float32 elements)");
  if (repeats < 1)
    throw Error(ErrorKind::Config, "all-reduce: " + std::to_string(repeats) + " repeats; expected at least 1");
}

float element_value(std::size_t rank, std::size_t index) {
  return static_cast<float>((rank + 1) * (1 + index % kDistinctValues));
}

float expected_sum(std::size_t ranks, std::size_t index) {
  return static_cast<float>(ranks * (ranks + 1) / 2 * (1 + index % kDistinctValues));
}

struct Rank {
  int device = 0;
  float* send = nullptr;
  float* receive = nullptr;
  cudaStream_t stream = nullptr;
  NcclComm comm = nullptr;
};

// The ranks' buffers, streams and communicators, released on destruction (errors ignored:
// there is nothing left to do about them).
class Ranks {
 public:
  Ranks(const Nccl& nccl, std::span<const int> devices) : nccl_(nccl) {
    for (const int device : devices) ranks_.push_back(Rank{.device = device});
  }
  ~Ranks() {
    for (Rank& rank : ranks_) {
      if (rank.comm != nullptr) nccl_.comm_destroy(rank.comm);
      cudaSetDevice(rank.device);
      if (rank.stream != nullptr) cudaStreamDestroy(rank.stream);
      cudaFree(rank.send);
      cudaFree(rank.receive);
    }
  }
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;
  std::vector<Rank>& all() { return ranks_; }

 private:
  const Nccl& nccl_;
  std::vector<Rank> ranks_;
};

// Fills rank r's send buffer with element_value(r, i) and zeroes its receive buffer, so an
// all-reduce that writes nothing shows as wrong sums too.
void fill_buffers(const Rank& rank, std::size_t rank_index, std::size_t count) {
  const std::size_t pattern_count = std::min(count, kPatternFloats);
  std::vector<float> pattern(pattern_count);
  for (std::size_t i = 0; i < pattern_count; ++i) pattern[i] = element_value(rank_index, i);
  check_cuda(cudaMemcpy(rank.send, pattern.data(), pattern_count * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy",
             rank.device);
  // Each copy doubles the filled prefix; its length stays a multiple of kDistinctValues, so
  // element i still holds element_value(r, i).
  for (std::size_t filled = pattern_count; filled < count;) {
    const std::size_t chunk = std::min(filled, count - filled);
    check_cuda(cudaMemcpy(rank.send + filled, rank.send, chunk * sizeof(float), cudaMemcpyDeviceToDevice), "cudaMemcpy",
               rank.device);
    filled += chunk;
  }
  check_cuda(cudaMemset(rank.receive, 0, count * sizeof(float)), "cudaMemset", rank.device);
}

void set_up(const Nccl& nccl, std::vector<Rank>& ranks, std::span<const int> devices, std::size_t count) {
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    Rank& rank = ranks[r];
    check_cuda(cudaSetDevice(rank.device), "cudaSetDevice", rank.device);
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&rank.send), count * sizeof(float)), "cudaMalloc", rank.device);
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&rank.receive), count * sizeof(float)), "cudaMalloc", rank.device);
    check_cuda(cudaStreamCreateWithFlags(&rank.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", rank.device);
    fill_buffers(rank, r, count);
  }
  std::vector<NcclComm> comms(ranks.size(), nullptr);
  check_nccl(nccl, nccl.comm_init_all(comms.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
  for (std::size_t r = 0; r < ranks.size(); ++r) ranks[r].comm = comms[r];
}

// One all-reduce on every rank, launched as one group; returns the seconds until every
// rank's stream has finished.
double timed_pass(const Nccl& nccl, std::vector<Rank>& ranks, std::size_t count) {
  const auto start = std::chrono::steady_clock::now();
  check_nccl(nccl, nccl.group_start(), "ncclGroupStart");
  for (const Rank& rank : ranks) {
    const NcclResult status =
        nccl.all_reduce(rank.send, rank.receive, count, kNcclFloat32, kNcclSum, rank.comm, rank.stream);
    if (status != kNcclSuccess) {
      nccl.group_end();  // close the group this thread opened, or later NCCL calls would join it
      check_nccl(nccl, status, "ncclAllReduce");
    }
  }
  check_nccl(nccl, nccl.group_end(), "ncclGroupEnd");
  for (const Rank& rank : ranks) {
    check_cuda(cudaSetDevice(rank.device), "cudaSetDevice", rank.device);
    check_cuda(cudaStreamSynchronize(rank.stream), "cudaStreamSynchronize", rank.device);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Reads back a few elements of every rank's result (both ends, the middle, a third in) and
// compares them exactly: a bench that reports the bandwidth of a broken collective would lie.
void verify_sums(std::vector<Rank>& ranks, std::size_t count, const std::string& version) {
  const std::vector<std::size_t> indices{0, count / 3, count / 2, count - 1};
  for (const Rank& rank : ranks) {
    for (const std::size_t index : indices) {
      float value = 0.0f;
      check_cuda(cudaSetDevice(rank.device), "cudaSetDevice", rank.device);
      check_cuda(cudaMemcpy(&value, rank.receive + index, sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy",
                 rank.device);
      const float expected = expected_sum(ranks.size(), index);
      if (value != expected)
        throw Error(ErrorKind::Cuda, "all-reduce returned wrong sums: device " + std::to_string(rank.device) +
                                         " element " + std::to_string(index) + " is " + std::to_string(value) +
                                         ", expected " + std::to_string(expected) + " (" + std::to_string(ranks.size()) +
                                         " ranks, NCCL " + version + ")");
    }
  }
}

}  // namespace

std::optional<std::string> nccl_unavailable_reason() {
  Nccl nccl = load_nccl();
  if (nccl.unavailable_reason.empty()) return std::nullopt;
  return std::move(nccl.unavailable_reason);
}

AllReduceBandwidth measure_all_reduce(std::span<const int> devices, std::size_t bytes, int repeats) {
  check_arguments(devices, bytes, repeats);
  const Nccl nccl = load_nccl();
  if (!nccl.unavailable_reason.empty()) throw Error(ErrorKind::Cuda, "all-reduce: " + nccl.unavailable_reason);
  for (const int device : devices) detail::require_cuda_device(device, "all-reduce");

  AllReduceBandwidth result;
  result.ranks = static_cast<int>(devices.size());
  result.bytes = bytes;
  int version = 0;
  check_nccl(nccl, nccl.get_version(&version), "ncclGetVersion");
  result.nccl_version = version_text(version);

  const std::size_t count = bytes / sizeof(float);
  Ranks ranks(nccl, devices);
  set_up(nccl, ranks.all(), devices, count);
  for (int pass = 0; pass < kWarmupPasses; ++pass) timed_pass(nccl, ranks.all(), count);
  verify_sums(ranks.all(), count, result.nccl_version);

  result.seconds = std::numeric_limits<double>::infinity();
  for (int pass = 0; pass < repeats; ++pass) result.seconds = std::min(result.seconds, timed_pass(nccl, ranks.all(), count));
  result.algbw_gb_per_s = static_cast<double>(bytes) / result.seconds / 1e9;
  result.busbw_gb_per_s = result.algbw_gb_per_s * all_reduce_bus_factor(result.ranks);
  log_info("kernels", "all-reduce of {} bytes over {} rank(s): best {:.3f} ms, algbw {:.1f} GB/s, busbw {:.1f} GB/s (NCCL {})",
           bytes, result.ranks, result.seconds * 1e3, result.algbw_gb_per_s, result.busbw_gb_per_s, result.nccl_version);
  return result;
}

}  // namespace solver::kernels
