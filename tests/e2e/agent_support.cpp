#include "tests/e2e/agent_support.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/e2e/e2e_support.h"

namespace solver::test {

using json = nlohmann::json;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

namespace {
std::vector<std::string> market_argv(const std::filesystem::path& dir, int port, int lease_seconds,
                                     const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv{solver_binary().string(), "market", "serve", "--db", (dir / "market.db").string(), "--port",
                                std::to_string(port), "--lease-seconds", std::to_string(lease_seconds)};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return argv;
}
}  // namespace

Market::Market(const std::filesystem::path& dir, int port, int lease_seconds, const std::vector<std::string>& extra_args)
    : process_(market_argv(dir, port, lease_seconds, extra_args), dir / "market.log") {
  url_ = process_.wait_for_match(R"(listening on (http://127\.0\.0\.1:[0-9]+))", 30).value_or("");
  INFO(process_.output());
  REQUIRE(!url_.empty());
}

std::filesystem::path agent_config(const std::filesystem::path& dir, const std::string& name, const std::string& url,
                                   const std::vector<std::string>& roles, const json& changes) {
  json config{{"market", url},
              {"name", name},
              {"work_dir", (dir / name).string()},
              {"cache_dir", (dir / "cache").string()},
              {"storage", {{"kind", "directory"}, {"path", (dir / "published").string()}}},
              {"allow_local_files", true},
              {"threads", 1},
              {"roles", roles},
              {"heartbeat_seconds", 1},
              {"poll", {{"min_seconds", 0.2}, {"max_seconds", 1}}},
              {"limits", {{"min_free_disk_gb", 0}}}};
  for (const auto& [field, value] : changes.items()) config[field] = value;
  const auto path = dir / (name + ".json");
  write_text(path, "// written by an agent test\n" + config.dump(2));
  return path;
}

std::vector<std::string> agent_argv(const std::filesystem::path& config, const std::filesystem::path& key,
                                    bool until_idle) {
  std::vector<std::string> argv{solver_binary().string(), "agent", "--config", config.string(), "--key", key.string()};
  if (until_idle) argv.push_back("--until-idle");
  return argv;
}

std::filesystem::path long_task(const std::filesystem::path& dir, const std::string& id) {
  return write_task(dir, id, small_task(id, 6000, 200));
}

json slot_status(const std::filesystem::path& work_dir) {
  const CommandResult shown = run_solver({"status", "--work-dir", work_dir.string(), "--json"});
  INFO(shown.output);
  REQUIRE(shown.exit_code == 0);
  return json::parse(shown.output)["slots"][0];
}

std::string submit(const std::string& url, const std::filesystem::path& key, const std::filesystem::path& task_file) {
  const CommandResult result = run_solver({"-q", "market", "submit", task_file.string(), "--market", url, "--key", key.string()});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  std::string id = result.output;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  return id.substr(id.rfind('\n') + 1);
}

json task_status(const std::string& url, const std::filesystem::path& key, const std::string& task_id) {
  const CommandResult result =
      run_solver({"-q", "market", "status", task_id, "--json", "--market", url, "--key", key.string()});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  return json::parse(result.output);
}

}  // namespace solver::test
