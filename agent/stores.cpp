// The config's "storage" object turned into a store (docs/storage.md lists the fields). The IPFS
// and S3 settings are read strictly here, so a typo fails at start-up like any other config error.
#include "agent/stores.h"

#include "common/error.h"
#include "common/json_reader.h"
#include "net/ipfs.h"
#include "net/s3_store.h"

namespace solver::agent {
namespace {

net::IpfsOptions ipfs_options(const nlohmann::json& settings) {
  ObjectReader reader(settings, "config.storage");
  reader.string("kind");
  net::IpfsOptions options;
  if (reader.has("api")) options.api_url = reader.string("api");
  if (reader.has("profile")) {
    const std::string profile = reader.string("profile");
    if (profile == "kubo-default") options.profile = net::UnixfsProfile::kubo_default();
    else if (profile == "1mib-chunks") options.profile = net::UnixfsProfile::one_mib_chunks();
    else if (profile == "unixfs-v1-2025") options.profile = net::UnixfsProfile::unixfs_v1_2025();
    else
      ObjectReader::fail(reader.field("profile"),
                         "expected \"kubo-default\", \"1mib-chunks\" or \"unixfs-v1-2025\", got \"" + profile + "\"");
  }
  reader.finish();
  return options;
}

net::S3Config s3_config(const nlohmann::json& settings) {
  ObjectReader reader(settings, "config.storage");
  reader.string("kind");
  net::S3Config config;
  config.bucket = reader.string("bucket");
  if (reader.has("endpoint")) config.endpoint = reader.string("endpoint");
  if (reader.has("region")) config.region = reader.string("region");
  if (reader.has("prefix")) config.prefix = reader.string("prefix");
  if (reader.has("profile")) config.profile = reader.string("profile");
  if (reader.has("addressing")) {
    const std::string addressing = reader.string("addressing");
    if (addressing == "auto") config.addressing = net::S3Addressing::Auto;
    else if (addressing == "path") config.addressing = net::S3Addressing::Path;
    else if (addressing == "virtual-host") config.addressing = net::S3Addressing::VirtualHost;
    else ObjectReader::fail(reader.field("addressing"), "expected \"auto\", \"path\" or \"virtual-host\", got \"" + addressing + "\"");
  }
  // Keys in the config file are allowed (mode 0600 recommended); the environment or an AWS
  // profile keeps them out of it.
  if (reader.has("access_key_id")) config.credentials.access_key_id = reader.string("access_key_id");
  if (reader.has("secret_access_key")) config.credentials.secret_access_key = reader.string("secret_access_key");
  if (reader.has("session_token")) config.credentials.session_token = reader.string("session_token");
  if (reader.has("part_size_mb")) config.part_size = static_cast<std::uint64_t>(reader.non_negative("part_size_mb")) << 20;
  if (reader.has("parallelism")) config.parallelism = static_cast<int>(reader.non_negative("parallelism"));
  reader.finish();
  return net::resolve_s3_config(config);
}

// Configuration mistakes say so (exit status 78), whatever reader they came from.
template <typename Make>
auto as_config_error(Make make) {
  try {
    return make();
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw Error(ErrorKind::Config, std::string("agent config: ") + error.what());
  }
}

}  // namespace

std::unique_ptr<net::BundleStore> make_store(const StorageConfig& storage) {
  if (storage.kind == "directory") return std::make_unique<net::DirectoryStore>(storage.directory);
  if (storage.kind == "ipfs")
    return as_config_error([&] { return std::make_unique<net::IpfsStore>(ipfs_options(storage.settings)); });
  return as_config_error([&] { return std::make_unique<net::S3Store>(s3_config(storage.settings)); });
}

std::unique_ptr<net::BundleStore> store_for_address(const std::string& address, const StorageConfig& storage) {
  if (address.starts_with("/")) return std::make_unique<net::DirectoryStore>(std::filesystem::path(address).parent_path());
  const std::string scheme = address.substr(0, address.find("://"));
  if ((scheme == "ipfs" || scheme == "s3") && storage.kind == scheme) return make_store(storage);
  throw Error(ErrorKind::Config, "bundle address " + address + " needs a \"" + scheme +
                                     "\" store in the agent config (\"storage\"), which has \"" + storage.kind + "\"");
}

net::Downloader make_downloader(const StorageConfig& storage, const std::string& scheme) {
  if (storage.kind != scheme) return {};
  if (scheme == "ipfs") {
    const net::IpfsOptions options = as_config_error([&] { return ipfs_options(storage.settings); });
    return [options](const std::string& url, const std::filesystem::path& dest, std::uint64_t max_bytes) {
      net::IpfsClient(options).cat_to_file(url, dest, max_bytes);
    };
  }
  const net::S3Config config = as_config_error([&] { return s3_config(storage.settings); });
  return [config](const std::string& url, const std::filesystem::path& dest, std::uint64_t max_bytes) {
    const net::S3Address address = net::parse_s3_address(url);
    net::S3Client(config).for_bucket(address.bucket).get_object_to_file(address.key, dest, max_bytes);
  };
}

}  // namespace solver::agent
