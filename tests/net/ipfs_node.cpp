#include "tests/net/ipfs_node.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "common/files.h"
#include "net/http.h"

namespace solver::test {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(60);

// Merged into js-ipfs's defaults when the daemon creates the repo: ephemeral ports on loopback,
// no peers to dial and nothing to discover, so tests run side by side and never leave the machine.
constexpr std::string_view kInitConfig = R"({
  "Addresses": {"Swarm": [], "API": "/ip4/127.0.0.1/tcp/0", "Gateway": "/ip4/127.0.0.1/tcp/0",
                "RPC": "/ip4/127.0.0.1/tcp/0", "Delegates": []},
  "Bootstrap": [],
  "Discovery": {"MDNS": {"Enabled": false}, "webRTCStar": {"Enabled": false}}
})";

// "/ip4/127.0.0.1/tcp/40123/http" -> "http://127.0.0.1:40123"
std::string url_of_multiaddr(const std::string& multiaddr) {
  std::istringstream parts(multiaddr);
  std::string empty, ip_kind, ip, tcp, port;
  std::getline(parts, empty, '/');
  std::getline(parts, ip_kind, '/');
  std::getline(parts, ip, '/');
  std::getline(parts, tcp, '/');
  std::getline(parts, port, '/');
  if (ip_kind != "ip4" || tcp != "tcp" || port.empty())
    throw std::runtime_error("js-ipfs wrote an API address \"" + multiaddr + "\" (expected /ip4/IP/tcp/PORT/http)");
  return "http://" + ip + ":" + port;
}

}  // namespace

void write_random_file(const std::filesystem::path& path, std::uint64_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  std::string block;
  for (std::uint64_t written = 0; written < size; written += block.size()) {
    block.resize(static_cast<std::size_t>(std::min<std::uint64_t>(size - written, 1 << 20)));
    for (char& byte : block) byte = static_cast<char>(random());
    out.write(block.data(), static_cast<std::streamsize>(block.size()));
  }
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

std::filesystem::path require_test_servers() {
  const std::filesystem::path jsipfs = source_dir() / "tests" / "servers" / "node_modules" / ".bin" / "jsipfs";
  if (!std::filesystem::exists(jsipfs))
    throw std::runtime_error(jsipfs.string() +
                             " is missing: run scripts/install-test-servers.sh to install the test servers");
  return jsipfs;
}

IpfsNode::IpfsNode() : scratch_("ipfs-node") {
  const std::filesystem::path jsipfs = require_test_servers();
  const std::filesystem::path repo = scratch_ / "repo";
  const std::filesystem::path config = scratch_ / "init-config.json";
  write_text(config, std::string(kInitConfig));
  daemon_.emplace(std::vector<std::string>{jsipfs.string(), "daemon", "--offline", "--enable-preload=false",
                                           "--init-config", config.string()},
                  scratch_ / "daemon.log", std::vector<std::string>{"IPFS_PATH=" + repo.string()});

  // A throw leaves daemon_ to be killed by its destructor.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  const auto fail = [&](const std::string& why) {
    throw std::runtime_error("js-ipfs daemon: " + why + "; its log ends with:\n" + daemon_->output_tail());
  };
  // js-ipfs writes $IPFS_PATH/api once its HTTP API listens.
  while (!std::filesystem::exists(repo / "api")) {
    if (!daemon_->running()) fail("exited during start-up");
    if (std::chrono::steady_clock::now() > deadline) fail("no API address in " + repo.string() + "/api after 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string multiaddr = read_file(repo / "api");
  while (!multiaddr.empty() && (multiaddr.back() == '\n' || multiaddr.back() == ' ')) multiaddr.pop_back();
  try {
    api_url_ = url_of_multiaddr(multiaddr);
  } catch (const std::runtime_error& error) {
    fail(error.what());
  }

  // The file can appear a moment before the API answers.
  while (true) {
    try {
      if (net::perform({.method = "POST", .url = api_url_ + "/api/v0/version"}).status == 200) break;
    } catch (const Error&) {
    }
    if (std::chrono::steady_clock::now() > deadline) fail("the API at " + api_url_ + " did not answer within 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

IpfsNode& IpfsNode::shared() {
  static IpfsNode node;
  return node;
}

}  // namespace solver::test
