// Upload throughput of our S3 store against the AWS CLI, both into the same s3rver on 127.0.0.1:
// a few large files (multipart) and many small ones (one PutObject each). Ours goes through
// S3Store::publish, so hashing every file and checking what is already there are included; the
// AWS CLI runs `aws s3 cp --recursive` (8 MiB parts, 10 requests at once), Python start-up included.
//
//   s3_upload_bench [--quick]     (quick: 4 x 8 MiB and 50 x 64 KiB instead of 8 x 32 MiB and 200 x 64 KiB)
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/s3_store.h"
#include "tests/net/s3_server.h"
#include "tests/test_support.h"

namespace {

using solver::net::S3Config;

struct FileSet {
  std::string name;
  int count = 0;
  std::size_t size = 0;
};

// A folder S3Store accepts as a bundle (an empty manifest lists no files, so publishing hashes
// them all) holding the set's files.
std::filesystem::path write_set(const std::filesystem::path& root, const FileSet& set) {
  const std::filesystem::path dir = root / set.name;
  std::filesystem::create_directories(dir / "files");
  std::mt19937_64 random(set.count * 7919 + set.size);
  std::vector<std::uint64_t> words(set.size / 8 + 1);
  for (int i = 0; i < set.count; ++i) {
    for (std::uint64_t& word : words) word = random();
    std::ofstream(dir / "files" / fmt::format("file_{:04}.bin", i), std::ios::binary)
        .write(reinterpret_cast<const char*>(words.data()), static_cast<std::streamsize>(set.size));
  }
  std::ofstream(dir / "manifest.json") << "{}";
  std::ofstream(dir / "manifest.sig") << "unsigned\n";
  return dir;
}

double seconds_of(const std::function<void()>& action) {
  const auto start = std::chrono::steady_clock::now();
  action();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

S3Config client_config(const solver::test::S3rver& server, const std::string& prefix, std::uint64_t part_size, int parallelism) {
  S3Config config;
  config.endpoint = server.endpoint();
  config.region = "us-east-1";
  config.bucket = server.bucket();
  config.prefix = prefix;
  config.credentials = {solver::test::kS3rverAccessKey, solver::test::kS3rverSecretKey, ""};
  config.part_size = part_size;
  config.parallelism = parallelism;
  return config;
}

int run(bool quick) {
  solver::set_log_level(solver::LogLevel::Warn);
  const std::vector<FileSet> sets = quick ? std::vector<FileSet>{{"large", 4, 8u << 20}, {"small", 50, 64u << 10}}
                                          : std::vector<FileSet>{{"large", 8, 32u << 20}, {"small", 200, 64u << 10}};
  solver::test::ScratchDir scratch("s3-bench");
  solver::test::S3rver server("bench");
  fmt::print("s3rver 3.7.1 on {}, {} hardware threads\n\n", server.endpoint(), std::thread::hardware_concurrency());
  const double cli_start_up = seconds_of([&] { server.aws({"s3", "ls", "s3://bench/"}); });
  fmt::print("AWS CLI start-up and one request (aws s3 ls): {:.2f} s, included in its figures below\n\n", cli_start_up);
  fmt::print("{:<34} {:>10} {:>9} {:>10} {:>11}\n", "upload", "bytes", "seconds", "MB/s", "vs AWS CLI");

  for (const FileSet& set : sets) {
    const std::filesystem::path dir = write_set(scratch.path(), set);
    const double bytes = static_cast<double>(set.count) * static_cast<double>(set.size);
    const std::string label = fmt::format("{} x {} KiB", set.count, set.size >> 10);

    const double aws_seconds = seconds_of([&] {
      const solver::test::CommandResult result =
          server.aws({"s3", "cp", "--recursive", "--only-show-errors", (dir / "files").string(), "s3://bench/aws/" + set.name + "/"});
      if (result.exit_code != 0) throw std::runtime_error("aws s3 cp failed: " + result.output);
    });
    struct Variant {
      std::string name;
      std::uint64_t part_size;
      int parallelism;
    };
    const Variant variants[] = {{"solver (64 MiB parts, 4 at once)", 64u << 20, 4},
                                {"solver (8 MiB parts, 10 at once)", 8u << 20, 10}};
    for (const Variant& variant : variants) {
      solver::net::S3Store store(client_config(server, "solver-" + std::to_string(variant.parallelism), variant.part_size,
                                               variant.parallelism));
      const double ours = seconds_of([&] { store.publish({.dir = dir, .manifest = {"manifest.json", 2, solver::sha256_hex("{}")}}, set.name); });
      fmt::print("{:<34} {:>10.0f} {:>9.2f} {:>10.1f} {:>10.2f}x   {}\n", variant.name, bytes, ours, bytes / ours / 1e6,
                 aws_seconds / ours, label);
    }
    fmt::print("{:<34} {:>10.0f} {:>9.2f} {:>10.1f} {:>11}   {}\n\n", "aws s3 cp --recursive", bytes, aws_seconds,
               bytes / aws_seconds / 1e6, "1.00x", label);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  try {
    return run(quick);
  } catch (const std::exception& error) {
    fmt::print(stderr, "s3_upload_bench: {}\n", error.what());
    return 1;
  }
}
