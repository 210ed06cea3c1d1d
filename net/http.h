// One HTTP client for everything solver says to the outside world (the market, IPFS, S3,
// https:// data), over libcurl. It streams request and response bodies from and to files so a
// multi-gigabyte bundle never sits in memory, and every request has a connect timeout, a total
// timeout and a stall timeout, so a hung server costs bounded time.
//
// Errors: a transport failure (refused, reset, timed out, TLS) throws Error(Network) naming the
// method and URL. An HTTP error status is not thrown: the caller knows which statuses are worth
// retrying (see is_transient_status and net/retry.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace solver::net {

struct UrlPolicy;

using Headers = std::vector<std::pair<std::string, std::string>>;

// A slice of a file sent as a request body (or one part of a multipart body) without loading it.
struct FileSlice {
  std::filesystem::path path;
  std::uint64_t offset = 0;
  std::optional<std::uint64_t> length;  // nullopt: to the end of the file
};

// One part of a multipart/form-data body (the Kubo RPC `add` call takes a directory this way).
struct FormPart {
  std::string name = "file";
  std::string filename;      // sent as-is (URL-encode it yourself if the server wants that)
  std::string content_type;  // e.g. "application/octet-stream", "application/x-directory"
  std::optional<FileSlice> file;  // the part's content, streamed; empty for a directory entry
  std::string data;               // the content when `file` is empty
  Headers headers;                // extra part headers (e.g. Abspath)
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  Headers headers;
  // The body: at most one of these is used, in this order of preference.
  std::optional<FileSlice> body_file;
  std::vector<FormPart> form;  // non-empty: multipart/form-data
  std::string body;
  // Where the response body goes: a file (written as it arrives) or HttpResponse::body.
  std::optional<std::filesystem::path> response_file;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds timeout{120'000};       // the whole exchange; 0 = none
  std::chrono::milliseconds stall_timeout{30'000};  // abort when under 1 byte/s for this long
  bool verify_tls = true;
  // For a URL a stranger chose (net/url_policy.h): redirects are followed (at most 5, to the
  // schemes the policy allows), each connection's address is checked against the policy just
  // before it is made (Error(Input) when refused), proxies from the environment are not used,
  // and an error reply's body is not kept (it may hold what an internal server says). Without
  // a policy, redirects are not followed.
  const UrlPolicy* policy = nullptr;
  // The most body bytes accepted, in memory or in a file; a server that sends more is cut off
  // there: Error(Network) for a reply kept in memory, Error(Input) for a file, whose expected
  // size the caller knows. Downloads of large files set their own.
  std::uint64_t max_response_bytes = 64ull << 20;
};

inline constexpr std::size_t kErrorBodyExcerpt = 4096;

struct HttpResponse {
  long status = 0;
  Headers headers;   // names lowercased
  // With HttpRequest::response_file: empty on success, and on any other status the first
  // kErrorBodyExcerpt bytes the server sent (its explanation, for error messages), not written to
  // the file; none with a policy (what an internal server says must not travel on).
  std::string body;
  std::optional<std::string> header(std::string_view lowercase_name) const;
};

// Performs one request. Throws Error(Network, retryable) on transport failure, Error(Io) when a
// body file cannot be read or the response file cannot be written.
HttpResponse perform(const HttpRequest& request);

// 408, 425, 429, 500, 502, 503 and 504: worth another try later.
bool is_transient_status(long status);
// 2xx.
bool is_success(long status);

// Throws Error(Network) for a non-2xx status: retryable when transient, otherwise not.
// `what` names the operation ("S3 PutObject s3://bucket/key"); the message quotes the start of the
// body, since servers explain themselves there.
void throw_unless_success(const HttpResponse& response, std::string_view what);

// Percent-encodes everything outside RFC 3986's unreserved set; '/' is kept when keep_slash.
std::string url_encode(std::string_view text, bool keep_slash = false);

}  // namespace solver::net
