// net/unixfs.h with no node running: CIDs of known content, CIDv0 against Debian's ipfs_cid
// (Rust, an independent implementation) across chunk and tree-level boundaries, link widths other
// than 174 against ipfs-unixfs-importer, and what the profile and directory rules refuse.
// The CIDs the daemon computes are cross-checked in test_ipfs.cpp.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "net/unixfs.h"
#include "tests/net/ipfs_node.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

constexpr std::uint64_t kChunk = 256 * 1024;
const std::filesystem::path kIpfsCid = "/usr/bin/ipfs_cid";

// Known values: the empty file and folder are the well-known CIDs every IPFS implementation
// gives; "hello world\n" as CIDv0 is what ipfs_cid prints, as a raw-leaf CIDv1 what js-ipfs's add answered.
TEST_CASE("unixfs: known CIDs of empty and small content", "[unixfs]") {
  test::ScratchDir scratch("unixfs-known");
  test::write_text(scratch / "empty", "");
  test::write_text(scratch / "hello", "hello world\n");
  std::filesystem::create_directories(scratch / "empty-dir");

  CHECK(file_cid(scratch / "empty", UnixfsProfile::kubo_default()) ==
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
  CHECK(file_cid(scratch / "empty", UnixfsProfile::cid_v0()) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  CHECK(file_cid(scratch / "hello", UnixfsProfile::kubo_default()) ==
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
  CHECK(file_cid(scratch / "hello", UnixfsProfile::cid_v0()) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
  CHECK(directory_cid(scratch / "empty-dir", UnixfsProfile::kubo_default()) ==
        "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");
  CHECK(directory_cid(scratch / "empty-dir", UnixfsProfile::cid_v0()) ==
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");

  const UnixfsNode hello = file_node(scratch / "hello", UnixfsProfile::kubo_default());
  CHECK(hello.content_size == 12);
  CHECK(hello.dag_size == 12);  // a raw leaf is its own block
}

TEST_CASE("unixfs: CIDv0 matches Debian's ipfs_cid around chunk and tree-level boundaries", "[unixfs]") {
  INFO("install Debian's ipfs-cid package (scripts/install-deps.sh)");
  REQUIRE(std::filesystem::exists(kIpfsCid));
  test::ScratchDir scratch("unixfs-ipfs-cid");
  // 174 * 256 KiB fills one node of leaves; one byte more needs a second level.
  for (const std::uint64_t size :
       std::vector<std::uint64_t>{0, 1, kChunk - 1, kChunk, kChunk + 1, 3'000'000, 174 * kChunk + 1}) {
    const std::filesystem::path file = scratch / (std::to_string(size) + ".bin");
    test::write_random_file(file, size, static_cast<std::uint32_t>(size));
    const test::CommandResult result = test::run_command({kIpfsCid.string(), file.string()});
    REQUIRE(result.exit_code == 0);
    // It prints JSON on stdout and statistics on stderr, interleaved here: take the JSON line.
    const auto start = result.output.find("{\"CIDv0\"");
    REQUIRE(start != std::string::npos);
    const auto reference =
        nlohmann::json::parse(result.output.substr(start, result.output.find('}', start) - start + 1));
    INFO("size " << size);
    CHECK(file_cid(file, UnixfsProfile::cid_v0()) == reference["CIDv0"].get<std::string>());
  }
}

TEST_CASE("unixfs: link widths other than 174 match ipfs-unixfs-importer", "[unixfs]") {
  const std::filesystem::path servers = test::require_test_servers().parent_path().parent_path().parent_path();
  test::ScratchDir scratch("unixfs-width");
  const std::filesystem::path file = scratch / "data";
  test::write_random_file(file, 1'100'000, 7);  // 1075 chunks of 1 KiB: two levels even at 1024 links
  for (const std::uint32_t width : {2u, 100u, 1024u}) {
    UnixfsProfile profile = UnixfsProfile::kubo_default();
    profile.chunk_size = 1024;
    profile.max_links = width;
    const test::CommandResult result =
        test::run_command({"/usr/bin/env", "node", (test::source_dir() / "tests/net/unixfs_importer.mjs").string(),
                           servers.string(), file.string(), "1024", std::to_string(width)});
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
    CHECK(file_cid(file, profile) + "\n" == result.output);
  }
}

TEST_CASE("unixfs: profiles that no node would build are refused", "[unixfs]") {
  test::ScratchDir scratch("unixfs-profile");
  test::write_text(scratch / "file", "x");
  const auto kind_with = [&](auto change) {
    UnixfsProfile profile = UnixfsProfile::kubo_default();
    change(profile);
    return test::error_kind_of([&] { file_cid(scratch / "file", profile); });
  };
  CHECK(kind_with([](UnixfsProfile& p) { p.chunk_size = 0; }) == ErrorKind::Config);
  CHECK(kind_with([](UnixfsProfile& p) { p.chunk_size = kMaxChunkSize + 1; }) == ErrorKind::Config);
  CHECK(kind_with([](UnixfsProfile& p) { p.max_links = 1; }) == ErrorKind::Config);
  CHECK(kind_with([](UnixfsProfile& p) { p.cid_version = 2; }) == ErrorKind::Config);
  CHECK(kind_with([](UnixfsProfile& p) { p.cid_version = 0; }) == ErrorKind::Config);  // v0 with raw leaves
  CHECK(kind_with([](UnixfsProfile& p) { p.chunk_size = kMaxChunkSize; }) == std::nullopt);
  CHECK(UnixfsProfile::one_mib_chunks().chunker() == "size-1048576");
  CHECK(UnixfsProfile::unixfs_v1_2025().describe() == "CIDv1, raw leaves, 1048576-byte chunks, 1024 links");
  CHECK(test::error_kind_of([&] { file_cid(scratch / "missing", UnixfsProfile::kubo_default()); }) == ErrorKind::Io);
}

TEST_CASE("unixfs: directories IPFS would shard, bad names and symlinks are refused", "[unixfs]") {
  const UnixfsProfile profile = UnixfsProfile::kubo_default();
  const UnixfsNode empty_file{"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", 0, 0};
  std::vector<DirectoryLink> links;
  for (std::size_t i = 0; i < kMaxDirectoryEntries; ++i) links.push_back({std::to_string(i) + ".txt", empty_file});
  CHECK_NOTHROW(directory_node(links, profile));
  links.push_back({"one-too-many", empty_file});
  CHECK(test::error_kind_of([&] { directory_node(links, profile); }) == ErrorKind::Input);

  // Long names make a 256 KiB node, where Kubo shards, well before 1000 entries.
  std::vector<DirectoryLink> long_names;
  for (int i = 0; i < 300; ++i) long_names.push_back({std::to_string(i) + std::string(1000, 'n'), empty_file});
  CHECK(test::error_kind_of([&] { directory_node(long_names, profile); }) == ErrorKind::Input);

  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "a/b", std::string("nul\0", 4)})
    CHECK(test::error_kind_of([&] { directory_node({{bad, empty_file}}, profile); }) == ErrorKind::Input);
  CHECK(test::error_kind_of([&] {
          directory_node({{"same", empty_file}, {"same", empty_file}}, profile);
        }) == ErrorKind::Input);

  test::ScratchDir scratch("unixfs-symlink");
  test::write_text(scratch / "dir" / "target", "x");
  std::filesystem::create_symlink("target", scratch / "dir" / "link");
  CHECK(test::error_kind_of([&] { directory_cid(scratch / "dir", profile); }) == ErrorKind::Input);
}

TEST_CASE("unixfs: hidden entries can be left out, as ipfs add -r does", "[unixfs]") {
  test::ScratchDir scratch("unixfs-hidden");
  test::write_text(scratch / "with" / "a.txt", "a");
  test::write_text(scratch / "with" / ".upload-record", "state");
  test::write_text(scratch / "with" / "sub" / ".hidden" / "deep", "d");
  test::write_text(scratch / "without" / "a.txt", "a");
  std::filesystem::create_directories(scratch / "without" / "sub");
  const UnixfsProfile profile = UnixfsProfile::kubo_default();
  CHECK(directory_cid(scratch / "with", profile, false) == directory_cid(scratch / "without", profile));
  CHECK(directory_cid(scratch / "with", profile) != directory_cid(scratch / "without", profile));
}

}  // namespace
}  // namespace solver::net
