// Host measurements. Invariant: every timed region contains only the work it reports (no
// allocation, first touch, thread start or buffer fill), and every figure divides bytes by
// the seconds of one pass.
#include "hardware/host_benchmark.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <charconv>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

#include "common/data_order.h"
#include "common/error.h"
#include "common/sha256.h"
#include "kernels/stream.h"

namespace solver::hardware {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void require_positive(std::size_t value, const char* what) {
  if (value == 0) throw Error(ErrorKind::Config, std::string(what) + ": expected a positive value, got 0");
}

// Pseudo-random bytes (SplitMix64), so that a compressing filesystem cannot shrink the file.
void fill_incompressible(std::span<std::byte> bytes) {
  std::uint64_t state = 0x5eed;
  for (std::size_t offset = 0; offset < bytes.size(); offset += sizeof state) {
    const std::uint64_t word = splitmix64_mix(state++);
    std::memcpy(bytes.data() + offset, &word, std::min(sizeof word, bytes.size() - offset));
  }
}

// The temp file of the disk measurement: closed and removed however the measurement ends.
class TempFile {
 public:
  explicit TempFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) throw Error(ErrorKind::Io, "creating " + path_.string() + ": " + std::strerror(errno));
  }
  ~TempFile() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write_all(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) throw Error(ErrorKind::Io, "writing " + path_.string() + ": " + std::strerror(errno));
      bytes = bytes.subspan(static_cast<std::size_t>(written));
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) throw Error(ErrorKind::Io, "fsync of " + path_.string() + ": " + std::strerror(errno));
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Sum of the distinct highest-level caches: each CPU lists its caches as index*/ with a level,
// a size ("491520K") and the CPUs sharing it; a cache shared by many CPUs is counted once.
std::uint64_t last_level_cache_bytes() {
  std::map<std::string, std::uint64_t> size_by_sharing;  // of the highest level seen so far
  int highest_level = 0;
  std::error_code error;
  for (const auto& cpu : std::filesystem::directory_iterator("/sys/devices/system/cpu", error)) {
    const std::string name = cpu.path().filename().string();
    if (!name.starts_with("cpu") || name.find_first_not_of("0123456789", 3) != std::string::npos || name.size() == 3) continue;
    for (const auto& cache : std::filesystem::directory_iterator(cpu.path() / "cache", error)) {
      if (!cache.path().filename().string().starts_with("index")) continue;
      int level = 0;
      std::string size_text, shared_cpus;
      std::ifstream(cache.path() / "level") >> level;
      std::ifstream(cache.path() / "size") >> size_text;
      std::ifstream(cache.path() / "shared_cpu_list") >> shared_cpus;
      std::uint64_t size = 0;
      const auto [end, parse_error] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
      if (parse_error != std::errc() || level < highest_level) continue;
      if (*end == 'K') size <<= 10;
      if (*end == 'M') size <<= 20;
      if (level > highest_level) size_by_sharing.clear();
      highest_level = level;
      size_by_sharing[shared_cpus] = size;
    }
  }
  std::uint64_t total = 0;
  for (const auto& [sharing, size] : size_by_sharing) total += size;
  return total;
}

}  // namespace

std::size_t stream_array_bytes(const HostInfo& host, std::size_t minimum_bytes) {
  std::size_t bytes = std::max<std::size_t>(minimum_bytes, 4 * host.last_level_cache_bytes);
  if (host.memory_total_bytes > 0) bytes = std::min<std::size_t>(bytes, host.memory_total_bytes / 8);
  return bytes;
}

HostInfo read_host_info() {
  HostInfo info;
  info.logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (!line.starts_with("model name")) continue;
    const std::size_t colon = line.find(':');
    const std::size_t value = colon == std::string::npos ? colon : line.find_first_not_of(" \t", colon + 1);
    if (value != std::string::npos) info.cpu_model = line.substr(value);
    break;
  }
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    std::uint64_t kib = 0;
    if (key == "MemTotal:" && meminfo >> kib) {
      info.memory_total_bytes = kib * 1024;
      break;
    }
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  info.last_level_cache_bytes = last_level_cache_bytes();
  return info;
}

double memory_bandwidth_ceiling_gb_per_s(int cpus) {
  // The widest cores shipping (Intel Golden Cove, AMD Zen 5) move at most 192 bytes per cycle
  // through their L1 data cache (two 64-byte loads and one 64-byte store); rounded up to 256,
  // at 6.5 GHz (above any shipping core's boost clock): 1,664 GB/s. Every byte STREAM counts
  // passes through a core's loads or stores, whether it comes from a cache or from memory, and
  // two hyperthreads share one core's, so this bounds each logical CPU.
  constexpr double kBytesPerCycle = 256.0, kCyclesPerSecond = 6.5e9;
  return std::max(1, cpus) * kBytesPerCycle * kCyclesPerSecond / 1e9;
}

void require_possible_memory_bandwidth(const MemoryBandwidth& measured, int cpus) {
  const double ceiling = memory_bandwidth_ceiling_gb_per_s(cpus);
  for (const auto& [kernel, figure] : {std::pair{"copy", measured.copy_gb_per_s}, std::pair{"triad", measured.triad_gb_per_s}})
    if (!(figure <= ceiling))
      throw Error(ErrorKind::Internal, fmt::format("memory bandwidth: {} measured {:.1f} GB/s, above the {:.0f} GB/s that {} CPUs "
                                                   "can physically move; the measurement is wrong and is not reported",
                                                   kernel, figure, ceiling, cpus));
}

MemoryBandwidth measure_memory_bandwidth(const MemoryBandwidthOptions& options) {
  require_positive(options.array_bytes / sizeof(double), "memory bandwidth array size (bytes, at least 8)");
  if (options.threads < 0) throw Error(ErrorKind::Config, "memory bandwidth threads: expected 0 (one per CPU) or more, got " + std::to_string(options.threads));
  if (options.repeats < 1) throw Error(ErrorKind::Config, "memory bandwidth repeats: expected at least 1, got " + std::to_string(options.repeats));
  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::size_t count = options.array_bytes / sizeof(double);
  constexpr double kScalar = 3.0;
  constexpr double kA = 1.0, kB = 2.0, kC = 0.5;  // initial values; triad leaves a = kB + kScalar * kC

  // Left uninitialised here: each worker first-touches its own slice.
  const auto a = std::make_unique_for_overwrite<double[]>(count);
  const auto b = std::make_unique_for_overwrite<double[]>(count);
  const auto c = std::make_unique_for_overwrite<double[]>(count);

  // Phases: initialise, then per repeat copy and triad, each ending at the barrier. The barrier's
  // completion step stamps the time once every worker has arrived and before any is released,
  // so a kernel's span from the stamp before it to the stamp after it holds all of its work
  // however late a thread is scheduled (a coordinator reading the clock after the release
  // could read it after the workers had finished, and report an impossible figure).
  std::vector<Clock::time_point> phase_ends(1 + 2 * static_cast<std::size_t>(options.repeats));
  std::size_t phases_ended = 0;
  std::barrier sync(threads, [&]() noexcept { phase_ends[phases_ended++] = Clock::now(); });
  std::atomic<bool> abandoned = false;
  auto work = [&](int worker) {
    const std::size_t begin = count * worker / threads;
    const std::size_t end = count * (worker + 1) / threads;
    for (std::size_t i = begin; i < end; ++i) {
      a[i] = kA;
      b[i] = kB;
      c[i] = kC;
    }
    sync.arrive_and_wait();
    if (abandoned) return;
    // The arithmetic is kernels/stream.h's CPU twins, the definition the GPU kernels share.
    const std::span<double> slice_a(a.get() + begin, end - begin);
    const std::span<const double> slice_b(b.get() + begin, end - begin), slice_c(c.get() + begin, end - begin);
    for (int repeat = 0; repeat < options.repeats; ++repeat) {
      kernels::stream_copy_cpu(slice_a, slice_b);
      sync.arrive_and_wait();
      kernels::stream_triad_cpu(slice_a, slice_b, slice_c, kScalar);
      sync.arrive_and_wait();
    }
  };
  std::vector<std::jthread> workers;
  workers.reserve(static_cast<std::size_t>(threads));
  try {
    for (int worker = 0; worker < threads; ++worker) workers.emplace_back(work, worker);
  } catch (const std::system_error& error) {
    // Release the workers already started from the first phase; they see `abandoned` and end.
    abandoned = true;
    for (std::size_t missing = threads - workers.size(); missing > 0; --missing) sync.arrive_and_drop();
    throw Error(ErrorKind::Internal, "starting " + std::to_string(threads) + " memory bandwidth threads: " + error.what());
  }
  workers.clear();  // joins

  double best_copy = std::numeric_limits<double>::infinity();
  double best_triad = best_copy;
  const auto seconds_between = [&](std::size_t phase) {
    return std::chrono::duration<double>(phase_ends[phase + 1] - phase_ends[phase]).count();
  };
  for (std::size_t repeat = 0; repeat < static_cast<std::size_t>(options.repeats); ++repeat) {
    best_copy = std::min(best_copy, seconds_between(2 * repeat));
    best_triad = std::min(best_triad, seconds_between(2 * repeat + 1));
  }

  // The check keeps the compiler from dropping the loops, and the figures honest.
  if (a[0] != kB + kScalar * kC || a[count - 1] != kB + kScalar * kC)
    throw Error(ErrorKind::Internal, "memory bandwidth: the triad produced a wrong result");
  const double bytes = static_cast<double>(count * sizeof(double));
  const MemoryBandwidth bandwidth{count * sizeof(double), threads, options.repeats, 2.0 * bytes / best_copy / 1e9,
                                  3.0 * bytes / best_triad / 1e9};
  require_possible_memory_bandwidth(bandwidth, std::min(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))));
  return bandwidth;
}

Sha256Throughput measure_sha256(std::size_t buffer_bytes, int repeats) {
  require_positive(buffer_bytes, "SHA-256 buffer size");
  if (repeats < 1) throw Error(ErrorKind::Config, "SHA-256 repeats: expected at least 1, got " + std::to_string(repeats));
  std::vector<std::byte> buffer(buffer_bytes);
  fill_incompressible(buffer);
  double best = std::numeric_limits<double>::infinity();
  Digest first{};
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const Clock::time_point start = Clock::now();
    Sha256 hasher;
    hasher.update(buffer);
    const Digest digest = hasher.finish();
    best = std::min(best, seconds_since(start));
    if (repeat == 0) first = digest;
    if (digest != first) throw Error(ErrorKind::Internal, "SHA-256 of the same buffer changed between runs");
  }
  return Sha256Throughput{buffer_bytes, repeats, static_cast<double>(buffer_bytes) / best / 1e9};
}

DiskWrite measure_disk_write(const DiskWriteOptions& options) {
  require_positive(options.bytes, "disk write size");
  std::error_code error;
  if (!std::filesystem::is_directory(options.dir, error))
    throw Error(ErrorKind::Io, "disk benchmark: " + options.dir.string() + " is not a folder");
  const std::filesystem::space_info space = std::filesystem::space(options.dir, error);
  if (error) throw Error(ErrorKind::Io, "disk benchmark: free space of " + options.dir.string() + ": " + error.message());
  // Twice the file: a benchmark must not be what fills the disk a run is about to write to.
  if (space.available / 2 < options.bytes)
    throw Error(ErrorKind::Io, "disk benchmark: " + options.dir.string() + " has " + std::to_string(space.available >> 20) +
                                   " MiB free, the test needs " + std::to_string(options.bytes >> 19) +
                                   " MiB (twice its file); choose another folder");

  constexpr std::size_t kChunkBytes = std::size_t{8} << 20;
  std::vector<std::byte> chunk(std::min(kChunkBytes, options.bytes));
  fill_incompressible(chunk);
  TempFile file(options.dir / (".solver-bench-" + std::to_string(::getpid()) + ".tmp"));
  const Clock::time_point start = Clock::now();
  for (std::size_t written = 0; written < options.bytes; written += chunk.size())
    file.write_all(std::span(chunk).first(std::min(chunk.size(), options.bytes - written)));
  file.sync();
  const double seconds = seconds_since(start);
  return DiskWrite{options.dir, options.bytes, seconds, static_cast<double>(options.bytes) / seconds / 1e9};
}

}  // namespace solver::hardware
