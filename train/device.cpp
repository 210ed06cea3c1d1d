// LibTorch devices, CUDA checks, thread counts and the autocast guard. Autocast's C++ API changed
// in PyTorch 2.4 (one function per setting taking the device type, replacing the per-device
// functions), so the guard goes through helpers that pick the API by version.
#include "train/detail/device.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>
#ifdef SOLVER_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace solver::train::detail {
namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(c10::DeviceType type) { return at::autocast::is_autocast_enabled(type); }
c10::ScalarType autocast_dtype(c10::DeviceType type) { return at::autocast::get_autocast_dtype(type); }
void set_autocast(c10::DeviceType type, bool enabled, c10::ScalarType dtype) {
  at::autocast::set_autocast_enabled(type, enabled);
  at::autocast::set_autocast_dtype(type, dtype);
}
#else
bool autocast_enabled(c10::DeviceType type) {
  return type == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
c10::ScalarType autocast_dtype(c10::DeviceType type) {
  return type == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast(c10::DeviceType type, bool enabled, c10::ScalarType dtype) {
  if (type == c10::kCUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
}
#endif

}  // namespace

c10::Device torch_device(const Device& device) {
  if (!device.is_cuda()) return c10::Device(c10::kCPU);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device.index));
}

void release_cached_cuda_memory() {
#ifdef SOLVER_TORCH_HAS_CUDA
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

void require_usable_cuda(c10::Device device) {
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 0);
  if (!torch::cuda::is_available())
    throw Error(ErrorKind::Cuda, "device " + device.str() +
                                     " requested, but CUDA is unavailable (this LibTorch has no CUDA support, or no "
                                     "GPU and driver are visible); use --device cpu");
  const auto count = static_cast<std::int64_t>(torch::cuda::device_count());
  if (device.index() >= count)
    throw Error(ErrorKind::Cuda, "device " + device.str() + " requested, but only " + std::to_string(count) +
                                     " CUDA device(s) are visible (cuda:0 to cuda:" + std::to_string(count - 1) + ")");
}

AutocastGuard::AutocastGuard(c10::Device device, bool enabled) : device_type_(device.type()), enabled_(enabled) {
  if (!enabled_) return;
  previous_enabled_ = autocast_enabled(device_type_);
  previous_dtype_ = autocast_dtype(device_type_);
  set_autocast(device_type_, true, c10::ScalarType::BFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_type_, previous_enabled_, previous_dtype_);
}

int resolved_threads(int requested) {
  if (requested < 0) throw Error(ErrorKind::Config, "threads: expected 0 (automatic) or a positive count, got " + std::to_string(requested));
  if (requested > 0) return requested;
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
}

}  // namespace solver::train::detail
