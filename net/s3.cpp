// The S3 client and bundle store. Requests go through net/http.h one at a time per thread and
// are signed just before they leave (the signature carries the time, so a retry is re-signed).
// Replies are small XML documents of a known shape; a few lines of tag extraction read them.
#include "net/s3.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "common/bundle_files.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/sha256.h"

namespace solver::net {
namespace {

using nlohmann::json;

constexpr std::string_view kSha256Header = "x-amz-meta-sha256";
constexpr std::string_view kRecordPrefix = ".s3-upload-";
constexpr std::string_view kRecordSchema = "solver.s3-upload/1";
constexpr std::string_view kManifest = "manifest.json";
constexpr std::string_view kSignature = "manifest.sig";

std::string trim(std::string_view text) {
  const std::size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  return std::string(text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1));
}

std::string trim_slashes(std::string_view text) {
  while (!text.empty() && text.front() == '/') text.remove_prefix(1);
  while (!text.empty() && text.back() == '/') text.remove_suffix(1);
  return std::string(text);
}

// ---- XML replies ----

std::string xml_unescape(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const std::size_t semicolon = text[i] == '&' ? text.find(';', i) : std::string_view::npos;
    if (semicolon == std::string_view::npos) {
      out += text[i];
      continue;
    }
    const std::string_view entity = text.substr(i + 1, semicolon - i - 1);
    if (entity == "amp") out += '&';
    else if (entity == "lt") out += '<';
    else if (entity == "gt") out += '>';
    else if (entity == "quot") out += '"';
    else if (entity == "apos") out += '\'';
    else if (entity.starts_with('#')) {
      const bool hex = entity.size() > 1 && (entity[1] == 'x' || entity[1] == 'X');
      const std::string digits(entity.substr(hex ? 2 : 1));
      const unsigned long code = std::strtoul(digits.c_str(), nullptr, hex ? 16 : 10);
      if (code < 0x80) {
        out += static_cast<char>(code);
      } else if (code < 0x800) {
        out += static_cast<char>(0xC0 | (code >> 6));
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else if (code < 0x10000) {
        out += static_cast<char>(0xE0 | (code >> 12));
        out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (code >> 18));
        out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      }
    } else {
      out += text.substr(i, semicolon - i + 1);
    }
    i = semicolon;
  }
  return out;
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

// The raw contents of every <tag>...</tag> (attributes allowed, <tag/> is empty), in order.
std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> found;
  const std::string open = "<" + std::string(tag);
  const std::string close = "</" + std::string(tag) + ">";
  std::size_t at = 0;
  while ((at = xml.find(open, at)) != std::string_view::npos) {
    const std::size_t after = at + open.size();
    const std::size_t tag_end = xml.find('>', after);
    if (after >= xml.size() || tag_end == std::string_view::npos) break;
    const char next = xml[after];
    if (next != '>' && next != ' ' && next != '/') {  // a longer name: <PartNumber> is not <Part>
      at = after;
      continue;
    }
    if (xml[tag_end - 1] == '/') {
      found.emplace_back();
      at = tag_end + 1;
      continue;
    }
    const std::size_t end = xml.find(close, tag_end + 1);
    if (end == std::string_view::npos) break;
    found.push_back(xml.substr(tag_end + 1, end - tag_end - 1));
    at = end + close.size();
  }
  return found;
}

std::optional<std::string> xml_text(std::string_view xml, std::string_view tag) {
  const std::vector<std::string_view> elements = xml_elements(xml, tag);
  if (elements.empty()) return std::nullopt;
  return xml_unescape(elements.front());
}

std::uint64_t xml_number(std::string_view xml, std::string_view tag, std::string_view what) {
  const std::optional<std::string> text = xml_text(xml, tag);
  char* end = nullptr;
  const unsigned long long value = text ? std::strtoull(text->c_str(), &end, 10) : 0;
  if (!text || text->empty() || *end != '\0')
    throw Error(ErrorKind::Network, std::string(what) + ": the reply's <" + std::string(tag) + "> is not a number");
  return value;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Listing keys under encoding-type=url: %XX escapes, '+' for a space.
std::string url_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_digit(text[i + 1]) >= 0 && hex_digit(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2]));
      i += 2;
    } else {
      out += text[i] == '+' ? ' ' : text[i];
    }
  }
  return out;
}

// ---- errors ----

bool transient_s3_code(std::string_view code) {
  return code == "InternalError" || code == "ServiceUnavailable" || code == "SlowDown" || code == "RequestTimeout";
}

// S3's error replies quote the access key id in full (and may echo the canonical request): the
// message keeps S3's code and sentence, with anything secret replaced.
[[noreturn]] void throw_s3_error(long status, std::string_view body, const std::string& what,
                                 const sigv4::Credentials& credentials) {
  const std::string code = xml_text(body, "Code").value_or("");
  std::string explanation = xml_text(body, "Message").value_or("").substr(0, 240);
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

// ---- profile files ----

using IniFile = std::map<std::string, std::map<std::string, std::string>>;

// AWS's INI dialect: [section], key = value, comments from '#' or ';' at the line's start;
// indented lines continue a nested setting (such as "s3 =" blocks) and are not needed here.
IniFile read_ini(const std::filesystem::path& path) {
  IniFile ini;
  std::ifstream in(path);
  if (!in) return ini;
  std::string line;
  std::string section;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) continue;
    const std::string text = trim(line);
    if (text.empty() || text.front() == '#' || text.front() == ';') continue;
    if (text.front() == '[') {
      if (text.back() != ']')
        throw Error(ErrorKind::Config, path.string() + ":" + std::to_string(number) + ": a section header lacks its ']'");
      section = trim(std::string_view(text).substr(1, text.size() - 2));
      ini[section];
      continue;
    }
    const std::size_t equals = text.find('=');
    if (equals == std::string::npos || section.empty())
      throw Error(ErrorKind::Config, path.string() + ":" + std::to_string(number) +
                                         ": expected 'name = value' inside a [section], got a line without one");
    ini[section][trim(std::string_view(text).substr(0, equals))] = trim(std::string_view(text).substr(equals + 1));
  }
  return ini;
}

std::optional<std::string> ini_value(const IniFile& ini, const std::string& section, const std::string& name) {
  const auto found = ini.find(section);
  if (found == ini.end()) return std::nullopt;
  const auto value = found->second.find(name);
  if (value == found->second.end() || value->second.empty()) return std::nullopt;
  return value->second;
}

std::optional<sigv4::Credentials> ini_credentials(const IniFile& ini, const std::string& section) {
  const auto key_id = ini_value(ini, section, "aws_access_key_id");
  const auto secret = ini_value(ini, section, "aws_secret_access_key");
  if (!key_id || !secret) return std::nullopt;
  return sigv4::Credentials{*key_id, *secret, ini_value(ini, section, "aws_session_token").value_or("")};
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

struct FileEntry {
  std::uint64_t size = 0;
  std::string sha256;
};

// The files manifest.json lists with their size and hash (docs/bundle-format.md: checkpoints,
// segments, the torchscript module), by relative path.
std::map<std::string, FileEntry> manifest_file_entries(const std::filesystem::path& bundle_dir) {
  const std::filesystem::path manifest_path = bundle_dir / kManifest;
  const json manifest =
      parse_json_document(read_bundle_file(bundle_dir, kManifest, kMaxManifestBytes, "manifest"), manifest_path.string());
  std::map<std::string, FileEntry> entries;
  const auto add = [&](const json& file, const std::string& where) {
    if (!file.is_object() || !file.contains("path") || !file["path"].is_string() || !file.contains("size") ||
        !file["size"].is_number_unsigned() || !file.contains("sha256") || !file["sha256"].is_string())
      throw Error(ErrorKind::Input, manifest_path.string() + ": " + where + " is not a {path, size, sha256} file entry");
    const std::string path = file["path"].get<std::string>();
    if (!is_plain_relative_path(path))
      throw Error(ErrorKind::Input, manifest_path.string() + ": " + where + ".path \"" + path + "\" leaves the bundle folder");
    entries[path] = FileEntry{file["size"].get<std::uint64_t>(), file["sha256"].get<std::string>()};
  };
  if (!manifest.is_object()) throw Error(ErrorKind::Input, manifest_path.string() + " is not a JSON object");
  for (const char* list : {"checkpoints", "segments"}) {
    if (!manifest.contains(list)) continue;
    if (!manifest[list].is_array()) throw Error(ErrorKind::Input, manifest_path.string() + ": " + list + " is not an array");
    for (std::size_t i = 0; i < manifest[list].size(); ++i) {
      const json& item = manifest[list][i];
      const std::string where = std::string(list) + "[" + std::to_string(i) + "].file";
      if (!item.is_object() || !item.contains("file")) throw Error(ErrorKind::Input, manifest_path.string() + ": " + where + " is missing");
      add(item["file"], where);
    }
  }
  if (manifest.contains("model_file") && !manifest["model_file"].is_null()) add(manifest["model_file"], "model_file");
  return entries;
}

// ---- parallel work ----

// Runs work(0..count-1) on up to `threads` threads. After the first failure no new item starts;
// the error rethrown is a non-retryable one when any item had one (it decides what the caller
// does next), else the first.
void for_each_in_parallel(std::size_t count, int threads, const std::function<void(std::size_t)>& work) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::exception_ptr first_error;
  bool first_is_final = false;
  const auto worker = [&] {
    for (std::size_t item; !failed && (item = next++) < count;) {
      try {
        work(item);
      } catch (...) {
        bool final = true;
        try {
          throw;
        } catch (const Error& error) {
          final = !error.retryable();
        } catch (...) {
        }
        const std::lock_guard lock(mutex);
        if (!first_error || (final && !first_is_final)) {
          first_error = std::current_exception();
          first_is_final = final;
        }
        failed = true;
      }
    }
  };
  const std::size_t thread_count = std::min<std::size_t>(static_cast<std::size_t>(std::max(threads, 1)), count);
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < thread_count; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& thread : pool) thread.join();
  if (first_error) std::rethrow_exception(first_error);
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
  const std::string profile = !config.profile.empty() ? config.profile : env("AWS_PROFILE").value_or("default");
  const std::optional<std::string> home = env("HOME");
  const std::filesystem::path credentials_path =
      env("AWS_SHARED_CREDENTIALS_FILE").value_or(home ? *home + "/.aws/credentials" : "");
  const std::filesystem::path config_path = env("AWS_CONFIG_FILE").value_or(home ? *home + "/.aws/config" : "");
  // Read only when needed: a broken profile file must not matter to a fully configured agent.
  std::optional<IniFile> credentials_ini;
  std::optional<IniFile> config_ini;
  const auto credentials_file = [&]() -> const IniFile& {
    if (!credentials_ini) credentials_ini = credentials_path.empty() ? IniFile{} : read_ini(credentials_path);
    return *credentials_ini;
  };
  const auto config_file = [&]() -> const IniFile& {
    if (!config_ini) config_ini = config_path.empty() ? IniFile{} : read_ini(config_path);
    return *config_ini;
  };
  const std::string config_section = profile == "default" ? profile : "profile " + profile;

  if (config.credentials.empty()) {
    const auto key_id = env("AWS_ACCESS_KEY_ID");
    const auto secret = env("AWS_SECRET_ACCESS_KEY");
    if (key_id && secret) {
      config.credentials = {*key_id, *secret, env("AWS_SESSION_TOKEN").value_or("")};
    } else if (auto from_file = ini_credentials(credentials_file(), profile)) {
      config.credentials = *from_file;
    } else if (auto from_config = ini_credentials(config_file(), config_section)) {
      config.credentials = *from_config;
    } else {
      throw Error(ErrorKind::Config,
                  "S3: no credentials for bucket " + config.bucket +
                      ": set them in the S3 config, in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in profile \"" +
                      profile + "\" of " + credentials_path.string() + " or " + config_path.string() +
                      " (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE)");
    }
  }
  if (config.region.empty()) {
    std::optional<std::string> region = env("AWS_REGION");
    if (!region) region = env("AWS_DEFAULT_REGION");
    if (!region) region = ini_value(config_file(), config_section, "region");
    config.region = region.value_or("us-east-1");
  }
  if (config.endpoint.empty()) {
    std::optional<std::string> endpoint = env("AWS_ENDPOINT_URL_S3");
    if (!endpoint) endpoint = env("AWS_ENDPOINT_URL");
    if (!endpoint) endpoint = ini_value(config_file(), config_section, "endpoint_url");
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
    const std::string body = send_with_retries(call).body;
    const std::string what = "S3 ListObjectsV2 " + format_s3_address({config_.bucket, prefix});
    const bool url_encoded = xml_text(body, "EncodingType").value_or("") == "url";
    for (const std::string_view contents : xml_elements(body, "Contents")) {
      const std::string key = xml_text(contents, "Key").value_or("");
      objects.push_back(S3Object{url_encoded ? url_decode(key) : key, xml_number(contents, "Size", what),
                                 xml_text(contents, "ETag").value_or(""), ""});
    }
    if (xml_text(body, "IsTruncated").value_or("false") != "true") break;
    token = xml_text(body, "NextContinuationToken").value_or("");
    if (token.empty()) throw Error(ErrorKind::Network, what + ": the listing is truncated but gives no continuation token");
  }
  std::sort(objects.begin(), objects.end(), [](const S3Object& a, const S3Object& b) { return a.key < b.key; });
  return objects;
}

std::string S3Client::create_multipart_upload(const std::string& key, const std::string& sha256) {
  Call call{.operation = "CreateMultipartUpload", .method = "POST", .key = key, .query = {{"uploads", ""}}};
  call.headers = {{"content-type", "application/octet-stream"}, {std::string(kSha256Header), sha256}};
  const std::string upload_id = xml_text(send_with_retries(call).body, "UploadId").value_or("");
  if (upload_id.empty())
    throw Error(ErrorKind::Network, "S3 CreateMultipartUpload " + format_s3_address({config_.bucket, key}) + ": the reply has no UploadId");
  return upload_id;
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
      if (xml_text(response.body, "Code").value_or("") == "NoSuchUpload") return std::nullopt;
      throw_s3_error(response.status, response.body, what, config_.credentials);
    }
    for (const std::string_view part : xml_elements(response.body, "Part"))
      parts.push_back(S3Part{static_cast<int>(xml_number(part, "PartNumber", what)), xml_number(part, "Size", what),
                             xml_text(part, "ETag").value_or("")});
    if (xml_text(response.body, "IsTruncated").value_or("false") != "true") break;
    marker = xml_text(response.body, "NextPartNumberMarker").value_or("");
    if (marker.empty()) throw Error(ErrorKind::Network, what + ": the listing is truncated but gives no next part marker");
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
  call.body = "<CompleteMultipartUpload>";
  for (const S3Part& part : parts)
    call.body += "<Part><PartNumber>" + std::to_string(part.number) + "</PartNumber><ETag>" + xml_escape(part.etag) +
                 "</ETag></Part>";
  call.body += "</CompleteMultipartUpload>";
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
    if (!is_success(response.status) || response.body.find("<Error>") != std::string::npos)
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

// ---- the bundle store ----

S3Store::S3Store(S3Config config) : client_(std::move(config)) {}

std::string S3Store::publish(const std::filesystem::path& bundle_dir, const std::string& bundle_name) {
  // A symlink or special file in the bundle stops the publish: uploaded, it would carry
  // whatever it points at on this machine to the bucket.
  const std::vector<BundleFile> bundle_files = list_finished_bundle(bundle_dir);
  if (bundle_name.empty() || bundle_name.find('/') != std::string::npos || bundle_name.starts_with("."))
    throw Error(ErrorKind::Internal, "bundle name \"" + bundle_name + "\" is not a plain folder name");
  const std::string& prefix = client_.config().prefix;
  const std::string bundle_key = prefix.empty() ? bundle_name : prefix + "/" + bundle_name;
  const std::string address = format_s3_address({client_.config().bucket, bundle_key});

  // Every visible file, each hashed; those the manifest lists must match it, or the local
  // bundle is damaged and must not be published.
  struct LocalFile {
    std::string relative;
    std::filesystem::path path;
    std::uint64_t size = 0;
    std::string sha256;
  };
  std::vector<LocalFile> files;
  for (const BundleFile& file : bundle_files)
    files.push_back({file.relative, file.path, file.size, sha256_file_hex(file.path)});
  std::map<std::string, const LocalFile*> by_path;
  for (const LocalFile& file : files) by_path[file.relative] = &file;
  for (const auto& [path, expected] : manifest_file_entries(bundle_dir)) {
    const auto found = by_path.find(path);
    if (found == by_path.end())
      throw Error(ErrorKind::Input, bundle_dir.string() + ": " + path + ", listed in the manifest, is missing");
    if (found->second->size != expected.size || found->second->sha256 != expected.sha256)
      throw Error(ErrorKind::Input, bundle_dir.string() + ": " + path + " has " + std::to_string(found->second->size) +
                                        " bytes hashing to " + found->second->sha256 + ", the manifest says " +
                                        std::to_string(expected.size) + " bytes hashing to " + expected.sha256);
  }

  std::map<std::string, S3Object> existing;
  for (S3Object& object : client_.list_objects(bundle_key + "/")) existing[object.key] = std::move(object);
  const auto key_of = [&](const LocalFile& file) { return bundle_key + "/" + file.relative; };
  const auto already_there = [&](const LocalFile& file) {
    const auto found = existing.find(key_of(file));
    if (found == existing.end() || found->second.size != file.size) return false;
    const std::optional<S3Object> head = client_.head_object(key_of(file));
    return head && head->size == file.size && head->sha256 == file.sha256;
  };
  if (const auto manifest = by_path.find(std::string(kManifest)); existing.contains(key_of(*manifest->second))) {
    const std::optional<S3Object> head = client_.head_object(key_of(*manifest->second));
    if (head && head->sha256 != manifest->second->sha256)
      throw Error(ErrorKind::Input, address + " already holds a different bundle (its manifest.json hashes to " +
                                        (head->sha256.empty() ? "an unrecorded value" : head->sha256) + ")");
  }

  // Small files in parallel, large ones one at a time with their parts in parallel, the
  // signature and then the manifest last.
  std::vector<const LocalFile*> small;
  std::vector<const LocalFile*> large;
  std::vector<const LocalFile*> last;
  for (const LocalFile& file : files) {
    if (file.relative == kManifest || file.relative == kSignature) continue;
    (file.size <= s3_part_size(file.size, client_.config()) ? small : large).push_back(&file);
  }
  last = {by_path.at(std::string(kSignature)), by_path.at(std::string(kManifest))};
  std::atomic<std::size_t> uploaded{0};
  std::atomic<std::uint64_t> uploaded_bytes{0};
  const auto upload = [&](const LocalFile& file) {
    if (already_there(file)) return;
    client_.upload_file(key_of(file), file.path, file.sha256, bundle_dir);
    ++uploaded;
    uploaded_bytes += file.size;
  };
  for_each_in_parallel(small.size(), client_.config().parallelism, [&](std::size_t i) { upload(*small[i]); });
  for (const LocalFile* file : large) upload(*file);
  for (const LocalFile* file : last) upload(*file);

  // Reported published only once S3 lists every file at its size.
  std::map<std::string, std::uint64_t> listed;
  for (const S3Object& object : client_.list_objects(bundle_key + "/")) listed[object.key] = object.size;
  for (const LocalFile& file : files) {
    const auto found = listed.find(key_of(file));
    if (found == listed.end() || found->second != file.size)
      throw Error(ErrorKind::Network, "after publishing " + address + ", S3 " +
                                          (found == listed.end() ? "does not list " + file.relative
                                                                 : "lists " + file.relative + " with " +
                                                                       std::to_string(found->second) + " bytes instead of " +
                                                                       std::to_string(file.size)),
                  true);
  }
  log_info("net", "published {}: {} of {} files uploaded ({} bytes), the others already there", address, uploaded.load(),
           files.size(), uploaded_bytes.load());
  return address;
}

void S3Store::fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) {
  const S3Address parsed = parse_s3_address(address);
  if (parsed.key.empty()) throw Error(ErrorKind::Input, "S3 address \"" + address + "\" names a bucket, not a bundle");
  S3Client client = parsed.bucket == client_.config().bucket ? client_ : client_.for_bucket(parsed.bucket);
  const std::vector<S3Object> objects = client.list_objects(parsed.key + "/");
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> downloads;  // key, relative path, listed size
  std::uint64_t total = 0;
  for (const S3Object& object : objects) {
    if (!object.key.starts_with(parsed.key + "/"))
      throw Error(ErrorKind::Network, address + ": the listing under it returned the key \"" + object.key + "\"");
    const std::string relative = object.key.substr(parsed.key.size() + 1);
    if (relative.empty() || relative.ends_with('/')) continue;  // folder markers some tools create
    if (!is_plain_relative_path(relative))
      throw Error(ErrorKind::Input, address + ": object key \"" + object.key + "\" would land outside " + dest_dir.string());
    downloads.emplace_back(object.key, relative, object.size);
    total += object.size;
  }
  if (total > max_bytes)
    throw Error(ErrorKind::Input, address + " lists " + std::to_string(total) + " bytes, more than the " +
                                      std::to_string(max_bytes) + " allowed");
  const auto has = [&](std::string_view name) {
    return std::any_of(downloads.begin(), downloads.end(), [&](const auto& item) { return std::get<1>(item) == name; });
  };
  if (!has(kManifest) || !has(kSignature))
    throw Error(ErrorKind::Input, address + " holds no whole bundle (" + std::to_string(downloads.size()) +
                                      " objects, manifest.json and manifest.sig not both among them)");
  std::filesystem::create_directories(dest_dir);
  // What each download was checked against: its size, and the hash it was uploaded with (the
  // x-amz-meta-sha256 solver's publish sets; get_object_to_file refuses bytes that differ).
  std::map<std::string, S3Object> fetched;
  std::mutex fetched_mutex;
  // Each object is cut off at its listed size, so the listing's total bounds the disk used.
  for_each_in_parallel(downloads.size(), client.config().parallelism, [&](std::size_t i) {
    const auto& [key, relative, size] = downloads[i];
    S3Object object = client.get_object_to_file(key, confined_path(dest_dir, relative), size);
    const std::lock_guard lock(fetched_mutex);
    fetched[relative] = std::move(object);
  });
  for (const auto& [path, expected] : manifest_file_entries(dest_dir)) {
    const auto download = fetched.find(path);
    if (download == fetched.end())
      throw Error(ErrorKind::Input, address + ": " + path + ", listed in the manifest, is not in the store");
    // Hashed again only when the store did not vouch for the bytes (another uploader's objects).
    const std::uint64_t size = download->second.size;
    const std::string sha256 = download->second.sha256.empty() ? sha256_file_hex(dest_dir / path) : download->second.sha256;
    if (size != expected.size || sha256 != expected.sha256)
      throw Error(ErrorKind::Input, address + ": " + path + " has " + std::to_string(size) + " bytes hashing to " + sha256 +
                                        ", the manifest says " + std::to_string(expected.size) + " bytes hashing to " +
                                        expected.sha256);
  }
  log_info("net", "fetched {} into {}: {} files", address, dest_dir.string(), downloads.size());
}

}  // namespace solver::net
