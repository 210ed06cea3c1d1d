// Where finished bundles go: a local folder, an IPFS node or an S3 bucket, behind one interface,
// so the agent and `solver publish` publish (and verifiers fetch) through the same code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/bundle_files.h"

namespace solver::net {

class BundleStore {
 public:
  virtual ~BundleStore() = default;
  // Publishes the finished bundle in bundle.dir and returns its address (a path, ipfs://CID,
  // s3://bucket/prefix). The listing's sizes and hashes are taken as they are: the bundle's
  // writer computed them. Idempotent: publishing the same bundle again returns the same address
  // and duplicates nothing. Throws Error(Network, retryable=true) while the store is
  // unreachable; nothing is reported published that is not.
  virtual std::string publish(const BundleListing& bundle, const std::string& bundle_name) = 0;
  // Copies the bundle at `address` into `dest_dir` (created), checking what it can against the
  // address. A bundle of more than `max_bytes` in all is refused, or cut off where it passes
  // them (Error(Input)): the address may come from a stranger.
  virtual void fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) = 0;
  // Writes a small probe object where bundles go, reads it back, compares and removes it
  // (`solver doctor`); `scratch_dir` is a writable folder for the local copies. Returns what it
  // did, for the report; throws what publishing would (Error(Network) while unreachable).
  virtual std::string probe(const std::filesystem::path& scratch_dir) = 0;
};

// The bytes a probe writes: random, so a stale copy cannot pass for a fresh one.
std::string probe_content();

// A folder on this machine (or a mounted share): bundles are copied to <root>/<bundle_name>/
// through a temporary folder and a rename, so a reader never sees half a bundle. The address is
// the bundle folder's absolute path.
class DirectoryStore final : public BundleStore {
 public:
  explicit DirectoryStore(std::filesystem::path root);
  std::string publish(const BundleListing& bundle, const std::string& bundle_name) override;
  void fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) override;
  std::string probe(const std::filesystem::path& scratch_dir) override;

 private:
  std::filesystem::path root_;
};

}  // namespace solver::net
