// What the .cu files of kernels/ share: the error check every CUDA call goes through, and
// owners for device memory, events and the current device, so that a throw in the middle of
// a measurement leaks nothing and leaves the caller's device selected. Included only by .cu
// files (it needs cuda_runtime.h).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "common/error.h"

// Every CUDA call goes through here: a failure becomes Error(Cuda) with file, line and call text.
#define SOLVER_CUDA_CHECK(call)                                                                 \
  do {                                                                                          \
    const cudaError_t solver_cuda_status = (call);                                              \
    if (solver_cuda_status != cudaSuccess)                                                      \
      throw ::solver::Error(::solver::ErrorKind::Cuda,                                          \
                            std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #call + \
                                " failed: " + cudaGetErrorString(solver_cuda_status));          \
  } while (false)

namespace solver::kernels {

// Makes `device` current for its lifetime, then restores the device that was current before.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    SOLVER_CUDA_CHECK(cudaGetDevice(&previous_));
    SOLVER_CUDA_CHECK(cudaSetDevice(device));
  }
  ~ScopedDevice() { cudaSetDevice(previous_); }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
};

// `count` elements of T on the current device, uninitialised, freed on destruction.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t count) : count_(count) { SOLVER_CUDA_CHECK(cudaMalloc(&data_, count * sizeof(T))); }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* data() const { return data_; }
  std::size_t size() const { return count_; }

  void copy_from_host(const T* host) { SOLVER_CUDA_CHECK(cudaMemcpy(data_, host, count_ * sizeof(T), cudaMemcpyHostToDevice)); }
  void copy_to_host(T* host) const { SOLVER_CUDA_CHECK(cudaMemcpy(host, data_, count_ * sizeof(T), cudaMemcpyDeviceToHost)); }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

class CudaEvent {
 public:
  CudaEvent() { SOLVER_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~CudaEvent() { cudaEventDestroy(event_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record() { SOLVER_CUDA_CHECK(cudaEventRecord(event_)); }
  void synchronize() { SOLVER_CUDA_CHECK(cudaEventSynchronize(event_)); }
  // Seconds from `start` to this event; both must have completed.
  double seconds_since(const CudaEvent& start) const {
    float milliseconds = 0.0f;
    SOLVER_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start.event_, event_));
    return milliseconds / 1e3;
  }

 private:
  cudaEvent_t event_ = nullptr;
};

// Blocks of `threads_per_block` that fill every SM of the current device at the occupancy
// `kernel` allows: one full wave, so no SM idles while a last partial wave runs.
template <typename Kernel>
unsigned full_wave_blocks(Kernel kernel, int threads_per_block) {
  int device = 0, multiprocessors = 0, blocks_per_multiprocessor = 0;
  SOLVER_CUDA_CHECK(cudaGetDevice(&device));
  SOLVER_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  SOLVER_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_multiprocessor, kernel, threads_per_block, 0));
  if (blocks_per_multiprocessor < 1)
    throw Error(ErrorKind::Cuda, "a kernel of " + std::to_string(threads_per_block) +
                                     " threads per block fits no SM of device " + std::to_string(device));
  return static_cast<unsigned>(multiprocessors * blocks_per_multiprocessor);
}

}  // namespace solver::kernels
