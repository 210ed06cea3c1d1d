// `solver publish`: a finished bundle to the store an agent config names (or one given on the
// command line), through the same code the agent uses. Idempotent: publishing again prints the
// same address and uploads nothing new.
#include <cstdio>

#include "agent/agent_config.h"
#include "cli/commands.h"
#include "agent/stores.h"
#include "common/log.h"

namespace solver::agent {

int publish_command(const PublishOptions& options) {
  StorageConfig storage =
      options.config_file ? load_agent_config(*options.config_file).storage : default_agent_config().storage;
  if (options.directory) storage = StorageConfig{.kind = "directory", .directory = std::filesystem::absolute(*options.directory)};
  if (options.ipfs_api) storage = StorageConfig{.kind = "ipfs", .settings = {{"kind", "ipfs"}, {"api", *options.ipfs_api}}};
  if (options.s3_bucket) {
    nlohmann::json settings{{"kind", "s3"}, {"bucket", *options.s3_bucket}};
    if (options.s3_endpoint) settings["endpoint"] = *options.s3_endpoint;
    if (options.s3_prefix) settings["prefix"] = *options.s3_prefix;
    storage = StorageConfig{.kind = "s3", .settings = settings};
  }
  const std::string name = options.name.value_or(std::filesystem::absolute(options.bundle_dir).lexically_normal().filename());
  log_info("publish", "publishing {} to {} as {}", options.bundle_dir.string(), storage.kind, name);
  const std::string address = make_store(storage)->publish(options.bundle_dir, name);
  std::printf("%s\n", address.c_str());
  return kExitOk;
}

}  // namespace solver::agent
