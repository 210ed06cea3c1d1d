// Host measurements for `solver bench`, in plain C++ (no torch): memory bandwidth with
// STREAM's copy and triad, SHA-256 throughput, and durable disk writes. Each repeats its
// measurement and keeps the best run, as STREAM does: the best run is the one least disturbed
// by other processes, so it is the closest to what the hardware can do. 1 GB = 1e9 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace solver::hardware {

struct HostInfo {
  std::string cpu_model;          // /proc/cpuinfo "model name"; "" when absent (e.g. some ARM kernels)
  int logical_cpus = 0;           // what std::thread::hardware_concurrency sees
  std::uint64_t memory_total_bytes = 0;  // /proc/meminfo MemTotal; 0 when unreadable
  // The last-level caches of all sockets together (each instance once), from
  // /sys/devices/system/cpu/cpu*/cache; 0 when the kernel does not say.
  std::uint64_t last_level_cache_bytes = 0;
};
HostInfo read_host_info();

// The array size for measure_memory_bandwidth: at least `minimum_bytes`, and at least 4x the
// last-level cache (STREAM's rule, so the arrays cannot stay in the cache), but at most an
// eighth of the memory (three arrays: 3/8 of it). When the cap wins, the result measures
// partly the cache: compare the result with 4 x last_level_cache_bytes to tell.
std::size_t stream_array_bytes(const HostInfo& host, std::size_t minimum_bytes);

struct MemoryBandwidthOptions {
  // Bytes of each of the three arrays. STREAM's rule: each at least 4x the last-level cache,
  // or the figure measures the cache.
  std::size_t array_bytes = std::size_t{256} << 20;
  int threads = 0;  // 0: one per logical CPU (bandwidth needs several cores to saturate)
  int repeats = 5;
};

struct MemoryBandwidth {
  std::size_t array_bytes = 0;
  int threads = 0;
  int repeats = 0;
  // STREAM's accounting: bytes the kernel reads plus bytes it writes, per pass over the
  // arrays of doubles; the write-allocate read a cache may add is not counted.
  double copy_gb_per_s = 0.0;   // a[i] = b[i]: 16 bytes per element
  double triad_gb_per_s = 0.0;  // a[i] = b[i] + s * c[i]: 24 bytes per element
};

// Runs copy and triad `repeats` times each over arrays first touched by the threads that use
// them (so they sit on those threads' NUMA nodes); returns the best pass of each. Each pass is
// timed from before any thread starts it to after the last one finishes. Blocks; allocates
// 3 x array_bytes. Throws Error(Config) for a zero size, thread or repeat count, and
// Error(Internal) for a figure no machine could reach (require_possible_memory_bandwidth).
MemoryBandwidth measure_memory_bandwidth(const MemoryBandwidthOptions& options);

// The most GB/s `cpus` logical CPUs can move through their loads and stores, cache or memory:
// a physical bound (host_benchmark.cpp says where it comes from), not an expectation.
double memory_bandwidth_ceiling_gb_per_s(int cpus);

// Throws Error(Internal), naming the figure and the bound, when copy or triad exceeds
// memory_bandwidth_ceiling_gb_per_s(cpus): such a figure is a broken measurement, never sent.
void require_possible_memory_bandwidth(const MemoryBandwidth& measured, int cpus);

struct Sha256Throughput {
  std::size_t buffer_bytes = 0;
  int repeats = 0;
  double gb_per_s = 0.0;  // one thread, as solver hashes every file it writes or checks
};

// Hashes an in-memory buffer of `buffer_bytes` with common/sha256.h `repeats` times; returns
// the best. Blocks. Throws Error(Config) for a zero size or repeat count.
Sha256Throughput measure_sha256(std::size_t buffer_bytes, int repeats);

struct DiskWriteOptions {
  std::filesystem::path dir;  // where solver writes its bundles
  std::size_t bytes = std::size_t{1} << 30;
};

struct DiskWrite {
  std::filesystem::path dir;
  std::size_t bytes = 0;
  double seconds = 0.0;  // write() of every byte plus the fsync that puts them on the device
  double gb_per_s = 0.0;
};

// Writes `bytes` of incompressible data to a new temp file in `dir`, fsyncs it and removes
// it (also when a write fails). One pass: the size, not repetition, is what swamps the page
// cache and the device's write cache. Blocks. Throws Error(Io) when dir is not a writable folder or lacks the space
// (with a margin), Error(Config) for a zero size.
DiskWrite measure_disk_write(const DiskWriteOptions& options);

}  // namespace solver::hardware
