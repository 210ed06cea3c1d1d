// net/s3.h and net/s3_store.h against a real S3 server, s3rver, on 127.0.0.1 (started per
// test, tests/net/s3_server.h), with what we upload read back by Debian's AWS CLI and compared
// byte for byte; faults come from a proxy in front of s3rver (error statuses, cut connections,
// stalls), wrong credentials from s3rver itself. Credentials resolution and part sizes are
// checked without a server.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <regex>
#include <set>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "net/s3_store.h"
#include "tests/net/s3_server.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

using nlohmann::json;
using test::Fault;

constexpr const char* kBucket = "bundles";

std::string random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& byte : bytes) byte = static_cast<char>(random() & 0xFF);
  return bytes;
}

// A client config for s3rver's account with fast retries and, unless a test says otherwise,
// s3rver-sized parts: 256 KiB, below S3's 5 MiB minimum.
S3Config config_for(const std::string& endpoint) {
  S3Config config;
  config.endpoint = endpoint;
  config.region = "us-east-1";
  config.bucket = kBucket;
  config.prefix = "runs";
  config.credentials = {test::kS3rverAccessKey, test::kS3rverSecretKey, ""};
  config.part_size = 256 << 10;
  config.limits.min_part_size = 64 << 10;
  config.retry.max_attempts = 4;
  config.retry.initial_delay = std::chrono::milliseconds(10);
  config.retry.max_delay = std::chrono::milliseconds(40);
  return config;
}

// The object as the AWS CLI downloads it, and the metadata it reports.
struct CliObject {
  std::string bytes;
  std::map<std::string, std::string> metadata;
};

CliObject read_with_cli(const test::S3rver& server, const std::string& key, const test::ScratchDir& scratch) {
  const std::filesystem::path out = scratch / "cli-download";
  const test::CommandResult result = server.aws({"s3api", "get-object", "--bucket", kBucket, "--key", key, out.string()});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CliObject object{read_file(out), {}};
  const json reply = json::parse(result.output);
  if (reply.contains("Metadata"))
    for (const auto& [name, value] : reply["Metadata"].items()) object.metadata[name] = value.get<std::string>();
  std::filesystem::remove(out);
  return object;
}

std::size_t count_matching(const std::vector<std::string>& log, const std::string& pattern) {
  const std::regex wanted(pattern);
  return static_cast<std::size_t>(
      std::count_if(log.begin(), log.end(), [&](const std::string& line) { return std::regex_search(line, wanted); }));
}

std::string part_number_of(const std::string& target) {
  std::smatch match;
  return std::regex_search(target, match, std::regex(R"(partNumber=(\d+))")) ? match[1].str() : "";
}

bool has_upload_records(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().starts_with(".s3-upload-")) return true;
  return false;
}

// A small finished bundle as docs/bundle-format.md lays it out: a checkpoint big enough to go
// up in parts, a segment, manifest.json listing both with their hashes, manifest.sig; and its
// listing, as its writer would hand it over.
BundleListing write_bundle(const std::filesystem::path& dir, std::uint32_t seed) {
  const std::string checkpoint = random_bytes(700'000, seed);
  const std::string segment = R"({"schema":"solver.pol-segment/1","first_step":1,"last_step":2,"steps":[]})";
  test::write_text(dir / "ckpt/step_0.safetensors", checkpoint);
  test::write_text(dir / "segments/steps_1-2.json", segment);
  const json manifest = {
      {"schema", "solver.pol-bundle/1"},
      {"seed", seed},
      {"checkpoints", {{{"step", 0}, {"file", {{"path", "ckpt/step_0.safetensors"}, {"size", checkpoint.size()}, {"sha256", sha256_hex(checkpoint)}}}}}},
      {"segments", {{{"first_step", 1}, {"last_step", 2}, {"file", {{"path", "segments/steps_1-2.json"}, {"size", segment.size()}, {"sha256", sha256_hex(segment)}}}}}}};
  test::write_text(dir / "manifest.json", manifest.dump());
  test::write_text(dir / "manifest.sig", std::string(128, 'a') + "\n");
  return BundleListing{.dir = dir,
                       .files = {{"ckpt/step_0.safetensors", checkpoint.size(), sha256_hex(checkpoint)},
                                 {"segments/steps_1-2.json", segment.size(), sha256_hex(segment)}},
                       .manifest = {"manifest.json", manifest.dump().size(), sha256_hex(manifest.dump())},
                       .signature_hex = std::string(128, 'a')};
}

// One test's world: s3rver, the proxy in front of it, a scratch folder and a file of random
// bytes to upload.
struct S3Setup {
  test::S3rver server{kBucket};
  test::S3Proxy proxy{server};
  test::ScratchDir scratch;
  std::filesystem::path file;
  std::string bytes;
  std::string sha256;

  S3Setup(const std::string& label, std::size_t file_size)
      : scratch("s3-" + label), file(scratch / "upload.bin"), bytes(random_bytes(file_size, static_cast<std::uint32_t>(file_size))),
        sha256(sha256_hex(bytes)) {
    test::write_text(file, bytes);
  }
  std::string read_back(const std::string& key) const { return read_with_cli(server, key, scratch).bytes; }
};

TEST_CASE("s3: addresses parse and format", "[net][s3]") {
  const S3Address address = parse_s3_address("s3://bundles/runs/run-1/");
  CHECK(address.bucket == "bundles");
  CHECK(address.key == "runs/run-1");
  CHECK(format_s3_address(address) == "s3://bundles/runs/run-1");
  CHECK(parse_s3_address("s3://bundles").key.empty());
  CHECK(format_s3_address({"b", ""}) == "s3://b");
  CHECK(test::error_kind_of([] { parse_s3_address("https://bundles/x"); }) == ErrorKind::Input);
  CHECK(test::error_kind_of([] { parse_s3_address("s3:///key"); }) == ErrorKind::Input);
}

TEST_CASE("s3: credentials come from the config, then the environment, then the profile files", "[net][s3]") {
  test::ScratchDir scratch("s3-credentials");
  test::write_text(scratch / "credentials",
                   "# shared credentials\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = secret-default\n\n"
                   "[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key=secret-ci\naws_session_token = token-ci\n");
  test::write_text(scratch / "config",
                   "[default]\nregion = eu-west-3\n[profile ci]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:9\n"
                   "s3 =\n  addressing_style = path\n[profile only-config]\naws_access_key_id = AKIDCONFIG\n"
                   "aws_secret_access_key = secret-config\n");
  std::map<std::string, std::string> environment = {{"AWS_SHARED_CREDENTIALS_FILE", (scratch / "credentials").string()},
                                                    {"AWS_CONFIG_FILE", (scratch / "config").string()}};
  const EnvironmentLookup lookup = [&](const std::string& name) -> std::optional<std::string> {
    const auto found = environment.find(name);
    return found == environment.end() ? std::nullopt : std::optional(found->second);
  };
  S3Config base;
  base.bucket = kBucket;

  SECTION("the default profile, with the region from the config file") {
    const S3Config resolved = resolve_s3_config(base, lookup);
    CHECK(resolved.credentials.access_key_id == "AKIDDEFAULT");
    CHECK(resolved.credentials.secret_access_key == "secret-default");
    CHECK(resolved.credentials.session_token.empty());
    CHECK(resolved.region == "eu-west-3");
    CHECK(resolved.endpoint.empty());
  }
  SECTION("AWS_PROFILE picks a profile: its keys, token, region and endpoint") {
    environment["AWS_PROFILE"] = "ci";
    const S3Config resolved = resolve_s3_config(base, lookup);
    CHECK(resolved.credentials.access_key_id == "AKIDCI");
    CHECK(resolved.credentials.session_token == "token-ci");
    CHECK(resolved.region == "ap-south-1");
    CHECK(resolved.endpoint == "http://127.0.0.1:9");
  }
  SECTION("keys found only in the config file's profile") {
    base.profile = "only-config";
    CHECK(resolve_s3_config(base, lookup).credentials.access_key_id == "AKIDCONFIG");
  }
  SECTION("the environment wins over the files, AWS_REGION over AWS_DEFAULT_REGION") {
    environment.insert({{"AWS_ACCESS_KEY_ID", "AKIDENV"}, {"AWS_SECRET_ACCESS_KEY", "secret-env"}, {"AWS_SESSION_TOKEN", "token-env"},
                        {"AWS_REGION", "us-west-2"}, {"AWS_DEFAULT_REGION", "eu-central-1"}, {"AWS_ENDPOINT_URL", "http://127.0.0.1:7"},
                        {"AWS_PROFILE", "ci"}});
    const S3Config resolved = resolve_s3_config(base, lookup);
    CHECK(resolved.credentials.access_key_id == "AKIDENV");
    CHECK(resolved.credentials.session_token == "token-env");
    CHECK(resolved.region == "us-west-2");
    CHECK(resolved.endpoint == "http://127.0.0.1:7");
  }
  SECTION("the config's own values win over everything") {
    environment.insert({{"AWS_ACCESS_KEY_ID", "AKIDENV"}, {"AWS_SECRET_ACCESS_KEY", "secret-env"}});
    base.credentials = {"AKIDGIVEN", "secret-given", ""};
    base.region = "sa-east-1";
    base.endpoint = "http://127.0.0.1:8";
    const S3Config resolved = resolve_s3_config(base, lookup);
    CHECK(resolved.credentials.access_key_id == "AKIDGIVEN");
    CHECK(resolved.region == "sa-east-1");
    CHECK(resolved.endpoint == "http://127.0.0.1:8");
  }
  SECTION("~/.aws/credentials through HOME, and us-east-1 when no region is set anywhere") {
    environment = {{"HOME", (scratch / "home").string()}};
    test::write_text(scratch / "home/.aws/credentials", "[default]\naws_access_key_id = AKIDHOME\naws_secret_access_key = s\n");
    const S3Config resolved = resolve_s3_config(base, lookup);
    CHECK(resolved.credentials.access_key_id == "AKIDHOME");
    CHECK(resolved.region == "us-east-1");
  }
  SECTION("no credentials anywhere is a configuration error naming the profile") {
    environment["AWS_PROFILE"] = "missing";
    const std::optional<Error> error = test::error_of([&] { resolve_s3_config(base, lookup); });
    REQUIRE(error);
    CHECK(error->kind() == ErrorKind::Config);
    CHECK_THAT(error->what(), Catch::Contains("\"missing\"") && Catch::Contains(kBucket));
  }
  SECTION("a malformed profile file is a configuration error, unless nothing needs it") {
    test::write_text(scratch / "credentials", "[default]\nthis line has no equals sign\n");
    CHECK(test::error_kind_of([&] { resolve_s3_config(base, lookup); }) == ErrorKind::Config);
    environment.insert({{"AWS_ACCESS_KEY_ID", "AKIDENV"}, {"AWS_SECRET_ACCESS_KEY", "secret-env"}});
    CHECK(resolve_s3_config(base, lookup).credentials.access_key_id == "AKIDENV");
  }
}

TEST_CASE("s3: part sizes stay within S3's limits", "[net][s3]") {
  S3Config config;
  constexpr std::uint64_t MiB = 1 << 20;
  CHECK(s3_part_size(100 * MiB, config) == 64 * MiB);
  config.part_size = 1 * MiB;
  CHECK(s3_part_size(100 * MiB, config) == 5 * MiB);  // S3's minimum part
  config.part_size = 10'000 * MiB;
  CHECK(s3_part_size(100'000 * MiB, config) == 5 * 1024 * MiB);  // S3's maximum part
  config.part_size = 64 * MiB;
  const std::uint64_t terabyte = 1ull << 40;
  const std::uint64_t raised = s3_part_size(terabyte, config);  // 10,000 parts of 64 MiB are only 625 GiB
  CHECK(raised * 10'000 >= terabyte);
  CHECK((raised - 1) * 10'000 < terabyte);
  CHECK(test::error_kind_of([&] { s3_part_size(60 * terabyte, config); }) == ErrorKind::Input);
  config.limits.min_part_size = 64 << 10;
  config.part_size = 256 << 10;
  CHECK(s3_part_size(3'000'000, config) == 256 << 10);
}

TEST_CASE("s3: a small file goes up in one PutObject that the AWS CLI reads back byte for byte", "[net][s3]") {
  S3Setup setup("put", 100'000);
  S3Client client(config_for(setup.server.endpoint()));
  const std::string key = "runs/odd keys/with space+plus=eq~ü (1).bin";
  client.upload_file(key, setup.file, setup.sha256, setup.scratch.path());

  const CliObject read_back = read_with_cli(setup.server, key, setup.scratch);
  CHECK(read_back.bytes == setup.bytes);
  CHECK(read_back.metadata.at("sha256") == setup.sha256);

  const std::optional<S3Object> head = client.head_object(key);
  REQUIRE(head);
  CHECK(head->size == setup.bytes.size());
  CHECK(head->sha256 == setup.sha256);
  CHECK_FALSE(client.head_object("runs/absent.bin"));

  const S3Object downloaded = client.get_object_to_file(key, setup.scratch / "downloaded.bin", test::kLargeEnough);
  CHECK(read_file(setup.scratch / "downloaded.bin") == setup.bytes);
  CHECK(downloaded.sha256 == setup.sha256);

  const std::vector<S3Object> listed = client.list_objects("runs/odd keys/");
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].key == key);
  CHECK(listed[0].size == setup.bytes.size());
}

TEST_CASE("s3: virtual-host addressing reaches the bucket through its host name", "[net][s3]") {
  S3Setup setup("vhost", 5'000);
  S3Config config = config_for(setup.server.vhost_endpoint());
  config.addressing = S3Addressing::VirtualHost;
  S3Client client(config);
  CHECK(client.url("runs/file.bin") == "http://bundles.s3.localhost:" + std::to_string(setup.server.port()) + "/runs/file.bin");
  client.put_object("runs/file.bin", setup.file, setup.sha256);
  CHECK(setup.read_back("runs/file.bin") == setup.bytes);
  REQUIRE(client.list_objects("runs/").size() == 1);
}

TEST_CASE("s3: a multipart upload sends its parts in parallel and reads back byte for byte", "[net][s3]") {
  S3Setup setup("multipart", 3'000'000);
  S3Client(config_for(setup.proxy.endpoint())).upload_file("runs/big.bin", setup.file, setup.sha256, setup.scratch.path());

  const std::vector<std::string> log = setup.proxy.log();
  CHECK(count_matching(log, R"(^POST /bundles/runs/big\.bin\?uploads=)") == 1);
  CHECK(count_matching(log, R"(^PUT .*partNumber=)") == 12);  // 11 parts of 256 KiB and the rest
  CHECK(count_matching(log, R"(^POST /bundles/runs/big\.bin\?uploadId=)") == 1);
  CHECK(setup.proxy.max_in_flight() >= 2);
  CHECK(setup.proxy.max_in_flight() <= 4);
  CHECK_FALSE(has_upload_records(setup.scratch.path()));

  const CliObject read_back = read_with_cli(setup.server, "runs/big.bin", setup.scratch);
  CHECK(read_back.bytes == setup.bytes);
  CHECK(read_back.metadata.at("sha256") == setup.sha256);
}

TEST_CASE("s3: a 12 MiB file goes up in 5 MiB parts under S3's own limits", "[net][s3]") {
  S3Setup setup("5mib", 12 << 20);
  S3Config config = config_for(setup.proxy.endpoint());
  config.limits = S3Limits{};
  config.part_size = 5 << 20;
  S3Client(config).upload_file("runs/twelve.bin", setup.file, setup.sha256, setup.scratch.path());
  CHECK(count_matching(setup.proxy.log(), R"(^PUT .*partNumber=)") == 3);
  CHECK(setup.read_back("runs/twelve.bin") == setup.bytes);
}

TEST_CASE("s3: an upload cut short by an outage resumes after a restart from the parts already there", "[net][s3]") {
  S3Setup setup("resume", 3'000'000);
  S3Config config = config_for(setup.proxy.endpoint());
  config.retry.max_attempts = 2;

  // The store goes down for parts 8 and up: the upload fails as retryable and is kept.
  setup.proxy.set_rule([](const std::string& method, const std::string& target) {
    const std::string part = part_number_of(target);
    return method == "PUT" && !part.empty() && std::stoi(part) >= 8 ? Fault{.kind = Fault::Kind::Status} : Fault{};
  });
  const std::optional<Error> outage =
      test::error_of([&] { S3Client(config).upload_file("runs/big.bin", setup.file, setup.sha256, setup.scratch.path()); });
  REQUIRE(outage);
  CHECK(outage->kind() == ErrorKind::Network);
  CHECK(outage->retryable());
  CHECK(count_matching(setup.proxy.log(), "^DELETE") == 0);
  CHECK(count_matching(setup.proxy.log(), R"(\?uploads=)") == 1);
  CHECK(has_upload_records(setup.scratch.path()));

  // A new client, as after an agent restart: ListParts (two pages) finds parts 1 to 7.
  setup.proxy.set_rule({});
  setup.proxy.clear_log();
  S3Client(config).upload_file("runs/big.bin", setup.file, setup.sha256, setup.scratch.path());
  const std::vector<std::string> log = setup.proxy.log();
  CHECK(count_matching(log, R"(\?uploads=)") == 0);
  CHECK(count_matching(log, R"(^GET /bundles/runs/big\.bin\?uploadId=)") == 2);
  std::set<std::string> sent_again;
  for (const std::string& line : log)
    if (!part_number_of(line).empty()) sent_again.insert(part_number_of(line));
  CHECK(sent_again == std::set<std::string>{"8", "9", "10", "11", "12"});
  CHECK_FALSE(has_upload_records(setup.scratch.path()));
  CHECK(setup.read_back("runs/big.bin") == setup.bytes);
}

TEST_CASE("s3: 500 and 503 answers are retried until the upload succeeds", "[net][s3]") {
  S3Setup setup("transient", 50'000);
  int puts = 0;
  setup.proxy.set_rule([&puts](const std::string& method, const std::string&) {
    if (method != "PUT") return Fault{};
    ++puts;
    if (puts == 1) return Fault{.kind = Fault::Kind::Status, .status = 503, .code = "SlowDown"};
    if (puts == 2) return Fault{.kind = Fault::Kind::Status, .status = 500, .code = "InternalError"};
    return Fault{};
  });
  S3Client(config_for(setup.proxy.endpoint())).put_object("runs/file.bin", setup.file, setup.sha256);
  CHECK(count_matching(setup.proxy.log(), "^PUT") == 3);
  CHECK(setup.read_back("runs/file.bin") == setup.bytes);
}

TEST_CASE("s3: a connection cut mid-upload is retried, and a lost completion reply is recognised", "[net][s3]") {
  S3Setup setup("cut", 1'000'000);
  bool part_cut = false;
  bool completion_cut = false;
  setup.proxy.set_rule([&](const std::string& method, const std::string& target) {
    if (method == "PUT" && part_number_of(target) == "2" && !part_cut) {
      part_cut = true;
      return Fault{.kind = Fault::Kind::Cut};
    }
    if (method == "POST" && target.find("uploadId=") != std::string::npos && !completion_cut) {
      completion_cut = true;  // s3rver assembles the object, but the client never hears so
      return Fault{.kind = Fault::Kind::ForwardThenCut};
    }
    return Fault{};
  });
  S3Client(config_for(setup.proxy.endpoint())).upload_file("runs/big.bin", setup.file, setup.sha256, setup.scratch.path());
  CHECK(part_cut);
  CHECK(completion_cut);
  CHECK(count_matching(setup.proxy.log(), R"(^PUT .*partNumber=2&)") == 2);
  CHECK(count_matching(setup.proxy.log(), R"(^POST .*uploadId=)") == 1);  // the retry found the object instead of completing again
  CHECK(setup.read_back("runs/big.bin") == setup.bytes);
}

TEST_CASE("s3: a stalled server costs the timeout, fails as a retryable network error, and nothing is published", "[net][s3]") {
  S3Setup setup("stall", 0);
  const BundleListing bundle = write_bundle(setup.scratch / "bundle", 8);
  setup.proxy.set_rule([](const std::string& method, const std::string&) {
    return method == "PUT" ? Fault{.kind = Fault::Kind::Stall, .delay = std::chrono::seconds(5)} : Fault{};
  });
  S3Config config = config_for(setup.proxy.endpoint());
  config.request_timeout = std::chrono::milliseconds(300);
  config.retry.max_attempts = 2;
  const auto start = std::chrono::steady_clock::now();
  const std::optional<Error> error = test::error_of([&] { S3Store(config).publish(bundle, "run-1"); });
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Network);
  CHECK(error->retryable());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(4));
  setup.proxy.set_rule({});
  CHECK_FALSE(S3Client(config).head_object("runs/run-1/manifest.json"));
}

TEST_CASE("s3: wrong credentials get a clear, non-retryable error naming the object and no secret", "[net][s3]") {
  S3Setup setup("forbidden", 4);
  S3Config config = config_for(setup.proxy.endpoint());
  config.credentials = {"WRONGKEYID1234", "TopSecretValue/XYZ", "SessionTokenValue"};
  const std::optional<Error> error = test::error_of([&] { S3Client(config).put_object("runs/file.bin", setup.file, setup.sha256); });
  REQUIRE(error);
  const std::string message = error->what();
  INFO(message);
  CHECK(error->kind() == ErrorKind::Network);
  CHECK_FALSE(error->retryable());
  CHECK_THAT(message, Catch::Contains("s3://bundles/runs/file.bin") && Catch::Contains("403") &&
                          Catch::Contains("InvalidAccessKeyId") && Catch::Contains("WRON"));
  CHECK(message.find("WRONGKEYID1234") == std::string::npos);
  CHECK(message.find("TopSecretValue") == std::string::npos);
  CHECK(message.find("SessionTokenValue") == std::string::npos);
  CHECK(count_matching(setup.proxy.log(), "^PUT") == 1);
}

TEST_CASE("s3: a part that fails for good aborts the multipart upload, and nothing is reported published", "[net][s3]") {
  S3Setup setup("abort", 2'000'000);
  setup.proxy.set_rule([](const std::string& method, const std::string& target) {
    return method == "PUT" && part_number_of(target) == "3"
               ? Fault{.kind = Fault::Kind::Status, .status = 400, .code = "InvalidArgument"}
               : Fault{};
  });
  S3Client client(config_for(setup.proxy.endpoint()));
  const std::optional<Error> error =
      test::error_of([&] { client.upload_file("runs/big.bin", setup.file, setup.sha256, setup.scratch.path()); });
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Network);
  CHECK_FALSE(error->retryable());
  CHECK_THAT(error->what(), Catch::Contains("UploadPart 3") && Catch::Contains("InvalidArgument"));
  CHECK(count_matching(setup.proxy.log(), R"(^DELETE /bundles/runs/big\.bin\?uploadId=)") == 1);
  CHECK(count_matching(setup.proxy.log(), R"(^POST .*uploadId=)") == 0);
  const std::filesystem::path uploads = setup.server.data_dir() / kBucket / "._S3rver_uploads";
  CHECK((!std::filesystem::exists(uploads) || std::filesystem::is_empty(uploads)));
  CHECK_FALSE(has_upload_records(setup.scratch.path()));
  setup.proxy.set_rule({});
  CHECK_FALSE(client.head_object("runs/big.bin"));
}

TEST_CASE("s3: a bundle is published manifest last, publishing again uploads nothing, fetch checks every file", "[net][s3]") {
  S3Setup setup("store", 700'000);
  test::S3Proxy& proxy = setup.proxy;
  const test::ScratchDir& scratch = setup.scratch;
  const BundleListing bundle = write_bundle(scratch / "bundle", 10);
  S3Store store(config_for(proxy.endpoint()));

  CHECK(store.publish(bundle, "run-1") == "s3://bundles/runs/run-1");
  std::vector<std::string> uploads;
  for (const std::string& line : proxy.log())
    if (line.starts_with("PUT") || line.starts_with("POST")) uploads.push_back(line);
  REQUIRE(uploads.size() >= 4);
  CHECK(uploads[uploads.size() - 2] == "PUT /bundles/runs/run-1/manifest.sig");
  CHECK(uploads.back() == "PUT /bundles/runs/run-1/manifest.json");
  CHECK(count_matching(uploads, R"(step_0\.safetensors\?partNumber=)") == 3);  // 700 kB in 256 KiB parts
  CHECK_FALSE(has_upload_records(scratch / "bundle"));
  const test::CommandResult listing = setup.server.aws({"s3", "ls", "--recursive", "s3://bundles/runs/run-1/"});
  CHECK(count_matching({listing.output}, "manifest.json") == 1);
  CHECK(std::count(listing.output.begin(), listing.output.end(), '\n') == 4);

  proxy.clear_log();
  CHECK(store.publish(bundle, "run-1") == "s3://bundles/runs/run-1");
  CHECK(count_matching(proxy.log(), "^(PUT|POST)") == 0);

  store.fetch("s3://bundles/runs/run-1", scratch / "fetched", test::kLargeEnough);
  for (const char* file : {"manifest.json", "manifest.sig", "ckpt/step_0.safetensors", "segments/steps_1-2.json"})
    CHECK(read_file(scratch / "fetched" / file) == read_file(scratch / "bundle" / file));

  SECTION("fetch refuses an object whose bytes differ from the hash it was uploaded with") {
    const std::string original = bundle.files[0].sha256;
    REQUIRE(setup.server.aws({"s3", "cp", setup.file.string(), "s3://bundles/runs/run-1/ckpt/step_0.safetensors",
                              "--metadata", "sha256=" + original}).exit_code == 0);
    const std::optional<Error> error = test::error_of([&] { store.fetch("s3://bundles/runs/run-1", scratch / "fetched-again", test::kLargeEnough); });
    REQUIRE(error);
    CHECK(error->kind() == ErrorKind::Network);
    CHECK_THAT(error->what(), Catch::Contains("ckpt/step_0.safetensors") && Catch::Contains("hash to " + setup.sha256));
  }
  SECTION("a bundle holding a symlink to a local file is refused, and nothing of it is uploaded") {
    const BundleListing linked = write_bundle(scratch / "linked", 13);
    std::filesystem::create_symlink(setup.file, scratch / "linked" / "notes.txt");
    proxy.clear_log();
    const std::optional<Error> error = test::error_of([&] { store.publish(linked, "run-2"); });
    REQUIRE(error);
    CHECK(error->kind() == ErrorKind::Input);
    CHECK_THAT(error->what(), Catch::Contains("notes.txt: is a symlink"));
    CHECK(count_matching(proxy.log(), "^(PUT|POST)") == 0);
  }
  SECTION("a different bundle under the same name is refused, and nothing of it is uploaded") {
    const BundleListing other = write_bundle(scratch / "other", 12);
    proxy.clear_log();
    CHECK(test::error_kind_of([&] { store.publish(other, "run-1"); }) == ErrorKind::Input);
    CHECK(count_matching(proxy.log(), "^(PUT|POST)") == 0);
  }
  SECTION("a damaged local bundle is refused before anything is uploaded") {
    const BundleListing damaged = write_bundle(scratch / "damaged", 13);
    test::write_text(scratch / "damaged/segments/steps_1-2.json", "tampered");
    proxy.clear_log();
    const std::optional<Error> error = test::error_of([&] { store.publish(damaged, "run-2"); });
    REQUIRE(error);
    CHECK(error->kind() == ErrorKind::Input);
    CHECK_THAT(error->what(), Catch::EndsWith("segments/steps_1-2.json has 8 bytes, the manifest says 73"));
    std::filesystem::remove(scratch / "damaged/segments/steps_1-2.json");
    CHECK_THAT(test::error_of([&] { store.publish(damaged, "run-2"); })->what(),
               Catch::EndsWith("segments/steps_1-2.json, listed in the manifest, is missing"));
    std::filesystem::remove(scratch / "bundle/manifest.sig");  // an unfinished bundle
    CHECK(test::error_kind_of([&] { store.publish(bundle, "run-3"); }) == ErrorKind::Input);
    CHECK(proxy.log().empty());
  }
  SECTION("an address without a whole bundle is refused") {
    CHECK(test::error_kind_of([&] { store.fetch("s3://bundles/runs/nothing-here", scratch / "empty", test::kLargeEnough); }) == ErrorKind::Input);
    CHECK(test::error_kind_of([&] { store.fetch("s3://bundles", scratch / "empty", test::kLargeEnough); }) == ErrorKind::Input);
  }
}

TEST_CASE("s3: the store's probe writes an object, reads it back and leaves nothing in the bucket", "[net][s3]") {
  S3Setup setup("probe", 1);
  S3Store store(config_for(setup.proxy.endpoint()));
  CHECK_THAT(store.probe(setup.scratch.path()), Catch::StartsWith("wrote, read back and removed s3://bundles/runs/.solver-probe-"));
  std::vector<std::string> calls;
  for (const std::string& line : setup.proxy.log()) calls.push_back(line.substr(0, line.find(' ')));
  CHECK(calls == std::vector<std::string>{"PUT", "GET", "DELETE"});
  const test::CommandResult listing = setup.server.aws({"s3", "ls", "--recursive", "s3://bundles/"});
  CHECK(listing.output.find(".solver-probe-") == std::string::npos);

  S3Config wrong = config_for(setup.proxy.endpoint());
  wrong.bucket = "no-such-bucket";
  CHECK_THROWS_AS(S3Store(wrong).probe(setup.scratch.path()), Error);
}

}  // namespace
}  // namespace solver::net
