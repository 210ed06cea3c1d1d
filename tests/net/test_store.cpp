// The folder store: a bundle holding a symlink is neither published nor fetched, so a store
// never carries a file of the machine it runs on (a key, a config) out under a bundle's name.
#include <catch2/catch.hpp>

#include <filesystem>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "net/store.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

namespace fs = std::filesystem;

// A finished bundle whose manifest lists nothing, and its listing.
BundleListing write_bundle(const fs::path& dir) {
  test::write_text(dir / "manifest.json", "{}");
  test::write_text(dir / "manifest.sig", "00\n");
  test::write_text(dir / "ckpt/step_0.safetensors", "weights");
  return BundleListing{.dir = dir, .manifest = {"manifest.json", 2, sha256_hex("{}")}, .signature_hex = "00"};
}

TEST_CASE("a folder store refuses to publish or fetch a bundle holding a symlink, and copies none of it", "[net][store]") {
  test::ScratchDir scratch("store-symlink");
  test::write_text(scratch / "solver.key", "the operator's key");
  const fs::path bundle = scratch / "bundle";
  const BundleListing listing = write_bundle(bundle);
  DirectoryStore store(scratch / "store");
  // An honest bundle goes in and comes back out.
  const std::string address = store.publish(listing, "honest");
  store.fetch(address, scratch / "fetched", test::kLargeEnough);
  CHECK(read_file(scratch / "fetched/ckpt/step_0.safetensors") == "weights");

  SECTION("publish: a file of the bundle that is a symlink to a local file") {
    fs::create_symlink(scratch / "solver.key", bundle / "notes.txt");
    const std::optional<Error> refused = test::error_of([&] { store.publish(listing, "linked"); });
    REQUIRE(refused);
    CHECK(refused->kind() == ErrorKind::Input);
    CHECK_THAT(refused->what(), Catch::EndsWith("is not a finished bundle: notes.txt: is a symlink (bundle files must be "
                                                "regular files inside the bundle)"));
    CHECK_FALSE(fs::exists(scratch / "store/linked"));
  }
  SECTION("fetch: a bundle in the store whose checkpoint folder is a symlink") {
    const fs::path stored(address);
    fs::create_directories(scratch / "elsewhere");
    fs::create_symlink(scratch / "solver.key", scratch / "elsewhere/step_0.safetensors");
    fs::remove_all(stored / "ckpt");
    fs::create_directory_symlink(scratch / "elsewhere", stored / "ckpt");
    const std::optional<Error> refused = test::error_of([&] { store.fetch(address, scratch / "fetched-again", test::kLargeEnough); });
    REQUIRE(refused);
    CHECK(refused->kind() == ErrorKind::Input);
    CHECK_THAT(refused->what(), Catch::EndsWith("ckpt: is a symlink (bundle files must be regular files inside the bundle)"));
    CHECK_FALSE(fs::exists(scratch / "fetched-again/ckpt"));
  }
}

}  // namespace
}  // namespace solver::net
