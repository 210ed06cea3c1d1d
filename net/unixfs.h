// UnixFS content addresses computed locally, byte for byte as Kubo and js-ipfs compute them on
// `add`, so the agent knows an upload's address before sending it and can check the node's answer.
//
// Files: fixed-size chunks; a balanced DAG (leaves in file order, each dag-pb node links at most
// `max_links` children, a level is grouped into parents until one node is left; a file of one
// chunk is that chunk's block itself); sha2-256. Directories: one dag-pb node per folder, links
// sorted by the bytes of their names, no mode or mtime. Large directories are refused rather than
// HAMT-sharded (see kMaxDirectoryEntries). Trickle layouts, rabin chunking and inline CIDs are not
// made. docs/storage.md describes the profiles.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace solver::net {

// The largest chunk Kubo's chunker accepts.
inline constexpr std::uint64_t kMaxChunkSize = 1ull << 20;
// The link width Kubo and js-ipfs use unless told otherwise.
inline constexpr std::uint32_t kDefaultMaxLinks = 174;

// How a file becomes a DAG. Two nodes agree on a CID only when they add with the same profile.
struct UnixfsProfile {
  std::uint64_t chunk_size = 256 * 1024;
  std::uint32_t max_links = kDefaultMaxLinks;  // children per dag-pb node of a file
  int cid_version = 1;
  bool raw_leaves = true;  // leaves as raw blocks (codec 0x55), else as dag-pb UnixFS File nodes

  // `ipfs add --cid-version=1` on Kubo and js-ipfs: 256 KiB chunks, 174 links, raw leaves.
  static UnixfsProfile kubo_default();
  // 1 MiB chunks (`--chunker=size-1048576`), 174 links, CIDv1, raw leaves: what js-ipfs can
  // build with 1 MiB chunks, since its RPC cannot choose the link width.
  static UnixfsProfile one_mib_chunks();
  // IPIP-499's unixfs-v1-2025 (Kubo's former test-cid-v1-wide): 1 MiB chunks, 1024 links, CIDv1,
  // raw leaves. Needs a node that takes `max-file-links` on add (Kubo does; js-ipfs does not).
  static UnixfsProfile unixfs_v1_2025();
  // Plain `ipfs add` (CIDv0 "Qm...", dag-pb leaves), 256 KiB chunks, 174 links.
  static UnixfsProfile cid_v0();

  std::string chunker() const;   // the `chunker` argument of the add call: "size-262144"
  std::string describe() const;  // for messages: "CIDv1, raw leaves, 262144-byte chunks, 174 links"
  // Throws Error(Config) for a chunk size outside 1..kMaxChunkSize, fewer than 2 links, a
  // version other than 0 or 1, or raw leaves under CIDv0 (v0 can only name dag-pb blocks).
  void validate() const;
};

// What a parent's link records about a child, and the child's address.
struct UnixfsNode {
  std::string cid;                 // text form: "bafy..."/"bafk..." (v1, base32) or "Qm..." (v0)
  std::uint64_t dag_size = 0;      // bytes of every block below and including this one (a link's Tsize)
  std::uint64_t content_size = 0;  // bytes of the file, or of all files under a directory
};

// Streams the file; throws Error(Io) when it cannot be read, Error(Config) for a bad profile.
UnixfsNode file_node(const std::filesystem::path& file, const UnixfsProfile& profile);
std::string file_cid(const std::filesystem::path& file, const UnixfsProfile& profile);

// Directories hold at most kMaxDirectoryEntries entries and their node stays under
// kMaxDirectoryBlockBytes: past the first js-ipfs shards a directory (shardSplitThreshold), past
// the second Kubo does (its 256 KiB HAMT threshold, whether it estimates the size from the block or
// from names plus CIDs, which is less). solver does not make HAMT shards, so such a directory is
// refused with Error(Input).
inline constexpr std::size_t kMaxDirectoryEntries = 1000;
inline constexpr std::uint64_t kMaxDirectoryBlockBytes = 256 * 1024;

struct DirectoryLink {
  std::string name;
  UnixfsNode node;
};

// A directory node from its children (in any order). Throws Error(Input) for an invalid or
// repeated name and for a directory past the sharding limits.
UnixfsNode directory_node(std::vector<DirectoryLink> links, const UnixfsProfile& profile);

// A folder on disk, recursively: regular files and folders only (a symlink or a device is
// Error(Input)), names as they are on disk. Without include_hidden, entries whose names start with
// '.' are left out, as `ipfs add -r` does without --hidden.
UnixfsNode directory_tree_node(const std::filesystem::path& dir, const UnixfsProfile& profile,
                               bool include_hidden = true);
std::string directory_cid(const std::filesystem::path& dir, const UnixfsProfile& profile, bool include_hidden = true);

// A name a UnixFS directory entry may have: not empty, not "." or "..", no '/' and no NUL.
bool is_valid_entry_name(std::string_view name);

}  // namespace solver::net
