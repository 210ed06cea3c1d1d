// Bundles in S3 at s3://bucket/<prefix>/<bundle name>/<file>, through net/s3.h's client.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "net/s3.h"
#include "net/store.h"

namespace solver::net {

class S3Store final : public BundleStore {
 public:
  explicit S3Store(S3Config config);  // resolved, as for S3Client

  // Uploads every file of a finished bundle whose object is missing or differs in size or
  // x-amz-meta-sha256, manifest.sig and manifest.json last, so that a reader who sees the
  // manifest sees a whole bundle. Each file goes up with the listing's hash (S3 refuses a body
  // that differs from it when the payload is signed); a listed file that is missing or of
  // another size stops the publish first (Error(Input)). Returns "s3://bucket/prefix/bundle_name"
  // once a listing shows every file there.
  std::string publish(const BundleListing& bundle, const std::string& bundle_name) override;
  // Downloads every object under the address into dest_dir, each checked against its listed size
  // and its x-amz-meta-sha256; Error(Input) when manifest.json or manifest.sig is not among them.
  void fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) override;
  std::string probe(const std::filesystem::path& scratch_dir) override;

 private:
  S3Client client_;
};

}  // namespace solver::net
