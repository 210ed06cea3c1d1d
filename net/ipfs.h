// IPFS through a node's RPC API (Kubo's /api/v0, which js-ipfs serves too): add files and
// directories as multipart uploads streamed from disk, cat content to files, list directories and
// pin. Every CID the node answers with is checked against one computed here (net/unixfs.h), so a
// node that stores something else than what was sent, or serves other bytes than the CID names,
// is caught: Error(Network, not retryable).
//
// Timeouts: calls that only look something up (block/stat, resolve, ls, pins) pass the node a
// `timeout` argument, so content it cannot find costs lookup_timeout and not forever; transfers
// (add, cat) are bounded by stall_timeout (no byte moved) and transfer_timeout (the whole call).
// Transport failures and 5xx answers are retried under `retry` (net/retry.h).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "net/retry.h"
#include "net/store.h"
#include "net/unixfs.h"

namespace solver::net {

struct IpfsOptions {
  std::string api_url = "http://127.0.0.1:5001";  // the node's RPC API (Kubo's Addresses.API)
  UnixfsProfile profile = UnixfsProfile::kubo_default();
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds lookup_timeout{60'000};
  std::chrono::milliseconds stall_timeout{30'000};
  std::chrono::milliseconds transfer_timeout{0};  // 0: no limit beyond the stall timeout
  RetryPolicy retry;
};

struct IpfsEntry {
  std::string name;
  std::string cid;
  bool is_directory = false;
};

class IpfsClient {
 public:
  // Throws Error(Config) for a bad profile or an api_url that is not http(s)://.
  explicit IpfsClient(IpfsOptions options);
  const IpfsOptions& options() const { return options_; }

  // Adds one file (pinned) and returns its CID, which the node must agree with. Skips the upload
  // when the node already pins that CID.
  std::string add_file(const std::filesystem::path& file);
  // Adds a folder, recursively, as one UnixFS directory (pinned) and returns its root CID, which
  // the node must agree with. Skips the upload when the node already pins that CID. Without
  // include_hidden, entries whose names start with '.' stay behind.
  std::string add_directory(const std::filesystem::path& dir, bool include_hidden = true);

  // Writes the file at `ipfs_path` ("ipfs://CID[/path]", "/ipfs/CID[/path]" or "CID[/path]") to
  // `dest` through a temporary file and a rename, after checking its bytes against the CID: a
  // raw-block CID against their sha2-256, a dag-pb one by rebuilding the DAG with this client's
  // profile (at the CID's version). For a path below a directory, the CID checked is the one the
  // node resolves the path to. More than `max_bytes` is cut off there (Error(Input)).
  void cat_to_file(std::string_view ipfs_path, const std::filesystem::path& dest, std::uint64_t max_bytes);

  // The entries of the directory `cid` (as the node lists them: names, CIDs, file or folder).
  std::vector<IpfsEntry> ls(const std::string& cid);

  // Pins `cid` recursively (fetching what the node lacks, within lookup_timeout).
  void pin_add(const std::string& cid);
  // Whether the node pins `cid` recursively, so that it holds the whole DAG.
  bool is_pinned(const std::string& cid);
  // Unpins `cid` (recursively); the node's garbage collection may then drop it.
  void pin_rm(const std::string& cid);

  // Downloads the directory `cid` into `dest` (which must not exist) and checks it: every file
  // against its listed CID, and every directory rebuilt from its verified entries against its CID.
  // Stops with Error(Input) where the files pass `max_bytes` in all.
  void fetch_directory(const std::string& cid, const std::filesystem::path& dest, std::uint64_t max_bytes);

 private:
  IpfsOptions options_;
};

// Bundles as IPFS directories: the address is ipfs://<root CID>, known before the upload.
// Hidden files (upload records and the like) are not published, as in DirectoryStore.
class IpfsStore final : public BundleStore {
 public:
  explicit IpfsStore(IpfsOptions options);
  std::string publish(const BundleListing& bundle, const std::string& bundle_name) override;
  // `address` is ipfs://CID; `dest_dir` must not exist yet, or be empty. The bundle is written to a
  // sibling temporary folder and renamed into place once every file and folder checked out.
  void fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) override;
  std::string probe(const std::filesystem::path& scratch_dir) override;

 private:
  IpfsClient client_;
};

}  // namespace solver::net
