// Host measurements on tiny sizes: positive, finite figures; the disk test cleans up after
// itself; bad sizes and folders are errors naming the problem. No speed is asserted: the
// figures depend on the machine and on what else runs on it.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "hardware/host_benchmark.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::hardware;

namespace {

bool positive_finite(double value) { return std::isfinite(value) && value > 0.0; }

}  // namespace

TEST_CASE("The host description names its CPUs and memory", "[hardware]") {
  const HostInfo host = read_host_info();
  CHECK(host.logical_cpus > 0);
  CHECK(host.memory_total_bytes > 0);
}

TEST_CASE("Memory bandwidth on small arrays gives positive copy and triad figures", "[hardware]") {
  const MemoryBandwidth bandwidth = measure_memory_bandwidth({std::size_t{1} << 20, 2, 2});
  CHECK(bandwidth.array_bytes == std::size_t{1} << 20);
  CHECK(bandwidth.threads == 2);
  CHECK(positive_finite(bandwidth.copy_gb_per_s));
  CHECK(positive_finite(bandwidth.triad_gb_per_s));
}

TEST_CASE("Memory bandwidth with more threads than elements still works", "[hardware]") {
  const MemoryBandwidth bandwidth = measure_memory_bandwidth({3 * sizeof(double), 5, 1});
  CHECK(positive_finite(bandwidth.triad_gb_per_s));
}

TEST_CASE("Memory bandwidth rejects empty arrays and zero repeats", "[hardware]") {
  CHECK_THROWS_AS(measure_memory_bandwidth({0, 1, 1}), Error);
  CHECK_THROWS_WITH(measure_memory_bandwidth({1 << 20, 1, 0}), Catch::Contains("repeats"));
}

TEST_CASE("SHA-256 throughput over a small buffer is positive", "[hardware]") {
  const Sha256Throughput sha = measure_sha256(std::size_t{1} << 20, 2);
  CHECK(sha.buffer_bytes == std::size_t{1} << 20);
  CHECK(positive_finite(sha.gb_per_s));
  CHECK_THROWS_AS(measure_sha256(0, 1), Error);
}

TEST_CASE("The disk test writes, fsyncs and removes its file", "[hardware]") {
  test::ScratchDir dir("disk-bench");
  const DiskWrite disk = measure_disk_write({dir.path(), (std::size_t{9} << 20) + 123});  // not a whole number of chunks
  CHECK(disk.bytes == (std::size_t{9} << 20) + 123);
  CHECK(positive_finite(disk.seconds));
  CHECK(positive_finite(disk.gb_per_s));
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("The disk test names a missing folder and a disk too small for it", "[hardware]") {
  test::ScratchDir dir("disk-bench-errors");
  CHECK_THROWS_WITH(measure_disk_write({dir / "missing", 1 << 20}), Catch::Contains("is not a folder"));
  CHECK_THROWS_WITH(measure_disk_write({dir.path(), std::size_t{1} << 62}), Catch::Contains("MiB free"));
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("Memory arrays grow to 4x the last-level cache, within an eighth of the RAM", "[hardware]") {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  HostInfo host;
  host.memory_total_bytes = 8192 * kMiB;
  host.last_level_cache_bytes = 32 * kMiB;
  CHECK(stream_array_bytes(host, 64 * kMiB) == 128 * kMiB);
  CHECK(stream_array_bytes(host, 256 * kMiB) == 256 * kMiB);
  host.last_level_cache_bytes = 480 * kMiB;
  CHECK(stream_array_bytes(host, 64 * kMiB) == 1024 * kMiB);  // capped: 4 x 480 MiB would take 3/4 of the RAM
  host.last_level_cache_bytes = 0;  // unknown
  CHECK(stream_array_bytes(host, 64 * kMiB) == 64 * kMiB);
}

TEST_CASE("Memory bandwidth times each pass whole, so no pass beats what the CPUs can move", "[hardware]") {
  // Arrays well past the caches, one thread per CPU: a clock read after the workers are
  // released can be read after they have finished, and a pass then takes almost no time.
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int run = 0; run < 5; ++run) {
    const MemoryBandwidth bandwidth = measure_memory_bandwidth({std::size_t{16} << 20, 0, 3});
    CHECK(bandwidth.copy_gb_per_s <= memory_bandwidth_ceiling_gb_per_s(cpus));
    CHECK(bandwidth.triad_gb_per_s <= memory_bandwidth_ceiling_gb_per_s(cpus));
  }
}

TEST_CASE("A memory bandwidth figure above the physical ceiling is an error naming it", "[hardware]") {
  CHECK(memory_bandwidth_ceiling_gb_per_s(2) == 2 * memory_bandwidth_ceiling_gb_per_s(1));
  MemoryBandwidth impossible{std::size_t{64} << 20, 2, 3, 15524.0, 155.9};  // seen on a 2-core VM
  CHECK_THROWS_WITH(require_possible_memory_bandwidth(impossible, 2), Catch::Contains("copy measured 15524.0 GB/s"));
  impossible.copy_gb_per_s = 20.0;
  CHECK_NOTHROW(require_possible_memory_bandwidth(impossible, 2));
  impossible.triad_gb_per_s = 1e9;
  CHECK_THROWS_WITH(require_possible_memory_bandwidth(impossible, 2), Catch::Contains("triad"));
}
