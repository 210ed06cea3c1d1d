// `solver publish` to a folder, a real IPFS node and a real S3-compatible server, checked with
// tools no one here wrote (the node's own CID, the AWS CLI); and an agent whose store is S3, whose
// verifier fetches the bundle back from there.
#include <catch2/catch.hpp>

#include <regex>

#include "common/files.h"
#include "common/sha256.h"
#include "net/ipfs.h"
#include "net/unixfs.h"
#include "tests/e2e/e2e_support.h"
#include "tests/net/ipfs_node.h"
#include "tests/net/s3_server.h"

namespace solver::test {
namespace {

using json = nlohmann::json;

std::filesystem::path make_bundle(const ScratchDir& dir, const std::filesystem::path& key) {
  const auto bundle = dir / "bundle";
  const CommandResult run = run_solver({"run", write_task(dir.path(), "task", small_task("publish", 120, 40)).string(), "--out",
                                        bundle.string(), "--key", key.string(), "--threads", "1"});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  return bundle;
}

std::string printed_address(const CommandResult& result) {
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  std::string text = result.output;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text.substr(text.rfind('\n') + 1);
}

// S3 credentials for s3rver, as an operator would export them.
struct S3Environment {
  S3Environment() {
    ::setenv("AWS_ACCESS_KEY_ID", kS3rverAccessKey, 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", kS3rverSecretKey, 1);
    ::setenv("AWS_REGION", "us-east-1", 1);
  }
  ~S3Environment() {
    ::unsetenv("AWS_ACCESS_KEY_ID");
    ::unsetenv("AWS_SECRET_ACCESS_KEY");
    ::unsetenv("AWS_REGION");
  }
};

TEST_CASE("solver publish: a folder store is idempotent and refuses a different bundle under the same name", "[e2e][publish]") {
  ScratchDir dir("publish-dir");
  const auto bundle = make_bundle(dir, make_key(dir.path()));
  const std::string address = printed_address(run_solver({"-q", "publish", bundle.string(), "--dir", (dir / "store").string()}));
  CHECK(address == (dir / "store" / "bundle").string());
  CHECK(read_file(std::filesystem::path(address) / "manifest.json") == read_file(bundle / "manifest.json"));
  CHECK(run_solver({"verify", address}).exit_code == 0);
  CHECK(printed_address(run_solver({"-q", "publish", bundle.string(), "--dir", (dir / "store").string()})) == address);

  const auto other = dir / "other" / "bundle";
  std::filesystem::create_directories(other.parent_path());
  std::filesystem::copy(bundle, other, std::filesystem::copy_options::recursive);
  write_text(other / "manifest.json", read_file(other / "manifest.json") + " ");
  const CommandResult refused = run_solver({"publish", other.string(), "--dir", (dir / "store").string()});
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.output, Catch::Contains("already holds a different bundle"));
}

TEST_CASE("solver publish: to IPFS, the address is the CID the node computes, and the bundle comes back whole", "[e2e][publish]") {
  ScratchDir dir("publish-ipfs");
  const auto bundle = make_bundle(dir, make_key(dir.path()));
  IpfsNode& node = IpfsNode::shared();
  const std::string address = printed_address(run_solver({"-q", "publish", bundle.string(), "--ipfs", node.api_url()}));
  CHECK(address == "ipfs://" + net::directory_cid(bundle, net::UnixfsProfile::kubo_default()));
  CHECK(printed_address(run_solver({"-q", "publish", bundle.string(), "--ipfs", node.api_url()})) == address);
  net::IpfsStore store(net::IpfsOptions{.api_url = node.api_url()});
  store.fetch(address, dir / "fetched", kLargeEnough);
  CHECK(run_solver({"verify", (dir / "fetched").string()}).exit_code == 0);
}

TEST_CASE("solver publish: to S3, the AWS CLI reads back every file byte for byte", "[e2e][publish]") {
  ScratchDir dir("publish-s3");
  const auto bundle = make_bundle(dir, make_key(dir.path()));
  S3rver server("bundles");
  const S3Environment credentials;
  const std::vector<std::string> publish{"-q", "publish", bundle.string(), "--s3-bucket", "bundles", "--s3-endpoint",
                                         server.endpoint(), "--s3-prefix", "pool-a"};
  const std::string address = printed_address(run_solver(publish));
  CHECK(address == "s3://bundles/pool-a/bundle");
  CHECK(printed_address(run_solver(publish)) == address);

  const CommandResult copied = server.aws({"s3", "cp", "--recursive", "s3://bundles/pool-a/bundle", (dir / "via-aws").string()});
  INFO(copied.output);
  REQUIRE(copied.exit_code == 0);
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(bundle)) {
    if (!entry.is_regular_file() || entry.path().filename().string().starts_with(".")) continue;
    const auto relative = std::filesystem::relative(entry.path(), bundle);
    INFO(relative);
    CHECK(sha256_file_hex(dir / "via-aws" / relative) == sha256_file_hex(entry.path()));
    ++files;
  }
  CHECK(files >= 6);  // manifest, signature, 4 checkpoints, 3 segments
  CHECK(run_solver({"verify", (dir / "via-aws").string()}).exit_code == 0);
}

}  // namespace
}  // namespace solver::test
