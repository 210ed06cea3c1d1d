// S3: a client for the calls a bundle store needs (PutObject, multipart uploads, HeadObject,
// GetObject, ListObjectsV2), signed with SigV4. net/s3_store.h keeps bundles with it.
//
// Uploads stream files from disk. A file larger than one part goes up as a multipart upload
// whose parts travel in parallel, each retried; the upload is aborted when a part fails for
// good (a non-retryable error), and kept while the store is unreachable so that the next
// attempt, even after a restart, resumes it: a small record next to the bundle (or in
// S3Config::state_dir) holds the UploadId, and ListParts says which parts are already there.
// Every object carries its whole-file SHA-256 as x-amz-meta-sha256 (S3's own multipart
// checksums are composite), which S3Store::publish() uses to skip what is already there and
// get_object_to_file checks after downloading.
//
// Secrets never reach a log line or an error message: at most the access key id's first four
// characters do.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/http.h"
#include "net/retry.h"
#include "net/sigv4.h"

namespace solver::net {

enum class S3Addressing {
  Auto,         // virtual-host on AWS when the bucket name allows it, path-style on custom endpoints
  Path,         // scheme://endpoint/bucket/key
  VirtualHost,  // scheme://bucket.endpoint/key
};

// S3's limits on multipart uploads. Production code keeps the defaults; tests lower
// min_part_size, because s3rver accepts small parts and a 3 MB file then exercises every path.
struct S3Limits {
  std::uint64_t min_part_size = 5ull << 20;  // every part but the last
  std::uint64_t max_part_size = 5ull << 30;
  std::uint32_t max_parts = 10'000;
};

struct S3Config {
  std::string endpoint;  // "http://127.0.0.1:9000"; empty: AWS, https://s3.<region>.amazonaws.com
  std::string region;    // empty: AWS_REGION, AWS_DEFAULT_REGION, the profile's region, else us-east-1
  std::string bucket;
  std::string prefix;    // bundles go under <prefix>/<bundle name>/; may be empty
  S3Addressing addressing = S3Addressing::Auto;
  sigv4::Credentials credentials;  // empty: the environment, then the profile files
  std::string profile;             // empty: AWS_PROFILE, else "default"
  // Files up to one part go up in one PutObject, larger ones in parts of this size (raised when
  // the file would need more than max_parts, clamped to the limits).
  std::uint64_t part_size = 64ull << 20;
  int parallelism = 4;  // parts, or small files, in flight at once (1 to 64)
  // SHA-256 of every body in its signature, so S3 checks each byte it stores against the file;
  // false sends UNSIGNED-PAYLOAD, for TLS endpoints where a second pass over the data costs too much.
  bool sign_payload = true;
  S3Limits limits;
  RetryPolicy retry;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds request_timeout{900'000};  // one whole request, a part's upload included
  std::chrono::milliseconds stall_timeout{30'000};
  std::filesystem::path state_dir;  // where multipart resume records go; empty: inside the bundle
};

// Where a lookup finds environment variables; tests pass their own.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> process_environment(const std::string& name);

// Fills what `config` leaves empty. Credentials: the config's, else AWS_ACCESS_KEY_ID +
// AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else the profile (AWS_PROFILE or "default") in
// AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), then in AWS_CONFIG_FILE (~/.aws/config).
// Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1. Endpoint:
// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS's.
// Throws Error(Config) when no credentials are found or a profile file is malformed.
S3Config resolve_s3_config(S3Config config, const EnvironmentLookup& environment = process_environment);

// The part size for a file of `file_size` bytes: config.part_size within the limits, raised
// until the file fits in max_parts parts. Throws Error(Input) when no part size can.
std::uint64_t s3_part_size(std::uint64_t file_size, const S3Config& config);

// "s3://bucket/key" and back. The key may be empty ("s3://bucket").
struct S3Address {
  std::string bucket;
  std::string key;
};
S3Address parse_s3_address(std::string_view address);  // Error(Input) naming what was wrong
std::string format_s3_address(const S3Address& address);

struct S3Object {
  std::string key;
  std::uint64_t size = 0;
  std::string etag;    // as S3 sends it, quotes included
  std::string sha256;  // x-amz-meta-sha256; empty when the listing does not say or it was never set
};

struct S3Part {
  int number = 0;  // 1-based
  std::uint64_t size = 0;
  std::string etag;
};

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// One bucket's client. Every call retries what is worth retrying (config.retry) and throws
// Error(Network, retryable) naming the call and s3://bucket/key otherwise. Thread-safe.
class S3Client {
 public:
  // `config` must be resolved (resolve_s3_config). Throws Error(Config) for an invalid value.
  explicit S3Client(S3Config config);

  const S3Config& config() const { return config_; }
  // The same client for another bucket (fetch() follows an address's bucket).
  S3Client for_bucket(const std::string& bucket) const;

  // The URL of `key` (empty: the bucket itself) with the query pairs in this order,
  // percent-encoded the way AWS's SDKs encode them.
  std::string url(std::string_view key, const QueryParams& query = {}) const;

  // Uploads `file` as `key` with x-amz-meta-sha256 = `sha256` (the file's, computed by the
  // caller): PutObject when it fits in one part, otherwise a multipart upload whose resume
  // record goes in `record_dir` (state_dir when set). Returns once S3 holds the whole object.
  void upload_file(const std::string& key, const std::filesystem::path& file, const std::string& sha256,
                   const std::filesystem::path& record_dir);

  void put_object(const std::string& key, const std::filesystem::path& file, const std::string& sha256);
  std::optional<S3Object> head_object(const std::string& key);  // nullopt: no such object
  void delete_object(const std::string& key);  // an absent object is no error
  // Downloads through a temp file renamed into place; checks the size and, when the object has
  // one, its x-amz-meta-sha256 (Error(Network, retryable) on a mismatch). More than `max_bytes`
  // is cut off there (Error(Input)).
  S3Object get_object_to_file(const std::string& key, const std::filesystem::path& file, std::uint64_t max_bytes);
  std::vector<S3Object> list_objects(const std::string& prefix);  // every page, in key order

  std::string create_multipart_upload(const std::string& key, const std::string& sha256);
  std::string upload_part(const std::string& key, const std::string& upload_id, int part_number,
                          const FileSlice& slice);  // returns the part's ETag
  std::optional<std::vector<S3Part>> list_parts(const std::string& key, const std::string& upload_id);  // nullopt: NoSuchUpload
  void complete_multipart_upload(const std::string& key, const std::string& upload_id,
                                 const std::vector<S3Part>& parts);
  void abort_multipart_upload(const std::string& key, const std::string& upload_id);

 private:
  struct Call;
  HttpResponse send(const Call& call) const;
  HttpResponse send_with_retries(const Call& call);
  void complete_upload(const std::string& key, const std::string& upload_id, const std::vector<S3Part>& parts,
                       const std::function<bool()>& already_complete);
  void upload_multipart(const std::string& key, const std::filesystem::path& file, const std::string& sha256,
                        const std::filesystem::path& record_dir);

  S3Config config_;
  std::string scheme_;
  std::string host_;  // host[:port] of the endpoint
};

}  // namespace solver::net
