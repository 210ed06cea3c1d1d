// The bundle store the config names, and the store that can read a given address (a verifier
// fetches bundles from wherever their solver published them).
#pragma once

#include <memory>
#include <string>

#include "agent/agent_config.h"
#include "net/fetch.h"
#include "net/store.h"

namespace solver::agent {

// Throws Error(Config) for settings the store refuses.
std::unique_ptr<net::BundleStore> make_store(const StorageConfig& storage);
// A path -> a directory store; ipfs:// and s3:// -> the configured store of that kind. Throws
// Error(Config) when the address needs a store the config does not describe.
std::unique_ptr<net::BundleStore> store_for_address(const std::string& address, const StorageConfig& storage);
// Downloads single files of `scheme` ("ipfs", "s3") through the configured store; empty when
// the config has no store of that kind.
net::Downloader make_downloader(const StorageConfig& storage, const std::string& scheme);

}  // namespace solver::agent
