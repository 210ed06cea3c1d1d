// net/sigv4.h against AWS's published example and against botocore's own S3 signer
// (tests/python/sigv4_reference.py, Debian's python3-botocore) over generated requests: odd
// keys, repeated and empty query values, unicode, empty bodies, UNSIGNED-PAYLOAD, session
// tokens, virtual-host and path-style URLs built by net/s3.h's URL builder.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>
#include <set>

#include "common/sha256.h"
#include "net/s3.h"
#include "net/sigv4.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

using nlohmann::json;

std::chrono::system_clock::time_point utc(std::int64_t seconds_since_epoch) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(seconds_since_epoch));
}

std::string header_value(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers)
    if (key == name) return value;
  return "";
}

TEST_CASE("sigv4: the signing key and a GetObject signature match AWS's published examples", "[net][s3]") {
  // AWS's "deriving the signing key" example (IAM, 2012-02-15).
  CHECK(to_hex(sigv4::signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", {"us-east-1", "iam"})) ==
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");

  // The GetObject example of AWS's S3 SigV4 header-authentication documentation.
  const sigv4::Request request{"GET", "https://examplebucket.s3.amazonaws.com/test.txt", {{"Range", "bytes=0-9"}}};
  const sigv4::Credentials credentials{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  const auto time = utc(1369353600);  // 2013-05-24T00:00:00Z
  const Headers signed_headers = {{"Range", "bytes=0-9"},
                                  {"host", "examplebucket.s3.amazonaws.com"},
                                  {"x-amz-date", "20130524T000000Z"},
                                  {"x-amz-content-sha256", std::string(sigv4::kEmptyPayloadSha256)}};
  const sigv4::CanonicalRequest canonical = sigv4::canonical_request(request, signed_headers);
  CHECK(canonical.text ==
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sigv4::string_to_sign(canonical.text, time, {"us-east-1"}) ==
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  const Headers added = sigv4::sign(request, credentials, {"us-east-1"}, time);
  CHECK(header_value(added, "authorization") ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(header_value(added, "x-amz-security-token").empty());
}

// One generated request: the JSON botocore's script reads, and the client that builds its URL.
struct GeneratedRequest {
  json reference;
  S3Config config;
  std::string key;
  QueryParams query;
  sigv4::Request request;  // url filled in from the client
  std::chrono::system_clock::time_point time;
};

class RequestGenerator {
 public:
  explicit RequestGenerator(std::uint32_t seed) : random_(seed) {}

  GeneratedRequest next() {
    GeneratedRequest generated;
    S3Config& config = generated.config;
    config.endpoint = pick({"http://127.0.0.1:9000", "https://s3.eu-west-3.amazonaws.com", "http://localhost",
                            "https://minio.example.org:443", "http://S3.Example.COM:8080", "https://storage.example:9443"});
    config.region = pick({"us-east-1", "eu-west-3", "ap-southeast-2", "garage"});
    config.bucket = pick({"bundles", "my-bucket-01", "solver.test", "a1b"});
    config.addressing = chance(0.5) ? S3Addressing::VirtualHost : S3Addressing::Path;
    config.credentials = {pick({"AKIAIOSFODNN7EXAMPLE", "S3RVER", "ASIAXAMPLE+KEY=ID"}),
                          pick({"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "S3RVER", "s3cr3t+with/slash=="}),
                          chance(0.3) ? pick({"FwoGZXIvYXdzEBYaD+token/with=chars", "short-token"}) : ""};

    const int segments = static_cast<int>(random_() % 5);  // 0: the bucket itself
    for (int i = 0; i < segments; ++i) {
      if (i > 0) generated.key += '/';
      generated.key += pick({"ckpt", "step_000100.safetensors", "with space", "plus+sign", "equals=sign",
                                              "tilde~x", "données", "日本語", "percent%20literal", "star*", "paren(1)",
                                              "semi;colon", "comma,", "at@", "dollar$", "amp&x", "quote'", "hash#",
                                              "question?", "colon:", "bang!", "emoji😀", "UPPER", "a..b"});
    }
    const int pairs = static_cast<int>(random_() % 5);
    for (int i = 0; i < pairs; ++i)
      generated.query.emplace_back(
          pick({"uploads", "uploadId", "partNumber", "list-type", "prefix", "continuation-token", "max-keys", "x-id"}),
          pick({"", "1", "2", "10000", "abc/def", "a b", "a+b", "a=b", "~tilde", "ünï", "&amp", "2c49843ae72f28f8"}));

    Headers headers;
    if (chance(0.5)) headers.emplace_back(pick({"Content-Type", "content-type"}), pick({"application/octet-stream", "text/plain; charset=utf-8"}));
    if (chance(0.5)) headers.emplace_back("x-amz-meta-sha256", sha256_hex(std::to_string(random_())));
    if (chance(0.3)) headers.emplace_back("X-Amz-Meta-Note", "  two   spaces\tand a tab  ");
    if (chance(0.2)) headers.emplace_back("x-amz-meta-unicode", "héllo wörld");
    if (chance(0.2)) headers.emplace_back("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==");
    if (chance(0.2)) headers.emplace_back("Range", "bytes=0-9");

    std::string body;
    const double body_kind = uniform();
    if (body_kind > 0.7) {
      body = "unicode body: ünïcödé ✓ " + std::to_string(random_());
    } else if (body_kind > 0.4) {
      body.resize(1 + random_() % 300);
      for (char& byte : body) byte = static_cast<char>(random_() & 0xFF);
    }
    const bool unsigned_payload = chance(0.25);

    generated.time = std::chrono::system_clock::time_point(std::chrono::seconds(946684800 + random_() % 1'100'000'000));
    generated.request.method = pick({"GET", "PUT", "POST", "HEAD", "DELETE"});
    generated.request.headers = headers;
    generated.request.payload_sha256 = unsigned_payload ? std::string(sigv4::kUnsignedPayload) : sha256_hex(body);

    json query = json::array();
    for (const auto& [name, value] : generated.query) query.push_back({name, value});
    json header_list = json::array();
    for (const auto& [name, value] : headers) header_list.push_back({name, value});
    generated.reference = {{"method", generated.request.method},
                           {"endpoint", config.endpoint},
                           {"addressing", config.addressing == S3Addressing::VirtualHost ? "virtual" : "path"},
                           {"bucket", config.bucket},
                           {"key", generated.key},
                           {"query", query},
                           {"headers", header_list},
                           {"body_hex", to_hex(std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()))},
                           {"unsigned_payload", unsigned_payload},
                           {"region", config.region},
                           {"access_key", config.credentials.access_key_id},
                           {"secret_key", config.credentials.secret_access_key},
                           {"session_token", config.credentials.session_token},
                           {"timestamp", sigv4::amz_date(generated.time)}};
    return generated;
  }

 private:
  std::string pick(std::initializer_list<const char*> choices) {
    return *(choices.begin() + random_() % choices.size());
  }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }
  bool chance(double probability) { return uniform() < probability; }

  std::mt19937 random_;
};

TEST_CASE("sigv4: 240 generated S3 requests sign exactly as botocore signs them", "[net][s3]") {
  constexpr int kRequests = 240;
  RequestGenerator generator(20240611);
  std::vector<GeneratedRequest> requests;
  json reference_input = json::array();
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(generator.next());
    reference_input.push_back(requests.back().reference);
  }
  test::ScratchDir scratch("sigv4");
  test::write_text(scratch / "requests.json", reference_input.dump());
  const test::CommandResult result = test::run_command(
      {test::system_python(), (test::source_dir() / "tests/python/sigv4_reference.py").string(), (scratch / "requests.json").string()});
  INFO(result.output.substr(0, 2000));
  REQUIRE(result.exit_code == 0);
  const json signed_by_botocore = json::parse(result.output);
  REQUIRE(signed_by_botocore.size() == kRequests);

  int virtual_host = 0, unsigned_payload = 0, with_token = 0, repeated_query = 0, unicode_key = 0, empty_body = 0;
  for (int i = 0; i < kRequests; ++i) {
    GeneratedRequest& generated = requests[i];
    const json& expected = signed_by_botocore[i];
    INFO("request " << i << ": " << generated.reference.dump());
    generated.request.url = S3Client(generated.config).url(generated.key, generated.query);
    CHECK(generated.request.url == expected["url"].get<std::string>());
    const Headers added = sigv4::sign(generated.request, generated.config.credentials, {generated.config.region}, generated.time);
    CHECK(header_value(added, "authorization") == expected["authorization"].get<std::string>());
    CHECK(header_value(added, "x-amz-date") == expected["x-amz-date"].get<std::string>());
    CHECK(header_value(added, "x-amz-content-sha256") == expected["x-amz-content-sha256"].get<std::string>());
    CHECK(header_value(added, "x-amz-security-token") == expected["x-amz-security-token"].get<std::string>());

    virtual_host += generated.config.addressing == S3Addressing::VirtualHost;
    unsigned_payload += generated.request.payload_sha256 == sigv4::kUnsignedPayload;
    with_token += !generated.config.credentials.session_token.empty();
    unicode_key += std::any_of(generated.key.begin(), generated.key.end(), [](char c) { return c & 0x80; });
    empty_body += generated.reference["body_hex"].get<std::string>().empty();
    std::set<std::string> names;
    for (const auto& [name, value] : generated.query) repeated_query += !names.insert(name).second;
  }
  // The generator covers every case the comparison is meant to cover.
  CHECK(virtual_host > 50);
  CHECK(unsigned_payload > 20);
  CHECK(with_token > 20);
  CHECK(repeated_query > 10);
  CHECK(unicode_key > 20);
  CHECK(empty_body > 20);
}

}  // namespace
}  // namespace solver::net
