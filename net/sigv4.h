// AWS Signature Version 4 for S3 requests (header authorization), as pure functions: the time
// is a parameter, so a request signs the same way every time and can be compared with another
// signer (tests/net/test_sigv4.cpp checks it against botocore's).
//
// S3's flavour: the path is signed as it is sent (already percent-encoded, never normalised),
// the query string is signed from the URL's own pairs, sorted, and the payload hash is always
// sent as x-amz-content-sha256 (a body's SHA-256, or UNSIGNED-PAYLOAD over TLS).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "net/http.h"

namespace solver::net::sigv4 {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty for long-term keys

  bool empty() const { return access_key_id.empty() || secret_access_key.empty(); }
  // What may appear in logs and errors: the first four characters of the key id, never more.
  std::string redacted_key_id() const;
};

inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
inline constexpr std::string_view kEmptyPayloadSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct Request {
  std::string method;  // GET, PUT, POST, HEAD, DELETE
  // As sent: scheme://host[:port]/path[?query], with the path and the query already
  // percent-encoded (see net/s3.h's URL builder). The host header is derived from it.
  std::string url;
  // Headers the request carries besides host and the x-amz-* ones sign() adds; all are signed.
  Headers headers;
  std::string payload_sha256 = std::string(kEmptyPayloadSha256);  // hex, or kUnsignedPayload
};

struct Scope {
  std::string region;
  std::string service = "s3";
};

// "20240102T030405Z" and "20240102" for a UTC time.
std::string amz_date(std::chrono::system_clock::time_point time);
std::string amz_day(std::chrono::system_clock::time_point time);

// The canonical request over `signed_headers` (every header that is signed, host and x-amz-*
// included), and the sorted, ';'-joined lowercase names of those headers.
struct CanonicalRequest {
  std::string text;
  std::string signed_header_names;
};
CanonicalRequest canonical_request(const Request& request, const Headers& signed_headers);

std::string string_to_sign(std::string_view canonical_request_text, std::chrono::system_clock::time_point time,
                           const Scope& scope);

// HMAC chain "AWS4"+secret -> day -> region -> service -> "aws4_request".
Digest signing_key(std::string_view secret_access_key, std::string_view day, const Scope& scope);

// The headers to add to `request` before sending it: x-amz-date, x-amz-content-sha256,
// x-amz-security-token (with a session token) and authorization.
Headers sign(const Request& request, const Credentials& credentials, const Scope& scope,
             std::chrono::system_clock::time_point time);

}  // namespace solver::net::sigv4
