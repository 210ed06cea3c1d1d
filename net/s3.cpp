// The S3 client. Requests go through net/http.h one at a time per thread and are signed just
// before they leave (the signature carries the time, so a retry is re-signed). Replies are read
// by net/detail/xml_reply.h.
#include "net/s3.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <span>
#include <utility>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/detail/aws_profile.h"
#include "net/detail/parallel.h"
#include "net/detail/xml_reply.h"

namespace solver::net {
namespace {

using detail::for_each_in_parallel;
using nlohmann::json;

constexpr std::string_view kSha256Header = "x-amz-meta-sha256";
constexpr std::string_view kRecordPrefix = ".s3-upload-";
constexpr std::string_view kRecordSchema = "solver.s3-upload/1";

std::string trim_slashes(std::string_view text) {
  while (!text.empty() && text.front() == '/') text.remove_prefix(1);
  while (!text.empty() && text.back() == '/') text.remove_suffix(1);
  return std::string(text);
}

// ---- errors ----

bool transient_s3_code(std::string_view code) {
  return code == "InternalError" || code == "ServiceUnavailable" || code == "SlowDown" || code == "RequestTimeout";
}

// S3's error replies quote the access key id in full (and may echo the canonical request): the
// message keeps S3's code and sentence, with anything secret replaced.
[[noreturn]] void throw_s3_error(long status, std::string_view body, const std::string& what,
                                 const sigv4::Credentials& credentials) {
  const detail::S3ErrorReply reply = detail::read_error_reply(body);
  const std::string& code = reply.code;
  std::string explanation = reply.message.substr(0, 240);
  for (const std::string* secret : {&credentials.secret_access_key, &credentials.session_token, &credentials.access_key_id}) {
    if (secret->empty()) continue;
    const std::string shown = secret == &credentials.access_key_id ? credentials.redacted_key_id() : "(redacted)";
    for (std::size_t at = 0; (at = explanation.find(*secret, at)) != std::string::npos; at += shown.size())
      explanation.replace(at, secret->size(), shown);
  }
  std::replace_if(explanation.begin(), explanation.end(), [](unsigned char c) { return c < 0x20; }, ' ');
  std::string message = what + ": HTTP " + std::to_string(status);
  if (!code.empty()) message += " " + code;
  if (!explanation.empty()) message += ": " + explanation;
  if (status == 401 || status == 403)
    message += " (check the credentials, access key id " + credentials.redacted_key_id() + ", and the bucket's permissions)";
  throw Error(ErrorKind::Network, message, is_transient_status(status) || transient_s3_code(code));
}

// ---- files and hashing ----

std::string slice_sha256(const FileSlice& slice) {
  std::ifstream in(slice.path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open " + slice.path.string() + " to hash it");
  in.seekg(static_cast<std::streamoff>(slice.offset));
  Sha256 hasher;
  std::vector<char> buffer(1 << 20);
  std::uint64_t left = slice.length.value_or(UINT64_MAX);
  while (left > 0 && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(buffer.size(), left)));
    const auto got = static_cast<std::uint64_t>(in.gcount());
    hasher.update(std::as_bytes(std::span(buffer.data(), got)));
    left -= got;
  }
  if (slice.length && left != 0) throw Error(ErrorKind::Io, slice.path.string() + " ended before the part being hashed");
  return to_hex(hasher.finish());
}

std::uint64_t file_size_or_throw(const std::filesystem::path& path) {
  std::error_code error;
  const std::uint64_t size = std::filesystem::file_size(path, error);
  if (error) throw Error(ErrorKind::Io, "cannot read the size of " + path.string() + ": " + error.message());
  return size;
}

// ---- multipart resume records ----

struct UploadRecord {
  std::string bucket;
  std::string key;
  std::string upload_id;
  std::uint64_t size = 0;
  std::string sha256;
  std::uint64_t part_size = 0;
};

std::optional<UploadRecord> read_record(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  try {
    const json record = json::parse(read_file(path));
    if (record.value("schema", "") != kRecordSchema) return std::nullopt;
    return UploadRecord{record.at("bucket").get<std::string>(), record.at("key").get<std::string>(),
                        record.at("upload_id").get<std::string>(), record.at("size").get<std::uint64_t>(),
                        record.at("sha256").get<std::string>(), record.at("part_size").get<std::uint64_t>()};
  } catch (const json::exception& error) {
    log_warn("net", "ignoring the unreadable S3 upload record {}: {}", path.string(), error.what());
    return std::nullopt;
  }
}

void write_record(const std::filesystem::path& path, const UploadRecord& record) {
  const json content = {{"schema", kRecordSchema}, {"bucket", record.bucket}, {"key", record.key},
                        {"upload_id", record.upload_id}, {"size", record.size}, {"sha256", record.sha256},
                        {"part_size", record.part_size}};
  std::filesystem::create_directories(path.parent_path());
  write_file_durably(path, content.dump());
}

void remove_if_present(const std::filesystem::path& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

bool is_dns_compatible(std::string_view bucket) {
  if (bucket.size() < 3 || bucket.size() > 63 || bucket.front() == '-' || bucket.back() == '-') return false;
  return std::all_of(bucket.begin(), bucket.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

}  // namespace

// ---- configuration ----

std::optional<std::string> process_environment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr || value[0] == '\0') return std::nullopt;
  return std::string(value);
}

S3Config resolve_s3_config(S3Config config, const EnvironmentLookup& environment) {
  const auto env = [&](const char* name) { return environment(name); };
  const std::optional<std::string> home = env("HOME");
  detail::AwsProfile profile(!config.profile.empty() ? config.profile : env("AWS_PROFILE").value_or("default"),
                             env("AWS_SHARED_CREDENTIALS_FILE").value_or(home ? *home + "/.aws/credentials" : ""),
                             env("AWS_CONFIG_FILE").value_or(home ? *home + "/.aws/config" : ""));
  if (config.credentials.empty()) {
    const auto key_id = env("AWS_ACCESS_KEY_ID");
    const auto secret = env("AWS_SECRET_ACCESS_KEY");
    if (key_id && secret) {
      config.credentials = {*key_id, *secret, env("AWS_SESSION_TOKEN").value_or("")};
    } else if (auto from_profile = profile.credentials()) {
      config.credentials = *from_profile;
    } else {
      throw Error(ErrorKind::Config,
                  "S3: no credentials for bucket " + config.bucket +
                      ": set them in the S3 config, in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in " +
                      profile.describe() + " (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE)");
    }
  }
  if (config.region.empty()) {
    std::optional<std::string> region = env("AWS_REGION");
    if (!region) region = env("AWS_DEFAULT_REGION");
    if (!region) region = profile.setting("region");
    config.region = region.value_or("us-east-1");
  }
  if (config.endpoint.empty()) {
    std::optional<std::string> endpoint = env("AWS_ENDPOINT_URL_S3");
    if (!endpoint) endpoint = env("AWS_ENDPOINT_URL");
    if (!endpoint) endpoint = profile.setting("endpoint_url");
    config.endpoint = endpoint.value_or("");
  }
  return config;
}

std::uint64_t s3_part_size(std::uint64_t file_size, const S3Config& config) {
  const S3Limits& limits = config.limits;
  std::uint64_t part = std::clamp(config.part_size, limits.min_part_size, limits.max_part_size);
  if (file_size > part * limits.max_parts) part = (file_size + limits.max_parts - 1) / limits.max_parts;
  if (part > limits.max_part_size)
    throw Error(ErrorKind::Input, "a file of " + std::to_string(file_size) + " bytes does not fit in " +
                                      std::to_string(limits.max_parts) + " parts of at most " +
                                      std::to_string(limits.max_part_size) + " bytes (S3's largest object)");
  return part;
}

S3Address parse_s3_address(std::string_view address) {
  constexpr std::string_view scheme = "s3://";
  if (!address.starts_with(scheme))
    throw Error(ErrorKind::Input, "S3 address \"" + std::string(address) + "\" does not start with s3://");
  const std::string_view rest = address.substr(scheme.size());
  const std::size_t slash = rest.find('/');
  S3Address parsed{std::string(rest.substr(0, slash)), slash == std::string_view::npos ? "" : trim_slashes(rest.substr(slash))};
  if (parsed.bucket.empty())
    throw Error(ErrorKind::Input, "S3 address \"" + std::string(address) + "\" names no bucket (expected s3://bucket/key)");
  return parsed;
}

std::string format_s3_address(const S3Address& address) {
  return "s3://" + address.bucket + (address.key.empty() ? "" : "/" + address.key);
}

// ---- the client ----

struct S3Client::Call {
  std::string operation;  // "PutObject": names the call in errors and logs
  std::string method;
  std::string key;  // empty: the bucket
  QueryParams query;
  Headers headers;
  std::optional<FileSlice> body_file;
  std::string body;
  std::string payload_sha256 = std::string(sigv4::kEmptyPayloadSha256);
  std::vector<long> accepted_statuses;  // non-2xx statuses the caller handles itself
};

S3Client::S3Client(S3Config config) : config_(std::move(config)) {
  config_.prefix = trim_slashes(config_.prefix);
  const auto invalid = [](const std::string& message) { return Error(ErrorKind::Config, "S3 config: " + message); };
  if (config_.bucket.empty() || config_.bucket.find('/') != std::string::npos)
    throw invalid("bucket \"" + config_.bucket + "\" must be a plain, non-empty bucket name");
  if (config_.credentials.empty()) throw invalid("no credentials (resolve the config with resolve_s3_config first)");
  if (config_.region.empty()) throw invalid("no region (resolve the config with resolve_s3_config first)");
  if (config_.parallelism < 1 || config_.parallelism > 64)
    throw invalid("parallelism " + std::to_string(config_.parallelism) + " is outside 1 to 64");
  if (config_.part_size == 0 || config_.limits.min_part_size == 0 || config_.limits.min_part_size > config_.limits.max_part_size ||
      config_.limits.max_parts == 0)
    throw invalid("part size " + std::to_string(config_.part_size) + " or its limits are not positive and ordered");

  std::string endpoint = config_.endpoint.empty() ? "https://s3." + config_.region + ".amazonaws.com" : config_.endpoint;
  while (endpoint.ends_with('/')) endpoint.pop_back();
  const std::size_t scheme_end = endpoint.find("://");
  scheme_ = scheme_end == std::string::npos ? "" : endpoint.substr(0, scheme_end);
  host_ = scheme_end == std::string::npos ? "" : endpoint.substr(scheme_end + 3);
  if ((scheme_ != "http" && scheme_ != "https") || host_.empty() || host_.find_first_of("/?#@") != std::string::npos)
    throw invalid("endpoint \"" + config_.endpoint + "\" is not http(s)://host[:port]");
  if (config_.addressing == S3Addressing::Auto)
    config_.addressing = config_.endpoint.empty() && is_dns_compatible(config_.bucket) ? S3Addressing::VirtualHost
                                                                                       : S3Addressing::Path;
}

S3Client S3Client::for_bucket(const std::string& bucket) const {
  S3Config config = config_;
  config.bucket = bucket;
  return S3Client(std::move(config));
}

std::string S3Client::url(std::string_view key, const QueryParams& query) const {
  std::string url = scheme_ + "://";
  if (config_.addressing == S3Addressing::VirtualHost) {
    url += config_.bucket + "." + host_ + "/";
  } else {
    url += host_ + "/" + url_encode(config_.bucket);
    if (!key.empty()) url += "/";
  }
  url += url_encode(key, true);
  for (std::size_t i = 0; i < query.size(); ++i) {
    url += i == 0 ? '?' : '&';
    url += url_encode(query[i].first);
    url += '=';
    url += url_encode(query[i].second);
  }
  return url;
}

HttpResponse S3Client::send(const Call& call) const {
  HttpRequest request;
  request.method = call.method;
  request.url = url(call.key, call.query);
  request.headers = call.headers;
  request.body_file = call.body_file;
  request.body = call.body;
  request.connect_timeout = config_.connect_timeout;
  request.timeout = config_.request_timeout;
  request.stall_timeout = config_.stall_timeout;
  const sigv4::Request to_sign{request.method, request.url, request.headers, call.payload_sha256};
  const Headers signature =
      sigv4::sign(to_sign, config_.credentials, sigv4::Scope{config_.region}, std::chrono::system_clock::now());
  request.headers.insert(request.headers.end(), signature.begin(), signature.end());
  return perform(request);
}

HttpResponse S3Client::send_with_retries(const Call& call) {
  const std::string what = "S3 " + call.operation + " " + format_s3_address({config_.bucket, call.key});
  HttpResponse response;
  with_retries(config_.retry, what, [&] {
    response = send(call);
    const bool accepted = std::find(call.accepted_statuses.begin(), call.accepted_statuses.end(), response.status) !=
                          call.accepted_statuses.end();
    if (!is_success(response.status) && !accepted) throw_s3_error(response.status, response.body, what, config_.credentials);
  });
  return response;
}

void S3Client::put_object(const std::string& key, const std::filesystem::path& file, const std::string& sha256) {
  Call call{.operation = "PutObject", .method = "PUT", .key = key};
  call.headers = {{"content-type", "application/octet-stream"}, {std::string(kSha256Header), sha256}};
  call.body_file = FileSlice{file};
  // The caller's hash of the file doubles as the payload hash: S3 refuses the body if it differs.
  call.payload_sha256 = config_.sign_payload ? sha256 : std::string(sigv4::kUnsignedPayload);
  send_with_retries(call);
}

std::optional<S3Object> S3Client::head_object(const std::string& key) {
  const HttpResponse response =
      send_with_retries(Call{.operation = "HeadObject", .method = "HEAD", .key = key, .accepted_statuses = {404}});
  if (response.status == 404) return std::nullopt;
  S3Object object{key, 0, response.header("etag").value_or(""), response.header(kSha256Header).value_or("")};
  const std::string length = response.header("content-length").value_or("");
  char* end = nullptr;
  object.size = std::strtoull(length.c_str(), &end, 10);
  if (length.empty() || *end != '\0')
    throw Error(ErrorKind::Network, "S3 HeadObject " + format_s3_address({config_.bucket, key}) +
                                        ": the reply has no valid Content-Length (got \"" + length + "\")");
  return object;
}

void S3Client::delete_object(const std::string& key) {
  send_with_retries(Call{.operation = "DeleteObject", .method = "DELETE", .key = key, .accepted_statuses = {404}});
}

S3Object S3Client::get_object_to_file(const std::string& key, const std::filesystem::path& file, std::uint64_t max_bytes) {
  const std::string what = "S3 GetObject " + format_s3_address({config_.bucket, key});
  const std::filesystem::path temp = file.string() + ".s3-download";
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  S3Object object{.key = key};
  struct TempFile {
    const std::filesystem::path& path;
    ~TempFile() { remove_if_present(path); }  // after a failure; a success has renamed it away
  } temp_file{temp};
  with_retries(config_.retry, what, [&] {
    HttpRequest request;
    request.url = url(key);
    request.response_file = temp;
    request.max_response_bytes = max_bytes;
    request.connect_timeout = config_.connect_timeout;
    request.timeout = config_.request_timeout;
    request.stall_timeout = config_.stall_timeout;
    const Headers signature = sigv4::sign({"GET", request.url, {}, std::string(sigv4::kEmptyPayloadSha256)},
                                          config_.credentials, sigv4::Scope{config_.region}, std::chrono::system_clock::now());
    request.headers = signature;
    const HttpResponse response = perform(request);
    if (!is_success(response.status)) throw_s3_error(response.status, response.body, what, config_.credentials);
    object.size = file_size_or_throw(temp);
    object.etag = response.header("etag").value_or("");
    object.sha256 = response.header(kSha256Header).value_or("");
    const std::string length = response.header("content-length").value_or(std::to_string(object.size));
    if (length != std::to_string(object.size))
      throw Error(ErrorKind::Network, what + ": received " + std::to_string(object.size) + " bytes of " + length, true);
    if (!object.sha256.empty()) {
      const std::string actual = sha256_file_hex(temp);
      if (actual != object.sha256)
        throw Error(ErrorKind::Network, what + ": the bytes received hash to " + actual + ", the object's x-amz-meta-sha256 is " +
                                            object.sha256, true);
    }
  });
  std::error_code error;
  std::filesystem::rename(temp, file, error);
  if (error) throw Error(ErrorKind::Io, "cannot move " + temp.string() + " to " + file.string() + ": " + error.message());
  return object;
}

std::vector<S3Object> S3Client::list_objects(const std::string& prefix) {
  std::vector<S3Object> objects;
  std::string token;
  for (;;) {
    Call call{.operation = "ListObjectsV2", .method = "GET", .key = ""};
    call.query = {{"list-type", "2"}, {"prefix", prefix}, {"encoding-type", "url"}};
    if (!token.empty()) call.query.emplace_back("continuation-token", token);
    detail::ObjectListingPage page = detail::read_object_listing(
        send_with_retries(call).body, "S3 ListObjectsV2 " + format_s3_address({config_.bucket, prefix}));
    std::move(page.objects.begin(), page.objects.end(), std::back_inserter(objects));
    if (!page.truncated) break;
    token = page.next_continuation_token;
  }
  std::sort(objects.begin(), objects.end(), [](const S3Object& a, const S3Object& b) { return a.key < b.key; });
  return objects;
}

std::string S3Client::create_multipart_upload(const std::string& key, const std::string& sha256) {
  Call call{.operation = "CreateMultipartUpload", .method = "POST", .key = key, .query = {{"uploads", ""}}};
  call.headers = {{"content-type", "application/octet-stream"}, {std::string(kSha256Header), sha256}};
  return detail::read_upload_id(send_with_retries(call).body,
                                "S3 CreateMultipartUpload " + format_s3_address({config_.bucket, key}));
}

std::string S3Client::upload_part(const std::string& key, const std::string& upload_id, int part_number,
                                  const FileSlice& slice) {
  Call call{.operation = "UploadPart " + std::to_string(part_number), .method = "PUT", .key = key};
  call.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}};
  call.body_file = slice;
  call.payload_sha256 = config_.sign_payload ? slice_sha256(slice) : std::string(sigv4::kUnsignedPayload);
  const std::string etag = send_with_retries(call).header("etag").value_or("");
  if (etag.empty())
    throw Error(ErrorKind::Network, "S3 UploadPart " + std::to_string(part_number) + " " +
                                        format_s3_address({config_.bucket, key}) + ": the reply has no ETag");
  return etag;
}

std::optional<std::vector<S3Part>> S3Client::list_parts(const std::string& key, const std::string& upload_id) {
  std::vector<S3Part> parts;
  std::string marker;
  const std::string what = "S3 ListParts " + format_s3_address({config_.bucket, key});
  for (;;) {
    Call call{.operation = "ListParts", .method = "GET", .key = key, .query = {{"uploadId", upload_id}}, .accepted_statuses = {404}};
    if (!marker.empty()) call.query.emplace_back("part-number-marker", marker);
    const HttpResponse response = send_with_retries(call);
    if (response.status == 404) {
      if (detail::read_error_reply(response.body).code == "NoSuchUpload") return std::nullopt;
      throw_s3_error(response.status, response.body, what, config_.credentials);
    }
    detail::PartListingPage page = detail::read_part_listing(response.body, what);
    std::move(page.parts.begin(), page.parts.end(), std::back_inserter(parts));
    if (!page.truncated) break;
    marker = page.next_part_number_marker;
  }
  return parts;
}

void S3Client::complete_multipart_upload(const std::string& key, const std::string& upload_id,
                                         const std::vector<S3Part>& parts) {
  complete_upload(key, upload_id, parts, {});
}

void S3Client::complete_upload(const std::string& key, const std::string& upload_id, const std::vector<S3Part>& parts,
                               const std::function<bool()>& already_complete) {
  Call call{.operation = "CompleteMultipartUpload", .method = "POST", .key = key, .query = {{"uploadId", upload_id}}};
  call.headers = {{"content-type", "application/xml"}};
  call.body = detail::complete_multipart_upload_body(parts);
  call.payload_sha256 = sha256_hex(call.body);
  const std::string what = "S3 CompleteMultipartUpload " + format_s3_address({config_.bucket, key});
  bool retrying = false;
  with_retries(config_.retry, what, [&] {
    // A completion whose reply was lost may have worked: the upload is then gone and a retry
    // would fail, so look for the object first.
    if (std::exchange(retrying, true) && already_complete && already_complete()) {
      log_info("net", "{}: the previous attempt's reply was lost, but the object is complete", what);
      return;
    }
    const HttpResponse response = send(call);
    // S3 may answer 200 and then report a failure in the body, after a long assembly.
    if (!is_success(response.status) || detail::is_error_reply(response.body))
      throw_s3_error(is_success(response.status) ? 500 : response.status, response.body, what, config_.credentials);
  });
}

void S3Client::abort_multipart_upload(const std::string& key, const std::string& upload_id) {
  send_with_retries(Call{.operation = "AbortMultipartUpload", .method = "DELETE", .key = key,
                         .query = {{"uploadId", upload_id}}, .accepted_statuses = {404}});
}

void S3Client::upload_file(const std::string& key, const std::filesystem::path& file, const std::string& sha256,
                           const std::filesystem::path& record_dir) {
  const std::uint64_t size = file_size_or_throw(file);
  if (size <= s3_part_size(size, config_))
    put_object(key, file, sha256);
  else
    upload_multipart(key, file, sha256, record_dir);
}

void S3Client::upload_multipart(const std::string& key, const std::filesystem::path& file, const std::string& sha256,
                                const std::filesystem::path& record_dir) {
  const std::string address = format_s3_address({config_.bucket, key});
  const std::uint64_t size = file_size_or_throw(file);
  const std::uint64_t part_size = s3_part_size(size, config_);
  const std::size_t part_count = static_cast<std::size_t>((size + part_size - 1) / part_size);
  const auto part_length = [&](std::size_t index) { return std::min(part_size, size - index * part_size); };
  const std::filesystem::path record_path =
      (config_.state_dir.empty() ? record_dir : config_.state_dir) /
      (std::string(kRecordPrefix) + sha256_hex(config_.bucket + "/" + key).substr(0, 16) + ".json");

  std::string upload_id;
  std::vector<std::optional<S3Part>> parts(part_count);
  if (const std::optional<UploadRecord> record = read_record(record_path)) {
    if (record->bucket == config_.bucket && record->key == key && record->size == size && record->sha256 == sha256 &&
        record->part_size == part_size) {
      if (const auto listed = list_parts(key, record->upload_id)) {
        upload_id = record->upload_id;
        std::size_t kept = 0;
        for (const S3Part& part : *listed) {
          const auto index = static_cast<std::size_t>(part.number - 1);
          if (part.number >= 1 && index < part_count && part.size == part_length(index)) {
            parts[index] = part;
            ++kept;
          }
        }
        log_info("net", "resuming the upload of {}: {} of {} parts already in S3", address, kept, part_count);
      } else {
        log_info("net", "the upload of {} recorded in {} is gone from S3; starting it again", address, record_path.string());
      }
    } else {
      log_info("net", "the file behind the upload recorded in {} changed; aborting that upload", record_path.string());
      try {
        abort_multipart_upload(record->key, record->upload_id);
      } catch (const Error& error) {
        log_warn("net", "could not abort the stale upload of {}: {}", record->key, error.what());
      }
    }
  }
  if (upload_id.empty()) {
    upload_id = create_multipart_upload(key, sha256);
    write_record(record_path, {config_.bucket, key, upload_id, size, sha256, part_size});
  }

  try {
    std::vector<std::size_t> missing;
    for (std::size_t i = 0; i < part_count; ++i)
      if (!parts[i]) missing.push_back(i);
    for_each_in_parallel(missing.size(), config_.parallelism, [&](std::size_t item) {
      const std::size_t index = missing[item];
      const int number = static_cast<int>(index + 1);
      const FileSlice slice{file, index * part_size, part_length(index)};
      parts[index] = S3Part{number, part_length(index), upload_part(key, upload_id, number, slice)};
    });
    std::vector<S3Part> complete;
    for (const auto& part : parts) complete.push_back(*part);
    complete_upload(key, upload_id, complete, [&] {
      const std::optional<S3Object> object = head_object(key);
      return object && object->size == size && object->sha256 == sha256;
    });
  } catch (const Error& error) {
    if (!error.retryable()) {
      log_warn("net", "aborting the upload of {} after a permanent failure", address);
      try {
        abort_multipart_upload(key, upload_id);
      } catch (const Error& abort_error) {
        log_warn("net", "could not abort the upload of {}: {}", address, abort_error.what());
      }
      remove_if_present(record_path);
    }
    throw;
  }
  remove_if_present(record_path);
}

}  // namespace solver::net
