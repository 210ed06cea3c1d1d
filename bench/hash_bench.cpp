// SHA-256 throughput of solver's own file hashing (common/sha256.h, what the bundle writer and
// the verifier run over every checkpoint), for bench/ratios.sh to set beside `openssl dgst`.
// Hashes the files once each, in the order given, and prints one JSON line; the page cache is
// the caller's business (ratios.sh reads the files first, so both sides hash from memory).
//
//   hash_bench FILE...   ->  {"files": N, "bytes": B, "seconds": S, "gb_per_s": G}
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "common/error.h"
#include "common/sha256.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: hash_bench FILE...\n");
    return 64;
  }
  try {
    const std::vector<std::filesystem::path> files(argv + 1, argv + argc);
    std::uintmax_t bytes = 0;
    for (const auto& file : files) bytes += std::filesystem::file_size(file);
    const auto started = std::chrono::steady_clock::now();
    // Each digest's length is summed so the hashing cannot be optimised away.
    std::size_t digest_chars = 0;
    for (const auto& file : files) digest_chars += solver::sha256_file_hex(file).size();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (digest_chars != 64 * files.size()) throw solver::Error(solver::ErrorKind::Internal, "a digest was not 64 hex digits");
    std::printf("%s\n", fmt::format(R"({{"files": {}, "bytes": {}, "seconds": {:.6f}, "gb_per_s": {:.4f}}})", files.size(),
                                    bytes, seconds, static_cast<double>(bytes) / seconds / 1e9)
                            .c_str());
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hash_bench: %s\n", error.what());
    return 2;
  }
}
