// net/ipfs.h against a real IPFS node (js-ipfs, tests/net/ipfs_node.h): the node's CIDs equal
// ours for files of many sizes, profiles and a nested directory; content goes up and comes back
// byte for byte; bundles publish and fetch; a node building another DAG than ours is caught both
// ways; content the node cannot find and a node that is down fail fast with Error(Network).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/http.h"
#include "net/ipfs.h"
#include "tests/net/ipfs_node.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

constexpr std::uint64_t kChunk = 256 * 1024;

IpfsOptions node_options() {
  IpfsOptions options;
  options.api_url = test::IpfsNode::shared().api_url();
  options.lookup_timeout = std::chrono::seconds(10);
  options.stall_timeout = std::chrono::seconds(10);
  options.retry.max_attempts = 2;
  options.retry.initial_delay = std::chrono::milliseconds(50);
  return options;
}

IpfsOptions with_profile(const UnixfsProfile& profile) {
  IpfsOptions options = node_options();
  options.profile = profile;
  return options;
}

TEST_CASE("ipfs: the node's CIDs equal ours for files of many sizes and profiles", "[ipfs]") {
  test::ScratchDir scratch("ipfs-sizes");
  struct Case {
    UnixfsProfile profile;
    std::vector<std::uint64_t> sizes;
  };
  UnixfsProfile small_chunks = UnixfsProfile::kubo_default();
  small_chunks.chunk_size = 1024;  // 200 KB is 196 leaves: two levels at 174 links, cheaply
  const Case cases[] = {
      // 174 * 256 KiB fills one node of leaves; one byte more (45.6 MB) needs a second level.
      {UnixfsProfile::kubo_default(), {0, 1, kChunk, kChunk + 1, 3'000'000, 174 * kChunk + 1}},
      {UnixfsProfile::one_mib_chunks(), {kMaxChunkSize, kMaxChunkSize + 1, 3'000'000}},
      {small_chunks, {1024, 1025, 174 * 1024, 200'000}},
      {UnixfsProfile::cid_v0(), {0, 1, kChunk + 1, 3'000'000}},
  };
  std::uint32_t seed = 1;
  for (const Case& c : cases) {
    IpfsClient client(with_profile(c.profile));
    for (const std::uint64_t size : c.sizes) {
      const std::filesystem::path file = scratch / (std::to_string(seed) + ".bin");
      test::write_random_file(file, size, seed++);
      INFO(c.profile.describe() << ", " << size << " bytes");
      const std::string expected = file_cid(file, c.profile);
      // add_file throws when the node's CID differs from ours; equality is checked here too.
      CHECK(client.add_file(file) == expected);
    }
  }
}

TEST_CASE("ipfs: a nested directory gets the node's CID, and its files come back by path", "[ipfs]") {
  test::ScratchDir scratch("ipfs-dir");
  const std::filesystem::path dir = scratch / "tree";
  test::write_text(dir / "a.txt", "hello world\n");
  test::write_random_file(dir / "sub" / "b.bin", 3 * kChunk + 5, 11);
  test::write_text(dir / "sub" / "10", "");
  test::write_text(dir / "sub" / "9", "nine");  // name order is by bytes: "10" before "9"
  test::write_text(dir / "sub" / "deeper" / "c d.txt", "space in the name");
  test::write_text(dir / "sub" / "Zeta", "capitals sort first");
  test::write_text(dir / "é+&%=.txt", "characters that need URL-encoding");
  std::filesystem::create_directories(dir / "empty");

  IpfsClient client(node_options());
  const std::string root = client.add_directory(dir);
  CHECK(root == directory_cid(dir, client.options().profile));

  client.cat_to_file("ipfs://" + root + "/sub/b.bin", scratch / "b.out", test::kLargeEnough);
  CHECK(sha256_file_hex(scratch / "b.out") == sha256_file_hex(dir / "sub" / "b.bin"));
  client.cat_to_file("/ipfs/" + root + "/é+&%=.txt", scratch / "e.out", test::kLargeEnough);
  CHECK(read_file(scratch / "e.out") == "characters that need URL-encoding");

  const std::vector<IpfsEntry> entries = client.ls(root);
  std::vector<std::string> names;
  for (const IpfsEntry& entry : entries) names.push_back(entry.name + (entry.is_directory ? "/" : ""));
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"a.txt", "empty/", "sub/", "é+&%=.txt"});
}

TEST_CASE("ipfs: a multi-MB file goes up and comes back byte for byte", "[ipfs]") {
  test::ScratchDir scratch("ipfs-roundtrip");
  test::write_random_file(scratch / "data.bin", 7'000'000, 21);
  IpfsClient client(node_options());
  const std::string cid = client.add_file(scratch / "data.bin");
  CHECK(client.is_pinned(cid));
  client.cat_to_file("ipfs://" + cid, scratch / "back.bin", test::kLargeEnough);
  CHECK(sha256_file_hex(scratch / "back.bin") == sha256_file_hex(scratch / "data.bin"));
  CHECK_FALSE(std::filesystem::exists(scratch / "back.bin.partial"));
  client.cat_to_file(cid, scratch / "again.bin", test::kLargeEnough);  // a bare CID is a path too
  CHECK(std::filesystem::file_size(scratch / "again.bin") == 7'000'000);
}

TEST_CASE("ipfs: pin_add pins what was added unpinned", "[ipfs]") {
  test::ScratchDir scratch("ipfs-pin");
  test::write_random_file(scratch / "data.bin", 300'000, 31);
  const IpfsOptions options = node_options();
  HttpRequest add;
  add.method = "POST";
  add.url = options.api_url + "/api/v0/add?cid-version=1&raw-leaves=true&cid-base=base32&pin=false";
  FormPart part;
  part.filename = "data.bin";
  part.content_type = "application/octet-stream";
  part.file = FileSlice{scratch / "data.bin", 0, std::nullopt};
  add.form.push_back(part);
  REQUIRE(perform(add).status == 200);

  IpfsClient client(options);
  const std::string cid = file_cid(scratch / "data.bin", options.profile);
  CHECK_FALSE(client.is_pinned(cid));
  client.pin_add(cid);
  CHECK(client.is_pinned(cid));
}

TEST_CASE("ipfs: a bundle publishes to its CID, publishes again unchanged and fetches back", "[ipfs]") {
  test::ScratchDir scratch("ipfs-store");
  const std::filesystem::path bundle = scratch / "bundle";
  test::write_text(bundle / "manifest.json", R"({"schema": "solver.pol-manifest/1"})");
  test::write_random_file(bundle / "checkpoints" / "step_00000010.safetensors", 2'000'000, 41);
  test::write_text(bundle / "segments" / "steps_1-10.json", "{}");
  test::write_text(bundle / ".upload-record", "not part of the bundle");

  IpfsStore store(node_options());
  const BundleListing listing{.dir = bundle};  // the IPFS store publishes the folder as it is
  const std::string address = store.publish(listing, "run-1");
  CHECK(address == "ipfs://" + directory_cid(bundle, UnixfsProfile::kubo_default(), false));
  {
    test::LogCapture log;
    CHECK(store.publish(listing, "run-1") == address);
    // The node already pins that CID, so nothing was uploaded again.
    const std::vector<std::string> lines = log.lines();
    CHECK(std::any_of(lines.begin(), lines.end(),
                      [](const std::string& line) { return line.find("already pinned") != std::string::npos; }));
  }

  const std::filesystem::path fetched = scratch / "fetched";
  store.fetch(address, fetched, test::kLargeEnough);
  for (const std::string name : {"manifest.json", "checkpoints/step_00000010.safetensors", "segments/steps_1-10.json"})
    CHECK(sha256_file_hex(fetched / name) == sha256_file_hex(bundle / name));
  CHECK_FALSE(std::filesystem::exists(fetched / ".upload-record"));
  CHECK(directory_cid(fetched, UnixfsProfile::kubo_default()) == address.substr(7));
  CHECK_FALSE(std::filesystem::exists(scratch / ".fetched.fetching"));

  // A destination with something in it is refused; a bad address is bad input.
  CHECK(test::error_kind_of([&] { store.fetch(address, fetched, test::kLargeEnough); }) == ErrorKind::Io);
  CHECK(test::error_kind_of([&] { store.fetch("s3://bucket/run-1", scratch / "x", test::kLargeEnough); }) == ErrorKind::Input);
  CHECK(test::error_kind_of([&] { store.fetch("ipfs://not-a-cid", scratch / "x", test::kLargeEnough); }) == ErrorKind::Input);
}

TEST_CASE("ipfs: a node that builds another DAG than ours is caught on add and on cat", "[ipfs]") {
  test::ScratchDir scratch("ipfs-mismatch");
  test::write_random_file(scratch / "data.bin", 10'000, 51);

  // We expect 2 links per node; js-ipfs ignores max-file-links and builds 174-wide, so its CID
  // differs from ours.
  UnixfsProfile narrow = UnixfsProfile::kubo_default();
  narrow.chunk_size = 1024;
  narrow.max_links = 2;
  IpfsClient narrow_client(with_profile(narrow));
  const std::optional<Error> added = test::error_of([&] { narrow_client.add_file(scratch / "data.bin"); });
  REQUIRE(added);
  CHECK(added->kind() == ErrorKind::Network);
  CHECK_FALSE(added->retryable());
  CHECK_THAT(added->what(), Catch::Contains("IPFS node returned CID") &&
                                Catch::Contains("but the content hashes to " + file_cid(scratch / "data.bin", narrow)));

  // Content the node chunked at 1 KiB, read by a client expecting 256 KiB chunks: the bytes are
  // right, but they do not hash to the CID under our profile, so the client does not vouch for them.
  UnixfsProfile small_chunks = UnixfsProfile::kubo_default();
  small_chunks.chunk_size = 1024;
  const std::string cid = IpfsClient(with_profile(small_chunks)).add_file(scratch / "data.bin");
  IpfsClient client(node_options());
  const std::optional<Error> served = test::error_of([&] { client.cat_to_file("ipfs://" + cid, scratch / "out.bin", test::kLargeEnough); });
  REQUIRE(served);
  CHECK(served->kind() == ErrorKind::Network);
  CHECK_FALSE(served->retryable());
  CHECK_THAT(served->what(), Catch::Contains("IPFS node served 10000 bytes for CID " + cid));
  CHECK_FALSE(std::filesystem::exists(scratch / "out.bin"));
  CHECK_FALSE(std::filesystem::exists(scratch / "out.bin.partial"));
}

TEST_CASE("ipfs: content the node cannot find fails within the lookup timeout", "[ipfs]") {
  test::ScratchDir scratch("ipfs-unknown");
  test::write_text(scratch / "never-added", "content no node has " + std::to_string(::getpid()));
  const std::string unknown = file_cid(scratch / "never-added", UnixfsProfile::kubo_default());
  IpfsOptions options = node_options();
  options.lookup_timeout = std::chrono::seconds(1);
  options.retry.max_attempts = 1;
  IpfsClient client(options);

  const auto start = std::chrono::steady_clock::now();
  const std::optional<Error> error = test::error_of([&] { client.cat_to_file("ipfs://" + unknown, scratch / "out", test::kLargeEnough); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Network);
  CHECK_THAT(error->what(), Catch::Contains(unknown) && Catch::Contains("timed out"));
  CHECK(elapsed < std::chrono::seconds(5));
  CHECK_FALSE(std::filesystem::exists(scratch / "out"));
  CHECK(test::error_kind_of([&] { IpfsStore(options).fetch("ipfs://" + unknown, scratch / "bundle", test::kLargeEnough); }) ==
        ErrorKind::Network);
}

TEST_CASE("ipfs: a node that is down is a retryable network error", "[ipfs]") {
  test::ScratchDir scratch("ipfs-down");
  test::write_text(scratch / "bundle" / "manifest.json", "{}");
  IpfsOptions options;
  options.api_url = "http://127.0.0.1:1";  // tcpmux's port: nothing listens there
  options.retry.max_attempts = 2;
  options.retry.initial_delay = std::chrono::milliseconds(10);
  IpfsStore store(options);
  const std::optional<Error> published = test::error_of([&] { store.publish(BundleListing{.dir = scratch / "bundle"}, "run-1"); });
  REQUIRE(published);
  CHECK(published->kind() == ErrorKind::Network);
  CHECK(published->retryable());
  const std::string cid = file_cid(scratch / "bundle" / "manifest.json", options.profile);
  const std::optional<Error> fetched =
      test::error_of([&] { IpfsClient(options).cat_to_file("ipfs://" + cid, scratch / "out", test::kLargeEnough); });
  REQUIRE(fetched);
  CHECK(fetched->kind() == ErrorKind::Network);
  CHECK(fetched->retryable());
}

TEST_CASE("ipfs: bad paths and API URLs are refused before any request", "[ipfs]") {
  IpfsOptions options;
  options.api_url = "127.0.0.1:5001";
  CHECK(test::error_kind_of([&] { IpfsClient{options}; }) == ErrorKind::Config);
  options.api_url = "http://127.0.0.1:5001/";
  CHECK(IpfsClient(options).options().api_url == "http://127.0.0.1:5001");
  IpfsClient client(options);
  CHECK(test::error_kind_of([&] { client.cat_to_file("ipfs://QmNotACid", "/tmp/never-written", test::kLargeEnough); }) == ErrorKind::Input);
  CHECK(test::error_kind_of([&] { client.cat_to_file("ipfs://bafy!", "/tmp/never-written", test::kLargeEnough); }) == ErrorKind::Input);
}

TEST_CASE("ipfs: the store's probe adds a file, reads it back and unpins it", "[net][ipfs]") {
  test::ScratchDir scratch("ipfs-probe");
  IpfsStore store(node_options());
  const std::string done = store.probe(scratch.path());
  REQUIRE_THAT(done, Catch::StartsWith("added, read back and unpinned "));
  const std::string cid = done.substr(std::string("added, read back and unpinned ").size(), done.find(" on ") - 30);
  CHECK_FALSE(IpfsClient(node_options()).is_pinned(cid));

  IpfsOptions unreachable = node_options();
  unreachable.api_url = "http://127.0.0.1:1";
  CHECK_THROWS_AS(IpfsStore(unreachable).probe(scratch.path()), Error);
}

}  // namespace
}  // namespace solver::net
