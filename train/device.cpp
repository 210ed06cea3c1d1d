#include "train/detail/device.h"

#include <torch/cuda.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace solver::train::detail {

c10::Device parse_device(const std::string& text) {
  if (text == "cpu") return c10::Device(c10::kCPU);
  if (text == "cuda") return c10::Device(c10::kCUDA, 0);
  int index = -1;
  if (text.starts_with("cuda:")) {
    const char* begin = text.data() + 5;
    const char* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(begin, end, index);
    if (error != std::errc() || stop != end || begin == end || index < 0 || index > 127) index = -1;
  }
  if (index < 0) throw Error(ErrorKind::Config, "device: expected cpu, cuda or cuda:N, got \"" + text + "\"");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
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

int torch_cuda_device_count() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

int resolved_threads(int requested) {
  if (requested < 0) throw Error(ErrorKind::Config, "threads: expected 0 (automatic) or a positive count, got " + std::to_string(requested));
  if (requested > 0) return requested;
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
}

}  // namespace solver::train::detail
