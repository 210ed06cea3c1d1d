// `solver publish`: a finished bundle to the store an agent config names (or one given on the
// command line), through the same code the agent uses. Idempotent: publishing again prints the
// same address and uploads nothing new.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "agent/agent_config.h"
#include "agent/exit_status.h"
#include "agent/stores.h"
#include "cli/command.h"
#include "common/log.h"
#include "proof/manifest.h"

namespace solver::cli {
namespace {

struct PublishOptions {
  std::filesystem::path bundle_dir;
  std::optional<std::string> name;                   // the bundle's name in the store; default: its folder's name
  std::optional<std::filesystem::path> config_file;  // use this agent config's "storage"
  std::optional<std::filesystem::path> directory;    // or a folder...
  std::optional<std::string> ipfs_api;               // ...or an IPFS node's RPC API...
  std::optional<std::string> s3_bucket;              // ...or an S3 bucket (credentials: environment or AWS profile)
  std::optional<std::string> s3_endpoint;
  std::optional<std::string> s3_prefix;
};

// Prints the bundle's address (a path, ipfs://CID or s3://bucket/key).
int publish_command(const PublishOptions& options) {
  agent::StorageConfig storage =
      options.config_file ? agent::load_agent_config(*options.config_file).storage : agent::default_agent_config().storage;
  if (options.directory) storage = agent::StorageConfig{.kind = "directory", .directory = std::filesystem::absolute(*options.directory)};
  if (options.ipfs_api) storage = agent::StorageConfig{.kind = "ipfs", .settings = {{"kind", "ipfs"}, {"api", *options.ipfs_api}}};
  if (options.s3_bucket) {
    nlohmann::json settings{{"kind", "s3"}, {"bucket", *options.s3_bucket}};
    if (options.s3_endpoint) settings["endpoint"] = *options.s3_endpoint;
    if (options.s3_prefix) settings["prefix"] = *options.s3_prefix;
    storage = agent::StorageConfig{.kind = "s3", .settings = settings};
  }
  const std::string name = options.name.value_or(std::filesystem::absolute(options.bundle_dir).lexically_normal().filename());
  log_info("publish", "publishing {} to {} as {}", options.bundle_dir.string(), storage.kind, name);
  const std::string address = agent::make_store(storage)->publish(proof::read_bundle_listing(options.bundle_dir), name);
  std::printf("%s\n", address.c_str());
  return agent::kExitOk;
}

}  // namespace

Command add_publish_command(CLI::App& parent) {
  auto options = std::make_shared<PublishOptions>();
  CLI::App* command = parent.add_subcommand("publish", "Publish a finished bundle to a folder, IPFS or S3; prints its address");
  command->add_option("bundle", options->bundle_dir, "Bundle folder")->required();
  command->add_option("--name", options->name, "Name in the store (default: the folder's name)");
  command->add_option("--config", options->config_file, "Publish to this agent config's storage");
  CLI::Option* directory = command->add_option("--dir", options->directory, "Publish into this folder");
  CLI::Option* ipfs = command->add_option("--ipfs", options->ipfs_api, "Publish to the IPFS node with this RPC API URL");
  CLI::Option* s3 = command->add_option("--s3-bucket", options->s3_bucket, "Publish to this S3 bucket");
  command->add_option("--s3-endpoint", options->s3_endpoint, "S3-compatible endpoint URL (default: AWS)")->needs(s3);
  command->add_option("--s3-prefix", options->s3_prefix, "Key prefix in the bucket")->needs(s3);
  directory->excludes(ipfs)->excludes(s3);
  ipfs->excludes(s3);
  return {command, [options] { return publish_command(*options); }};
}

}  // namespace solver::cli
