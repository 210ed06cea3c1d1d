// scripts/libtorch.sh, which chooses the LibTorch that scripts/build.sh and scripts/gpu.sh build
// against (docs/gpu.md): SOLVER_LIBTORCH (a folder, or a zip checked against its sha256 and
// unpacked once), PyTorch's own when it has CUDA, else Debian's CPU LibTorch. It is run here
// as the build runs it, on real folders and zips; nothing is built.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "tests/e2e/e2e_support.h"

using namespace solver::test;
namespace fs = std::filesystem;

namespace {

// The chooser with a clean environment for its variables: this machine's python3 (CPU-only
// torch), archives unpacked into `unpack_dir`, and `settings` ("NAME=value") on top.
CommandResult choose_libtorch(const fs::path& unpack_dir, const std::vector<std::string>& settings,
                              const std::vector<std::string>& arguments = {}) {
  std::vector<std::string> argv{"/usr/bin/env", "-u", "SOLVER_LIBTORCH", "-u", "SOLVER_LIBTORCH_SHA256",
                                "PYTHON=" + system_python(), "SOLVER_LIBTORCH_UNPACK_DIR=" + unpack_dir.string()};
  argv.insert(argv.end(), settings.begin(), settings.end());
  argv.push_back("/bin/bash");
  argv.push_back((source_dir() / "scripts/libtorch.sh").string());
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return run_command(argv);
}

// The prefix handed to CMake: the last line the chooser prints.
std::string handed_prefix(const std::string& output) {
  std::istringstream lines(output);
  std::string last;
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) last = line;
  return last;
}

// A folder laid out as pytorch.org's LibTorch is where CMake looks: share/cmake/Torch/TorchConfig.cmake
// (Debian's own file here) and the build-version file the zips carry.
void make_libtorch_folder(const fs::path& folder, const std::string& build_version) {
  fs::create_directories(folder / "share/cmake/Torch");
  fs::copy_file("/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake", folder / "share/cmake/Torch/TorchConfig.cmake");
  write_text(folder / "build-version", build_version + "\n");
}

// Zips `staging`/libtorch as pytorch.org does (one top-level libtorch/ folder) into `zip`.
void zip_libtorch(const fs::path& staging, const fs::path& zip) {
  const CommandResult zipped =
      run_command({"/bin/sh", "-c", "cd \"$1\" && exec /usr/bin/zip -qr \"$2\" libtorch", "sh", staging.string(), zip.string()});
  INFO(zipped.output);
  REQUIRE(zipped.exit_code == 0);
}

std::string sha256_of(const fs::path& file) {
  const CommandResult sum = run_command({"/usr/bin/sha256sum", file.string()});
  REQUIRE(sum.exit_code == 0);
  return sum.output.substr(0, 64);
}

bool is_empty_or_missing(const fs::path& folder) { return !fs::exists(folder) || fs::is_empty(folder); }

}  // namespace

TEST_CASE("libtorch choice: with a CPU-only torch and no SOLVER_LIBTORCH the build falls back to Debian's LibTorch and says why", "[e2e]") {
  ScratchDir dir("libtorch-choice");
  const CommandResult chosen = choose_libtorch(dir / "unpacked", {});
  INFO(chosen.output);
  REQUIRE(chosen.exit_code == 0);
  CHECK(chosen.output.find("libtorch: no CUDA LibTorch found (SOLVER_LIBTORCH unset; " + system_python() +
                           "'s torch ") != std::string::npos);
  CHECK(chosen.output.find("has no CUDA); building for the CPU with Debian's LibTorch 1.13") != std::string::npos);
  CHECK(chosen.output.find("see docs/gpu.md") != std::string::npos);
  CHECK(handed_prefix(chosen.output) == "/usr");  // where CMake finds lib/x86_64-linux-gnu/cmake/Torch

  // scripts/gpu.sh asks for CUDA: the same machine is refused, not built for the CPU.
  const CommandResult for_gpu = choose_libtorch(dir / "unpacked", {}, {"--require-cuda"});
  INFO(for_gpu.output);
  CHECK(for_gpu.exit_code != 0);
  CHECK(for_gpu.output.find("no CUDA LibTorch found") != std::string::npos);
  CHECK(for_gpu.output.find("/usr\n") == std::string::npos);
}

TEST_CASE("libtorch choice: a zip whose sha256 is not SOLVER_LIBTORCH_SHA256 is refused naming both hashes, and nothing is unpacked", "[e2e]") {
  ScratchDir dir("libtorch-choice");
  make_libtorch_folder(dir / "staging/libtorch", "1.13.0");
  const fs::path zip = dir / "libtorch.zip";
  zip_libtorch(dir / "staging", zip);
  const std::string actual = sha256_of(zip);
  const std::string expected(64, 'a');

  const CommandResult chosen =
      choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + zip.string(), "SOLVER_LIBTORCH_SHA256=" + expected});
  INFO(chosen.output);
  CHECK(chosen.exit_code != 0);
  CHECK(chosen.output.find("its sha256 is " + actual) != std::string::npos);
  CHECK(chosen.output.find("SOLVER_LIBTORCH_SHA256 is " + expected) != std::string::npos);
  CHECK(chosen.output.find("/usr\n") == std::string::npos);  // no fallback to Debian's
  CHECK(is_empty_or_missing(dir / "unpacked"));

  // Without an expected hash an archive is not taken on trust either.
  const CommandResult unchecked = choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + zip.string()});
  INFO(unchecked.output);
  CHECK(unchecked.exit_code != 0);
  CHECK(unchecked.output.find("set SOLVER_LIBTORCH_SHA256") != std::string::npos);
  CHECK(is_empty_or_missing(dir / "unpacked"));
}

TEST_CASE("libtorch choice: a SOLVER_LIBTORCH folder without share/cmake/Torch/TorchConfig.cmake is refused naming the missing file", "[e2e]") {
  ScratchDir dir("libtorch-choice");
  fs::create_directories(dir / "not-libtorch/lib");
  const CommandResult chosen = choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + (dir / "not-libtorch").string()});
  INFO(chosen.output);
  CHECK(chosen.exit_code != 0);
  CHECK(chosen.output.find("is not a LibTorch: " + (dir / "not-libtorch/share/cmake/Torch/TorchConfig.cmake").string() +
                           " is missing") != std::string::npos);
  CHECK(chosen.output.find("/usr\n") == std::string::npos);

  const CommandResult missing = choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + (dir / "nowhere").string()});
  INFO(missing.output);
  CHECK(missing.exit_code != 0);
  CHECK(missing.output.find("SOLVER_LIBTORCH=" + (dir / "nowhere").string() + " does not exist") != std::string::npos);
}

TEST_CASE("libtorch choice: a SOLVER_LIBTORCH folder with TorchConfig.cmake is accepted, its build-version reported and its prefix handed on", "[e2e]") {
  ScratchDir dir("libtorch-choice");
  const fs::path folder = dir / "libtorch";
  make_libtorch_folder(folder, "1.13.0");
  const CommandResult chosen = choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + folder.string()});
  INFO(chosen.output);
  REQUIRE(chosen.exit_code == 0);
  CHECK(chosen.output.find("libtorch: SOLVER_LIBTORCH's LibTorch (1.13.0, no CUDA): " + folder.string()) != std::string::npos);
  CHECK(handed_prefix(chosen.output) == folder.string());

  // Without lib/libtorch_cuda.so it is no LibTorch for scripts/gpu.sh.
  const CommandResult for_gpu = choose_libtorch(dir / "unpacked", {"SOLVER_LIBTORCH=" + folder.string()}, {"--require-cuda"});
  INFO(for_gpu.output);
  CHECK(for_gpu.exit_code != 0);
  CHECK(for_gpu.output.find("has no CUDA (no lib/libtorch_cuda.so)") != std::string::npos);
}

TEST_CASE("libtorch choice: a zip with the expected sha256 is unpacked once into libtorch-HASH and accepted, and a second run reuses it", "[e2e]") {
  ScratchDir dir("libtorch-choice");
  make_libtorch_folder(dir / "staging/libtorch", "1.13.0");
  const fs::path zip = dir / "libtorch.zip";
  zip_libtorch(dir / "staging", zip);
  const std::string sha256 = sha256_of(zip);
  const fs::path unpacked = dir / "unpacked" / ("libtorch-" + sha256.substr(0, 12));
  const std::vector<std::string> settings{"SOLVER_LIBTORCH=" + zip.string(), "SOLVER_LIBTORCH_SHA256=" + sha256};

  const CommandResult first = choose_libtorch(dir / "unpacked", settings);
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK(first.output.find("(1.13.0, no CUDA; sha256 checked, unpacked now): " + unpacked.string()) != std::string::npos);
  CHECK(handed_prefix(first.output) == unpacked.string());
  CHECK(fs::is_regular_file(unpacked / "share/cmake/Torch/TorchConfig.cmake"));
  // Only the LibTorch folder is left: no scratch folder of the unpacking.
  CHECK(std::distance(fs::directory_iterator(dir / "unpacked"), fs::directory_iterator()) == 1);

  // A mark in the unpacked folder survives the second run: it was not unpacked again.
  write_text(unpacked / "mark", "first run\n");
  const CommandResult second = choose_libtorch(dir / "unpacked", settings);
  INFO(second.output);
  REQUIRE(second.exit_code == 0);
  CHECK(second.output.find("sha256 checked, unpacked before): " + unpacked.string()) != std::string::npos);
  CHECK(handed_prefix(second.output) == unpacked.string());
  CHECK(fs::exists(unpacked / "mark"));
}
