// UnixFS DAGs built in memory only as far as needed to name them: a file is read one chunk at a
// time, and only the pending links of each level of its balanced tree are kept.
//
// Encodings (as go-merkledag and @ipld/dag-pb write them): a dag-pb PBNode is its Links (field 2,
// each {Hash = 1: CID bytes, Name = 2: always written, even empty, Tsize = 3}) followed by its
// Data (field 1), a UnixFS Data message {Type = 1, Data = 2 (left out when empty), filesize = 3
// (files only), blocksizes = 4 (repeated, not packed)}.
#include "net/unixfs.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "common/error.h"
#include "common/sha256.h"
#include "net/detail/multiformats.h"

namespace solver::net {
namespace {

using detail::append_varint;
using detail::Cid;

constexpr std::uint64_t kUnixfsDirectory = 1;
constexpr std::uint64_t kUnixfsFile = 2;

// Protobuf wire format: a key is (field << 3) | wire type; 0 = varint, 2 = length-delimited.
void append_varint_field(std::string& out, std::uint32_t field, std::uint64_t value) {
  append_varint(out, (field << 3) | 0);
  append_varint(out, value);
}
void append_bytes_field(std::string& out, std::uint32_t field, std::string_view bytes) {
  append_varint(out, (field << 3) | 2);
  append_varint(out, bytes.size());
  out.append(bytes);
}

struct Link {
  std::string name;
  Cid cid;
  std::uint64_t dag_size = 0;
  std::uint64_t content_size = 0;
};

std::string encode_pb_node(const std::vector<Link>& links, std::string_view data) {
  std::string node;
  for (const Link& link : links) {
    std::string encoded;
    append_bytes_field(encoded, 1, link.cid.bytes());
    append_bytes_field(encoded, 2, link.name);
    append_varint_field(encoded, 3, link.dag_size);
    append_bytes_field(node, 2, encoded);
  }
  append_bytes_field(node, 1, data);
  return node;
}

std::string encode_unixfs_file(std::string_view content, std::uint64_t file_size, const std::vector<Link>& children) {
  std::string data;
  append_varint_field(data, 1, kUnixfsFile);
  if (!content.empty()) append_bytes_field(data, 2, content);
  append_varint_field(data, 3, file_size);
  for (const Link& child : children) append_varint_field(data, 4, child.content_size);
  return data;
}

Digest sha256_of(std::string_view bytes) {
  Sha256 hasher;
  hasher.update(bytes);
  return hasher.finish();
}

Link dag_pb_block(const UnixfsProfile& profile, const std::string& block, std::uint64_t children_dag_size,
                  std::uint64_t content_size) {
  return Link{"", Cid{profile.cid_version, detail::kCodecDagPb, sha256_of(block)}, block.size() + children_dag_size,
              content_size};
}

Link leaf(const UnixfsProfile& profile, std::string_view chunk) {
  if (profile.raw_leaves) return Link{"", Cid{1, detail::kCodecRaw, sha256_of(chunk)}, chunk.size(), chunk.size()};
  return dag_pb_block(profile, encode_pb_node({}, encode_unixfs_file(chunk, chunk.size(), {})), 0, chunk.size());
}

Link file_parent(const UnixfsProfile& profile, const std::vector<Link>& children) {
  std::uint64_t content_size = 0;
  std::uint64_t children_dag_size = 0;
  for (const Link& child : children) {
    content_size += child.content_size;
    children_dag_size += child.dag_size;
  }
  return dag_pb_block(profile, encode_pb_node(children, encode_unixfs_file({}, content_size, children)),
                      children_dag_size, content_size);
}

// The balanced layout, streamed: level k holds the not-yet-grouped nodes of height k. A full level
// is grouped into one parent before it takes another node, which makes the same batches of
// `max_links` as grouping the whole level at the end.
class BalancedTree {
 public:
  explicit BalancedTree(const UnixfsProfile& profile) : profile_(profile) {}

  void add_leaf(Link link) { add(0, std::move(link)); }

  Link finish() {
    for (std::size_t level = 0;; ++level) {
      const bool top = std::all_of(levels_.begin() + static_cast<std::ptrdiff_t>(level) + 1, levels_.end(),
                                   [](const std::vector<Link>& pending) { return pending.empty(); });
      if (top && levels_[level].size() == 1) return levels_[level].front();
      if (!levels_[level].empty()) add(level + 1, group(level));
    }
  }

 private:
  void add(std::size_t level, Link link) {
    if (levels_.size() <= level) levels_.resize(level + 1);
    if (levels_[level].size() == profile_.max_links) {
      Link parent = group(level);
      add(level + 1, std::move(parent));
    }
    levels_[level].push_back(std::move(link));
  }

  Link group(std::size_t level) {
    Link parent = file_parent(profile_, levels_[level]);
    levels_[level].clear();
    return parent;
  }

  const UnixfsProfile& profile_;
  std::vector<std::vector<Link>> levels_;
};

UnixfsNode to_node(const Link& link) { return UnixfsNode{link.cid.text(), link.dag_size, link.content_size}; }

}  // namespace

UnixfsProfile UnixfsProfile::kubo_default() { return UnixfsProfile{}; }

UnixfsProfile UnixfsProfile::one_mib_chunks() {
  UnixfsProfile profile;
  profile.chunk_size = kMaxChunkSize;
  return profile;
}

UnixfsProfile UnixfsProfile::unixfs_v1_2025() {
  UnixfsProfile profile;
  profile.chunk_size = kMaxChunkSize;
  profile.max_links = 1024;
  return profile;
}

UnixfsProfile UnixfsProfile::cid_v0() {
  UnixfsProfile profile;
  profile.cid_version = 0;
  profile.raw_leaves = false;
  return profile;
}

std::string UnixfsProfile::chunker() const { return "size-" + std::to_string(chunk_size); }

std::string UnixfsProfile::describe() const {
  return fmt::format("CIDv{}, {}, {}-byte chunks, {} links", cid_version, raw_leaves ? "raw leaves" : "dag-pb leaves",
                     chunk_size, max_links);
}

void UnixfsProfile::validate() const {
  if (chunk_size == 0 || chunk_size > kMaxChunkSize)
    throw Error(ErrorKind::Config, fmt::format("UnixFS chunk size {} is out of range (expected 1 to {} bytes)",
                                               chunk_size, kMaxChunkSize));
  if (max_links < 2)
    throw Error(ErrorKind::Config, fmt::format("UnixFS max links per node is {} (expected at least 2)", max_links));
  if (cid_version != 0 && cid_version != 1)
    throw Error(ErrorKind::Config, fmt::format("CID version {} is not supported (expected 0 or 1)", cid_version));
  if (cid_version == 0 && raw_leaves)
    throw Error(ErrorKind::Config, "raw leaves need CIDv1 (a CIDv0 can only name dag-pb blocks)");
}

UnixfsNode file_node(const std::filesystem::path& file, const UnixfsProfile& profile) {
  profile.validate();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open " + file.string() + " to compute its CID");
  BalancedTree tree(profile);
  std::string chunk(profile.chunk_size, '\0');
  bool first = true;
  while (true) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto count = static_cast<std::size_t>(in.gcount());
    if (in.bad()) throw Error(ErrorKind::Io, "read error while computing the CID of " + file.string());
    // An empty file is one empty chunk; otherwise a short read at the end adds no empty leaf.
    if (count > 0 || first) tree.add_leaf(leaf(profile, std::string_view(chunk.data(), count)));
    first = false;
    if (count < chunk.size()) break;
  }
  return to_node(tree.finish());
}

std::string file_cid(const std::filesystem::path& file, const UnixfsProfile& profile) {
  return file_node(file, profile).cid;
}

bool is_valid_entry_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

UnixfsNode directory_node(std::vector<DirectoryLink> links, const UnixfsProfile& profile) {
  profile.validate();
  if (links.size() > kMaxDirectoryEntries)
    throw Error(ErrorKind::Input, fmt::format("a directory of {} entries would be HAMT-sharded by IPFS nodes, which "
                                              "solver does not do (expected at most {})",
                                              links.size(), kMaxDirectoryEntries));
  // Byte order of the names, as std::string compares them (UTF-8 bytes, unsigned).
  std::sort(links.begin(), links.end(), [](const DirectoryLink& a, const DirectoryLink& b) { return a.name < b.name; });
  std::vector<Link> encoded_links;
  std::uint64_t children_dag_size = 0;
  std::uint64_t content_size = 0;
  for (std::size_t i = 0; i < links.size(); ++i) {
    const DirectoryLink& link = links[i];
    if (!is_valid_entry_name(link.name))
      throw Error(ErrorKind::Input,
                  "\"" + link.name + "\" is not a valid directory entry name (empty, . or .., or has / or NUL)");
    if (i > 0 && links[i - 1].name == link.name)
      throw Error(ErrorKind::Input, "directory entry \"" + link.name + "\" appears twice");
    Link encoded{link.name, detail::parse_cid(link.node.cid), link.node.dag_size, link.node.content_size};
    children_dag_size += link.node.dag_size;
    content_size += link.node.content_size;
    encoded_links.push_back(std::move(encoded));
  }
  std::string data;
  append_varint_field(data, 1, kUnixfsDirectory);
  const std::string block = encode_pb_node(encoded_links, data);
  if (block.size() >= kMaxDirectoryBlockBytes)
    throw Error(ErrorKind::Input, fmt::format("a directory node of {} bytes would be HAMT-sharded by Kubo, which "
                                              "solver does not do (expected under {})",
                                              block.size(), kMaxDirectoryBlockBytes));
  return to_node(dag_pb_block(profile, block, children_dag_size, content_size));
}

UnixfsNode directory_tree_node(const std::filesystem::path& dir, const UnixfsProfile& profile, bool include_hidden) {
  std::vector<DirectoryLink> links;
  std::error_code error;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    const std::filesystem::path& path = it->path();
    const std::string name = path.filename().string();
    if (!include_hidden && name.starts_with(".")) continue;
    const std::filesystem::file_status status = it->symlink_status(error);
    if (error) break;
    if (std::filesystem::is_regular_file(status)) {
      links.push_back({name, file_node(path, profile)});
    } else if (std::filesystem::is_directory(status)) {
      links.push_back({name, directory_tree_node(path, profile, include_hidden)});
    } else {
      throw Error(ErrorKind::Input, path.string() +
                                        " is neither a regular file nor a folder (a symlink or a device?); "
                                        "only those can be added to IPFS by solver");
    }
  }
  if (error) throw Error(ErrorKind::Io, "cannot list " + dir.string() + ": " + error.message());
  return directory_node(std::move(links), profile);
}

std::string directory_cid(const std::filesystem::path& dir, const UnixfsProfile& profile, bool include_hidden) {
  return directory_tree_node(dir, profile, include_hidden).cid;
}

}  // namespace solver::net
