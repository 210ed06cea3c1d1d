// Test fixtures for S3: s3rver (npm, pinned in tests/servers) started on 127.0.0.1 in a scratch
// folder as a BackgroundProcess, the AWS CLI pointed at it, and S3Proxy, a fault-injecting proxy in
// front of it. s3rver lacks ListParts and AbortMultipartUpload; the proxy answers those two from
// s3rver's own upload folder (uploads/<id>/<part> and <part>.md5), in pages of five parts so
// that the client's paging runs too. Everything else is s3rver's.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/local_http_server.h"
#include "tests/test_support.h"

namespace solver::test {

// s3rver's fixed account.
inline constexpr const char* kS3rverAccessKey = "S3RVER";
inline constexpr const char* kS3rverSecretKey = "S3RVER";

class S3rver {
 public:
  // Starts s3rver with `bucket` created. Throws std::runtime_error saying to run
  // scripts/install-test-servers.sh when it is not installed, or with its log when it fails.
  explicit S3rver(const std::string& bucket);
  S3rver(const S3rver&) = delete;
  S3rver& operator=(const S3rver&) = delete;

  int port() const { return port_; }
  const std::string& bucket() const { return bucket_; }
  std::string endpoint() const;        // http://127.0.0.1:<port>
  std::string vhost_endpoint() const;  // http://s3.localhost:<port>: <bucket>.s3.localhost names the bucket
  const std::filesystem::path& data_dir() const { return data_dir_; }

  // Runs Debian's AWS CLI (/usr/bin/aws) against this server with s3rver's keys from the environment.
  CommandResult aws(const std::vector<std::string>& arguments) const;

 private:
  ScratchDir scratch_;
  std::filesystem::path data_dir_;
  std::string bucket_;
  std::optional<BackgroundProcess> server_;  // declared after scratch_: killed before its data is removed
  int port_ = 0;
};

// What the proxy does with one request.
struct Fault {
  enum class Kind {
    Forward,         // pass it to s3rver
    Status,          // answer `status` with an S3 error document of `code`, without forwarding
    Cut,             // drop the connection mid-reply, without forwarding
    ForwardThenCut,  // pass it to s3rver, then drop the connection mid-reply (the reply is lost)
    Stall,           // answer nothing for `delay`, then 503
  };
  Kind kind = Kind::Forward;
  int status = 503;
  std::string code = "ServiceUnavailable";
  std::chrono::milliseconds delay{0};
};

// Decides each request's fate from its method and target (path and query as sent). Called under
// the proxy's lock, in arrival order, so a rule may keep counters.
using FaultRule = std::function<Fault(const std::string& method, const std::string& target)>;

class S3Proxy {
 public:
  explicit S3Proxy(const S3rver& upstream);
  ~S3Proxy();
  S3Proxy(const S3Proxy&) = delete;
  S3Proxy& operator=(const S3Proxy&) = delete;

  std::string endpoint() const;  // http://127.0.0.1:<port>
  void set_rule(FaultRule rule);
  std::vector<std::string> log() const;  // "METHOD target" of every request received, in order
  void clear_log();
  int max_in_flight() const { return max_in_flight_; }

 private:
  void handle(const httplib::Request& request, httplib::Response& response);
  bool answer_upload_call(const httplib::Request& request, httplib::Response& response) const;

  const S3rver& upstream_;
  mutable std::mutex mutex_;
  std::condition_variable stopping_signal_;
  bool stopping_ = false;
  FaultRule rule_;
  std::vector<std::string> log_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  LocalHttpServer server_;  // declared last: stopped before the state its handlers use goes
};

}  // namespace solver::test
