// The device check every CUDA entry point of kernels/ starts with (builds with CUDA only).
#pragma once

#include <string_view>

namespace solver::kernels::detail {

// Throws Error(Cuda) when CUDA sees no device (no driver, or no GPU visible), Error(Config)
// naming `what` when `device` is not one of the devices it sees.
void require_cuda_device(int device, std::string_view what);

}  // namespace solver::kernels::detail
