// AWS Signature Version 4, following AWS's specification and botocore's S3 signer where the
// specification leaves room (the path is not normalised, repeated query keys sort by value,
// header values have their runs of whitespace squeezed to one space).
#include "net/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <utility>
#include <vector>

#include "common/error.h"

namespace solver::net::sigv4 {
namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

struct UrlParts {
  std::string scheme;
  std::string host_header;  // lowercase host, ":port" unless the scheme's default
  std::string path;         // as written, "/" when empty
  std::string query;        // without the '?'
};

std::string lowercase(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c); });
  return lower;
}

UrlParts split_url(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos)
    throw Error(ErrorKind::Internal, "sigv4: URL '" + std::string(url) + "' has no scheme://");
  UrlParts parts;
  parts.scheme = lowercase(url.substr(0, scheme_end));
  std::string_view rest = url.substr(scheme_end + 3);
  if (const std::size_t fragment = rest.find('#'); fragment != std::string_view::npos) rest = rest.substr(0, fragment);
  const std::size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) authority = authority.substr(at + 1);

  std::string_view host = authority;
  std::string_view port;
  const std::size_t colon = authority.rfind(':');
  const std::size_t bracket = authority.rfind(']');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  const bool default_port = port.empty() || (parts.scheme == "http" && port == "80") || (parts.scheme == "https" && port == "443");
  parts.host_header = lowercase(host) + (default_port ? "" : ":" + std::string(port));

  const std::size_t question = rest.find('?');
  parts.path = std::string(rest.substr(0, question));
  if (parts.path.empty()) parts.path = "/";
  if (question != std::string_view::npos) parts.query = std::string(rest.substr(question + 1));
  return parts;
}

// The URL's query pairs (already encoded), sorted by key and then value; "a" counts as "a=".
std::string canonical_query(std::string_view query) {
  if (query.empty()) return "";
  std::vector<std::pair<std::string, std::string>> pairs;
  for (std::size_t start = 0; start <= query.size();) {
    const std::size_t end = std::min(query.find('&', start), query.size());
    const std::string_view pair = query.substr(start, end - start);
    const std::size_t equals = pair.find('=');
    if (equals == std::string_view::npos)
      pairs.emplace_back(std::string(pair), "");
    else
      pairs.emplace_back(std::string(pair.substr(0, equals)), std::string(pair.substr(equals + 1)));
    start = end + 1;
  }
  std::sort(pairs.begin(), pairs.end());
  std::string canonical;
  for (const auto& [key, value] : pairs) {
    if (!canonical.empty()) canonical += '&';
    canonical += key + "=" + value;
  }
  return canonical;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Trimmed, with every run of whitespace inside turned into one space.
std::string squeeze_whitespace(std::string_view value) {
  std::string squeezed;
  bool pending_space = false;
  for (const char c : value) {
    if (is_space(c)) {
      pending_space = !squeezed.empty();
      continue;
    }
    if (pending_space) squeezed += ' ';
    pending_space = false;
    squeezed += c;
  }
  return squeezed;
}

Digest hmac_sha256(std::span<const std::uint8_t> key, std::string_view message) {
  Digest digest{};
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), digest.data(), &length) == nullptr ||
      length != digest.size())
    throw Error(ErrorKind::Internal, "sigv4: OpenSSL HMAC-SHA256 failed");
  return digest;
}

std::string format_utc(std::chrono::system_clock::time_point time, const char* format) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  const std::size_t length = std::strftime(text, sizeof text, format, &utc);
  return std::string(text, length);
}

std::string scope_text(std::string_view day, const Scope& scope) {
  return std::string(day) + "/" + scope.region + "/" + scope.service + "/aws4_request";
}

}  // namespace

std::string Credentials::redacted_key_id() const { return access_key_id.substr(0, 4) + "..."; }

std::string amz_date(std::chrono::system_clock::time_point time) { return format_utc(time, "%Y%m%dT%H%M%SZ"); }
std::string amz_day(std::chrono::system_clock::time_point time) { return format_utc(time, "%Y%m%d"); }

CanonicalRequest canonical_request(const Request& request, const Headers& signed_headers) {
  const UrlParts url = split_url(request.url);
  // Same-named headers are signed as one, their values joined by commas in the order sent.
  std::map<std::string, std::string> headers;
  for (const auto& [name, value] : signed_headers) {
    std::string& joined = headers[lowercase(squeeze_whitespace(name))];
    if (!joined.empty()) joined += ',';
    joined += squeeze_whitespace(value);
  }
  CanonicalRequest canonical;
  std::string header_lines;
  for (const auto& [name, value] : headers) {
    header_lines += name + ":" + value + "\n";
    if (!canonical.signed_header_names.empty()) canonical.signed_header_names += ';';
    canonical.signed_header_names += name;
  }
  canonical.text = request.method + "\n" + url.path + "\n" + canonical_query(url.query) + "\n" + header_lines + "\n" +
                   canonical.signed_header_names + "\n" + request.payload_sha256;
  return canonical;
}

std::string string_to_sign(std::string_view canonical_request_text, std::chrono::system_clock::time_point time,
                           const Scope& scope) {
  return std::string(kAlgorithm) + "\n" + amz_date(time) + "\n" + scope_text(amz_day(time), scope) + "\n" +
         sha256_hex(canonical_request_text);
}

Digest signing_key(std::string_view secret_access_key, std::string_view day, const Scope& scope) {
  const std::string initial = "AWS4" + std::string(secret_access_key);
  const Digest day_key =
      hmac_sha256(std::span(reinterpret_cast<const std::uint8_t*>(initial.data()), initial.size()), day);
  const Digest region_key = hmac_sha256(day_key, scope.region);
  const Digest service_key = hmac_sha256(region_key, scope.service);
  return hmac_sha256(service_key, "aws4_request");
}

Headers sign(const Request& request, const Credentials& credentials, const Scope& scope,
             std::chrono::system_clock::time_point time) {
  Headers added = {{"x-amz-date", amz_date(time)}, {"x-amz-content-sha256", request.payload_sha256}};
  if (!credentials.session_token.empty()) added.emplace_back("x-amz-security-token", credentials.session_token);

  Headers signed_headers = request.headers;
  signed_headers.emplace_back("host", split_url(request.url).host_header);
  signed_headers.insert(signed_headers.end(), added.begin(), added.end());
  const CanonicalRequest canonical = canonical_request(request, signed_headers);

  const Digest key = signing_key(credentials.secret_access_key, amz_day(time), scope);
  const Digest signature = hmac_sha256(key, string_to_sign(canonical.text, time, scope));
  added.emplace_back("authorization", std::string(kAlgorithm) + " Credential=" + credentials.access_key_id + "/" +
                                          scope_text(amz_day(time), scope) +
                                          ", SignedHeaders=" + canonical.signed_header_names +
                                          ", Signature=" + to_hex(signature));
  return added;
}

}  // namespace solver::net::sigv4
