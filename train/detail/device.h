// Devices, threads and LibTorch errors, shared by the Trainer and the benchmarks so that both
// accept the same device names and report failures the same way.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <new>
#include <string>

#include "common/device.h"
#include "common/error.h"

namespace solver::train::detail {

// LibTorch's name for a device (common/device.h parses the names).
c10::Device torch_device(const Device& device);

// Throws Error(Cuda) when this LibTorch has no CUDA, no GPU is visible or the index is out of
// range. Sets CUBLAS_WORKSPACE_CONFIG first (unless already set): cuBLAS is deterministic only
// with a fixed workspace and reads the variable once, at first use.
void require_usable_cuda(c10::Device device);

// Gives the GPU memory LibTorch's caching allocator keeps for reuse back to the driver (a
// no-op in a LibTorch without CUDA): once a task is over, the rig's owner gets the memory back.
void release_cached_cuda_memory();

// The intra-op thread count for a request: 0 = min(hardware threads, 4). Throws Error(Config)
// for a negative request.
int resolved_threads(int requested);

// While alive, bf16 autocast on the device's type, as Python's
// `with torch.autocast(device_type, dtype=torch.bfloat16):` does: ops on autocast's lists run in
// bf16 or fp32, and casts of the weights are cached. On destruction the previous state returns
// and, when no other guard is open, the cast cache is cleared (the weights it holds copies of
// change at the optimizer step). A guard made with `enabled` false changes nothing. Autocast state
// is per thread.
class AutocastGuard {
 public:
  AutocastGuard(c10::Device device, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool enabled_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::BFloat16;
};

// libtorch reports failures as c10::Error; callers get solver::Error. On a GPU a failure may
// be the device's or the model's and we cannot tell, so it is Error(Cuda) there, Error(Input)
// on the CPU. Running out of memory (the GPU's, or the host's limit: train/host_memory.h) is
// Error(OutOfMemory): the rig's limit, which more shards per step may get under.
template <typename Body>
auto translating_torch_errors(c10::Device device, const std::string& context, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const c10::OutOfMemoryError& error) {
    throw Error(ErrorKind::OutOfMemory, context + ": out of memory on " + device.str() + ": " + error.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw Error(ErrorKind::OutOfMemory, context + ": out of host memory");
  } catch (const c10::Error& error) {
    throw Error(device.is_cuda() ? ErrorKind::Cuda : ErrorKind::Input,
                context + ": libtorch: " + error.what_without_backtrace());
  }
}

}  // namespace solver::train::detail
