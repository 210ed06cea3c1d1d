// The counting CPU allocator behind host_memory.h. Each allocation takes 64 bytes more from
// c10's own aligned allocation and keeps its size there, in front of the data, so the deleter
// needs no table and the data stays 64-byte aligned (c10's gAlignment). The data pointer is its
// own context, as c10's default allocator's is, so raw_allocate() works on it too.
#include "train/host_memory.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <atomic>
#include <cstring>

namespace solver::train {
namespace {

constexpr std::size_t kHeaderBytes = 64;

std::atomic<std::uint64_t> held_bytes{0};
std::atomic<std::uint64_t> peak_bytes{0};
std::atomic<std::uint64_t> limit_bytes{0};

void free_counted(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeaderBytes;
  std::uint64_t bytes = 0;
  std::memcpy(&bytes, base, sizeof bytes);
  held_bytes.fetch_sub(bytes);
  c10::free_cpu(base);
}

std::string megabytes(std::uint64_t bytes) { return fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6); }

c10::DataPtr allocate_counted(std::size_t size) {
  const c10::Device cpu(c10::DeviceType::CPU);
  if (size == 0) return {nullptr, nullptr, &free_counted, cpu};
  const auto bytes = static_cast<std::uint64_t>(size);
  const std::uint64_t held = held_bytes.fetch_add(bytes) + bytes;
  if (const std::uint64_t limit = limit_bytes.load(); limit > 0 && held > limit) {
    held_bytes.fetch_sub(bytes);
    C10_THROW_ERROR(OutOfMemoryError, fmt::format("the host's tensor memory limit: {} asked with {} held, over the "
                                                  "limit of {} (limits.max_host_memory_gb)",
                                                  megabytes(bytes), megabytes(held - bytes), megabytes(limit)));
  }
  for (std::uint64_t peak = peak_bytes.load(); held > peak && !peak_bytes.compare_exchange_weak(peak, held);) {
  }
  void* base = nullptr;
  try {
    base = c10::alloc_cpu(size + kHeaderBytes);
  } catch (const c10::Error& error) {
    held_bytes.fetch_sub(bytes);
    C10_THROW_ERROR(OutOfMemoryError, error.what_without_backtrace());
  }
  std::memcpy(base, &bytes, sizeof bytes);
  void* data = static_cast<char*>(base) + kHeaderBytes;
  return {data, data, &free_counted, cpu};
}

// allocate() is const in LibTorch 1.x and not in 2.3 and later, which also added copy_data():
// both forms are here, and each version overrides the one it declares.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t size) const { return allocate_counted(size); }
  c10::DataPtr allocate(std::size_t size) { return allocate_counted(size); }
  c10::DeleterFnPtr raw_deleter() const override { return &free_counted; }
  void copy_data(void* destination, const void* source, std::size_t count) const {
    std::memcpy(destination, source, count);
  }
};

// Installs the allocator once; c10 keeps the highest priority one (its default has 0).
void install_counting_allocator() {
  static CountingCpuAllocator allocator;
  static const bool installed = [] {
    c10::SetCPUAllocator(&allocator, 1);
    return true;
  }();
  (void)installed;
}

}  // namespace

void limit_host_tensor_memory(std::uint64_t bytes) {
  install_counting_allocator();
  limit_bytes = bytes;
}

HostTensorMemory host_tensor_memory() {
  install_counting_allocator();
  return {held_bytes.load(), peak_bytes.load(), limit_bytes.load()};
}

void reset_host_tensor_peak() {
  install_counting_allocator();
  peak_bytes = held_bytes.load();
}

}  // namespace solver::train
