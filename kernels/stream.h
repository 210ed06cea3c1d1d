// STREAM's copy and triad (McCalpin's memory-bandwidth kernels) on doubles: CPU twins that
// define the arithmetic, and CUDA kernels that reproduce it. `solver bench` measures host
// memory with the twins (hardware/host_benchmark.h runs them on each thread's slice) and
// device memory with the kernels. 1 GB = 1e9 bytes.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace solver::kernels {

// a[i] = b[i]. Throws Error(Input) when the sizes differ.
void stream_copy_cpu(std::span<double> a, std::span<const double> b);

// a[i] = b[i] + s * c[i]: the product rounded, then the sum rounded, never one fused
// multiply-add, which is what the kernel computes too. Throws Error(Input) when the sizes differ.
void stream_triad_cpu(std::span<double> a, std::span<const double> b, std::span<const double> c, double s);

struct DeviceStreamBandwidth {
  int device = 0;
  std::size_t array_bytes = 0;  // of each of the three arrays
  int repeats = 0;
  // STREAM's accounting: bytes read plus bytes written per pass, divided by the seconds of the
  // fastest pass, each pass timed by CUDA events around its kernel alone.
  double copy_gb_per_s = 0.0;   // a[i] = b[i]: 16 bytes per element
  double triad_gb_per_s = 0.0;  // a[i] = b[i] + s * c[i]: 24 bytes per element
};

// Copy and triad over three device arrays of array_bytes each (3 x array_bytes of device
// memory), `repeats` timed passes of each after an untimed one. Blocks. Throws Error(Config)
// for an array under one double, repeats under 1 or a device number out of range,
// Error(Cuda) without a CUDA device or when a CUDA call fails (e.g. out of memory).
DeviceStreamBandwidth measure_stream_cuda(int device, std::size_t array_bytes, int repeats);

// The triad kernel on host data: copies b and c to `device`, runs it, returns a. Lets a test
// compare the kernel with stream_triad_cpu bit for bit. Throws as measure_stream_cuda does,
// and Error(Input) when the sizes differ.
std::vector<double> stream_triad_cuda(int device, std::span<const double> b, std::span<const double> c, double s);

}  // namespace solver::kernels
