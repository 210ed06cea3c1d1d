// A real IPFS node for the tests: npm's js-ipfs (tests/servers/node_modules/.bin/jsipfs), whose
// RPC API is Kubo's /api/v0. It runs offline on 127.0.0.1 with ephemeral ports, no swarm and no
// bootstrap peers, on a fresh repo in a scratch folder, as a BackgroundProcess.
// Also the content helpers the IPFS and UnixFS tests share.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "tests/test_support.h"

namespace solver::test {

class IpfsNode {
 public:
  // Starts the daemon and waits (up to 60 s) until its API answers. Throws std::runtime_error
  // saying what failed: node_modules missing (run scripts/install-test-servers.sh), the daemon
  // exiting, or no API address in time (with the end of its log).
  IpfsNode();
  IpfsNode(const IpfsNode&) = delete;
  IpfsNode& operator=(const IpfsNode&) = delete;

  // One node for the whole test process (started on first use, killed at exit).
  static IpfsNode& shared();

  const std::string& api_url() const { return api_url_; }  // http://127.0.0.1:PORT

 private:
  ScratchDir scratch_;
  std::optional<BackgroundProcess> daemon_;  // declared after scratch_: killed before its repo is removed
  std::string api_url_;
};

// Writes `size` pseudo-random bytes (a function of `seed`) to `path` (creating its folder), a
// megabyte at a time.
void write_random_file(const std::filesystem::path& path, std::uint64_t size, std::uint32_t seed);

// tests/servers/node_modules/.bin/jsipfs; throws std::runtime_error naming
// scripts/install-test-servers.sh when the test servers are not installed.
std::filesystem::path require_test_servers();

}  // namespace solver::test
