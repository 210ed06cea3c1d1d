// Host launchers for stream.cu. Plain C++17 with no CUDA types, for the reason distance.cuh
// gives: stream_cuda.cpp (C++20) calls them and stream.cu (C++17) defines them. Every
// function throws Error(Cuda) naming the failed CUDA call, its file and line.
#pragma once

#include <cstddef>

namespace solver::kernels {

// The fastest pass of each kernel, in seconds, over three device arrays of `count` doubles.
struct StreamBestSeconds {
  double copy = 0.0;
  double triad = 0.0;
};

// Runs copy then triad `repeats` times on `device` after one untimed pass of each, timing
// each pass with CUDA events around that kernel alone; checks the triad's result.
StreamBestSeconds stream_best_seconds_cuda(int device, std::size_t count, int repeats);

// a = b + s * c on `device`, for `count` doubles in host memory at a, b and c.
void stream_triad_on_device(int device, double* a, const double* b, const double* c, double s, std::size_t count);

}  // namespace solver::kernels
