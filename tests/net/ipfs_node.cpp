#include "tests/net/ipfs_node.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

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

std::string read_whole(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string log_tail(const std::filesystem::path& log) {
  const std::string text = read_whole(log);
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

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

IpfsNode::IpfsNode() : repo_(std::make_unique<ScratchDir>("ipfs-node")) {
  const std::filesystem::path jsipfs = require_test_servers();
  const std::filesystem::path repo = repo_->path() / "repo";
  const std::filesystem::path config = repo_->path() / "init-config.json";
  const std::filesystem::path log = repo_->path() / "daemon.log";
  write_text(config, std::string(kInitConfig));

  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  const std::string init_config = config.string();
  const std::string ipfs_path = "IPFS_PATH=" + repo.string();
  std::vector<char*> environment;
  for (char** entry = environ; *entry != nullptr; ++entry)
    if (!std::string_view(*entry).starts_with("IPFS_PATH=")) environment.push_back(*entry);
  environment.push_back(const_cast<char*>(ipfs_path.c_str()));
  environment.push_back(nullptr);
  const char* const argv[] = {jsipfs.c_str(), "daemon", "--offline", "--enable-preload=false",
                              "--init-config", init_config.c_str(), nullptr};

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed while starting js-ipfs");
  if (pid_ == 0) {
    // If the test process dies without running destructors, the daemon goes with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    ::execve(jsipfs.c_str(), const_cast<char* const*>(argv), environment.data());
    ::_exit(127);
  }

  // js-ipfs writes $IPFS_PATH/api once its HTTP API listens.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  const auto fail = [&](const std::string& why) {
    const std::string tail = log_tail(log);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    throw std::runtime_error("js-ipfs daemon: " + why + "; its log ends with:\n" + tail);
  };
  while (!std::filesystem::exists(repo / "api")) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("js-ipfs daemon exited during start-up; its log ends with:\n" + log_tail(log));
    }
    if (std::chrono::steady_clock::now() > deadline) fail("no API address in " + repo.string() + "/api after 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string multiaddr = read_whole(repo / "api");
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

IpfsNode::~IpfsNode() {
  if (pid_ <= 0) return;
  // SIGKILL at once: the repo is scratch and removed next, so a clean shutdown (about 1 s) buys nothing.
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

IpfsNode& IpfsNode::shared() {
  static IpfsNode node;
  return node;
}

}  // namespace solver::test
