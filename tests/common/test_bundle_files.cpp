// bundle_file, read_bundle_file, read_bundle_signature and list_bundle_files: the one way to
// reach a file of a bundle someone else made; and the names stores give bundles. Symlinks are refused wherever they are, even when they stay inside the
// bundle, and nothing about their targets appears in the errors.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>

#include "common/bundle_files.h"
#include "common/files.h"
#include "common/sha256.h"
#include "tests/test_support.h"

namespace solver::test {
namespace {

namespace fs = std::filesystem;

// A small bundle folder: manifest.json, manifest.sig, a checkpoint, a segment, and a local
// file outside it (`secret`) for symlinks to point at.
struct Bundle {
  ScratchDir scratch{"bundle-files"};
  fs::path dir = scratch / "bundle";
  fs::path secret = scratch / "secret.txt";
  Bundle() {
    write_text(dir / "manifest.json", "{}");
    write_text(dir / "manifest.sig", "00\n");
    write_text(dir / "ckpt/step_0.safetensors", "weights");
    write_text(dir / "segments/steps_1-5.json", "steps");
    write_text(secret, "a local secret " + std::string(4082, 'k'));  // 4097 bytes: a size no message holds
  }
};

// The message of the Input error `action` throws, checked to say nothing of the secret file.
std::string input_error(const std::function<void()>& action, const Bundle& bundle) {
  const std::optional<Error> error = error_of(action);
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Input);
  const std::string message = error->what();
  CHECK(message.find(sha256_hex(read_file(bundle.secret))) == std::string::npos);
  CHECK(message.find(std::to_string(fs::file_size(bundle.secret)) + " bytes") == std::string::npos);
  CHECK(message.find("local secret") == std::string::npos);
  return message;
}

TEST_CASE("bundle_file gives a regular file inside the bundle with its size", "[unit][files]") {
  Bundle bundle;
  const BundleFile file = bundle_file(bundle.dir, "ckpt/step_0.safetensors");
  CHECK(file.relative == "ckpt/step_0.safetensors");
  CHECK(file.path == bundle.dir / "ckpt/step_0.safetensors");
  CHECK(file.size == 7);
}

TEST_CASE("bundle_file refuses a symlinked file or folder, in the bundle or out of it, without reading the target", "[unit][files]") {
  Bundle bundle;
  SECTION("a checkpoint that is a symlink to a file outside the bundle") {
    fs::remove(bundle.dir / "ckpt/step_0.safetensors");
    fs::create_symlink(bundle.secret, bundle.dir / "ckpt/step_0.safetensors");
    CHECK(input_error([&] { bundle_file(bundle.dir, "ckpt/step_0.safetensors"); }, bundle) ==
          "ckpt/step_0.safetensors: is a symlink (bundle files must be regular files inside the bundle)");
  }
  SECTION("a symlink to another file of the same bundle") {
    fs::create_symlink(bundle.dir / "ckpt/step_0.safetensors", bundle.dir / "ckpt/step_5.safetensors");
    CHECK_THAT(input_error([&] { bundle_file(bundle.dir, "ckpt/step_5.safetensors"); }, bundle),
               Catch::StartsWith("ckpt/step_5.safetensors: is a symlink"));
  }
  SECTION("a folder on the way that is a symlink") {
    fs::create_directories(bundle.scratch / "elsewhere");
    write_text(bundle.scratch / "elsewhere/steps_1-5.json", "steps");
    fs::remove_all(bundle.dir / "segments");
    fs::create_directory_symlink(bundle.scratch / "elsewhere", bundle.dir / "segments");
    CHECK(input_error([&] { bundle_file(bundle.dir, "segments/steps_1-5.json"); }, bundle) ==
          "segments/steps_1-5.json: segments is a symlink (bundle files must be regular files inside the bundle)");
  }
  SECTION("a dangling symlink is a symlink, not a missing file") {
    fs::create_symlink(bundle.scratch / "nothing", bundle.dir / "model.pt");
    CHECK_THAT(input_error([&] { bundle_file(bundle.dir, "model.pt"); }, bundle), Catch::StartsWith("model.pt: is a symlink"));
  }
}

TEST_CASE("bundle_file refuses what is missing, not a regular file, or not a plain relative path", "[unit][files]") {
  Bundle bundle;
  CHECK(input_error([&] { bundle_file(bundle.dir, "ckpt/step_9.safetensors"); }, bundle) == "ckpt/step_9.safetensors: missing");
  CHECK_THAT(input_error([&] { bundle_file(bundle.dir, "ckpt"); }, bundle), Catch::StartsWith("ckpt: is not a regular file (a folder"));
  REQUIRE(::mkfifo((bundle.dir / "ckpt/step_5.safetensors").c_str(), 0600) == 0);
  CHECK_THAT(input_error([&] { bundle_file(bundle.dir, "ckpt/step_5.safetensors"); }, bundle),
             Catch::StartsWith("ckpt/step_5.safetensors: is not a regular file (a pipe"));
  CHECK_THAT(input_error([&] { bundle_file(bundle.dir, "manifest.json/x"); }, bundle),
             Catch::StartsWith("manifest.json/x: missing (manifest.json is not a folder)"));
  for (const char* path : {"../secret.txt", "/etc/hostname", "ckpt/../manifest.json", ""})
    CHECK_THAT(input_error([&] { bundle_file(bundle.dir, path); }, bundle), Catch::Contains("not a plain relative path"));
}

TEST_CASE("read_bundle_file refuses a file above its cap before reading it", "[unit][files]") {
  Bundle bundle;
  CHECK(read_bundle_file(bundle.dir, "ckpt/step_0.safetensors", 7, "checkpoint") == "weights");
  // Sparse: the cap must hold without the bytes existing, as it holds before they are read.
  fs::resize_file(bundle.dir / "manifest.json", kMaxManifestBytes + 1);
  CHECK(input_error([&] { read_bundle_file(bundle.dir, "manifest.json", kMaxManifestBytes, "manifest"); }, bundle) ==
        "manifest.json: 33554433 bytes, more than the 33554432 a manifest may hold");
}

TEST_CASE("list_bundle_files lists the visible regular files and refuses a symlink anywhere", "[unit][files]") {
  Bundle bundle;
  write_text(bundle.dir / ".s3-upload-0123.json", "{}");
  write_text(bundle.dir / ".staging/ckpt.tmp", "x");
  std::vector<std::string> listed;
  for (const BundleFile& file : list_finished_bundle(bundle.dir)) listed.push_back(file.relative);
  CHECK(listed == std::vector<std::string>{"ckpt/step_0.safetensors", "manifest.json", "manifest.sig", "segments/steps_1-5.json"});

  SECTION("a symlinked file") {
    fs::create_symlink(bundle.secret, bundle.dir / "notes.txt");
    CHECK(input_error([&] { list_bundle_files(bundle.dir); }, bundle) ==
          "notes.txt: is a symlink (bundle files must be regular files inside the bundle)");
  }
  SECTION("a symlinked folder") {
    fs::create_directory_symlink(bundle.scratch.path(), bundle.dir / "more");
    CHECK_THAT(input_error([&] { list_bundle_files(bundle.dir); }, bundle), Catch::StartsWith("more: is a symlink"));
  }
  SECTION("a bundle without its signature is not finished") {
    fs::remove(bundle.dir / "manifest.sig");
    CHECK_THAT(input_error([&] { list_finished_bundle(bundle.dir); }, bundle),
               Catch::EndsWith("is not a finished bundle: manifest.sig: missing"));
  }
}

TEST_CASE("read_bundle_signature gives manifest.sig without its trailing whitespace, within its cap", "[unit][files]") {
  Bundle bundle;
  write_text(bundle.dir / "manifest.sig", "abc0\r\n \t\n");
  CHECK(read_bundle_signature(bundle.dir) == "abc0");
  write_text(bundle.dir / "manifest.sig", std::string(128, 'a') + std::string(600, ' '));
  CHECK(input_error([&] { read_bundle_signature(bundle.dir); }, bundle) ==
        "manifest.sig: 728 bytes, more than the 512 a signature may hold");
  fs::remove(bundle.dir / "manifest.sig");
  fs::create_symlink(bundle.secret, bundle.dir / "manifest.sig");
  CHECK_THAT(input_error([&] { read_bundle_signature(bundle.dir); }, bundle), Catch::StartsWith("manifest.sig: is a symlink"));
}

TEST_CASE("a bundle's name in a store is one plain, visible folder name", "[unit][files]") {
  require_plain_bundle_name("task-1-0123456789abcdef");
  for (const char* name : {"", ".", "..", ".hidden", "a/b", "a/", "/abs"}) {
    INFO(name);
    const std::optional<Error> error = error_of([&] { require_plain_bundle_name(name); });
    REQUIRE(error);
    CHECK(error->kind() == ErrorKind::Internal);
    CHECK(error->what() == "bundle name \"" + std::string(name) + "\" is not a plain folder name");
  }
}

}  // namespace
}  // namespace solver::test
