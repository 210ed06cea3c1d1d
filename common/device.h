// The devices a task trains or replays on, as a command line or an agent config names them:
// "cpu", "cuda" (= cuda:0) or "cuda:N", or a comma list of one kind ("cuda:0,cuda:1", data
// parallel). Parsed here, once, for every caller; only train/ maps a Device to LibTorch's.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace solver {

enum class DeviceKind { Cpu, Cuda };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;  // the CUDA ordinal; 0 for the CPU

  bool is_cuda() const { return kind == DeviceKind::Cuda; }
  std::string name() const;  // "cpu" or "cuda:N"
  bool operator==(const Device&) const = default;
};

// CUDA ordinals above this are refused: LibTorch's device index is an int8.
inline constexpr int kMaxCudaIndex = 127;

// "cpu", "cuda" or "cuda:N". Throws Error(Config) naming the text for anything else.
Device parse_device(std::string_view text);

// A comma list of device names, all of one kind (a shard's numerics, autocast's among them,
// depend on the device kind). Throws Error(Config) naming the list and its bad entry.
std::vector<Device> parse_device_list(std::string_view text);

}  // namespace solver
