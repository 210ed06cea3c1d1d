// `solver doctor` on this machine: a rig that can work (a market on 127.0.0.1, a folder store,
// a key of its own) passes with every check named; a rig with a key others can read, a market
// that is down, a store it cannot write and a GPU it does not have fails each of them, naming
// what to do, with exit status 1.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <map>

#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"

using namespace solver::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The rows of `solver doctor --json`, by check name.
std::map<std::string, json> rows_of(const CommandResult& result) {
  const json report = json::parse(result.output.substr(result.output.find('{')));
  std::map<std::string, json> rows;
  for (const json& row : report.at("checks")) rows[row.at("check").get<std::string>()] = row;
  return rows;
}

}  // namespace

TEST_CASE("doctor: a rig that can work passes every check, the market's clock and registration included", "[e2e][doctor]") {
  ScratchDir dir("doctor-healthy");
  Market market(dir.path(), free_port());
  const auto key = make_key(dir.path());
  const auto config = agent_config(dir.path(), "rig", market.url(), {"solve"});

  const CommandResult result = run_solver({"doctor", "--config", config.string(), "--key", key.string(), "--json"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
  std::map<std::string, json> rows = rows_of(result);
  for (const char* name : {"libtorch cuda", "self-test cpu", "work_dir", "cache_dir", "free space", "write rate", "key",
                           "market", "clock", "version", "registration", "store"}) {
    INFO(name);
    REQUIRE(rows.contains(name));
    CHECK(rows[name]["status"] == "OK");
  }
  CHECK_THAT(rows["clock"]["detail"].get<std::string>(), Catch::Contains("s against the market's clock"));
  CHECK_THAT(rows["store"]["detail"].get<std::string>(), Catch::Contains("wrote, read back and removed"));
  // The probe left nothing behind in the store.
  CHECK(std::filesystem::is_empty(dir / "published"));

  const CommandResult table = run_solver({"doctor", "--config", config.string(), "--key", key.string()});
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.output, Catch::Contains("this rig can take work"));
}

TEST_CASE("doctor: each broken part of a rig is a FAIL naming what to do, and the doctor exits 1", "[e2e][doctor]") {
  ScratchDir dir("doctor-broken");
  const auto key = make_key(dir.path());
  ::chmod(key.c_str(), 0644);
  write_text(dir / "published", "a file where the store's folder should be");
  const auto config = agent_config(dir.path(), "rig", "http://127.0.0.1:" + std::to_string(free_port()), {"solve"},
                                   {{"devices", json::array({"cuda:0"})}});

  const CommandResult result = run_solver({"doctor", "--config", config.string(), "--key", key.string(), "--json"});
  INFO(result.output);
  CHECK(result.exit_code == 1);
  std::map<std::string, json> rows = rows_of(result);
  const auto failed = [&](const std::string& name, const std::string& detail, const std::string& fix) {
    INFO(name);
    REQUIRE(rows.contains(name));
    CHECK(rows[name]["status"] == "FAIL");
    CHECK_THAT(rows[name]["detail"].get<std::string>(), Catch::Contains(detail));
    CHECK_THAT(rows[name]["fix"].get<std::string>(), Catch::Contains(fix));
  };
  failed("libtorch cuda", "need 1 CUDA device(s), but LibTorch can use 0", "fix \"devices\"");
  failed("key", "readable by others", "chmod 600");
  failed("market", "127.0.0.1", "check config.market");
  failed("store", "published", "check config.storage");

  const CommandResult table = run_solver({"doctor", "--config", config.string(), "--key", key.string()});
  CHECK(table.exit_code == 1);
  CHECK_THAT(table.output, Catch::Contains("FAIL") && Catch::Contains("this rig cannot take work"));
}

TEST_CASE("doctor and agent take the key from --key, else $SOLVER_KEY, else the config", "[e2e][doctor]") {
  ScratchDir dir("doctor-key-order");
  Market market(dir.path(), free_port());
  const auto config_key = make_key(dir.path());  // the config names this one (0600)
  const fs::path environment_key = dir / "environment.key";
  fs::copy_file(config_key, environment_key);
  ::chmod(environment_key.c_str(), 0644);  // so the key row tells which key the doctor read
  const auto config = agent_config(dir.path(), "rig", market.url(), {"solve"}, {{"key", config_key.string()}});
  const auto key_row = [&](const std::vector<std::string>& argv) {
    const CommandResult result = run_command(argv);
    INFO(result.output);
    return rows_of(result).at("key");
  };
  const std::string solver = solver_binary().string();

  const json from_config = key_row({solver, "doctor", "--config", config.string(), "--json"});
  CHECK(from_config["status"] == "OK");
  const json from_environment =
      key_row({"/usr/bin/env", "SOLVER_KEY=" + environment_key.string(), solver, "doctor", "--config", config.string(), "--json"});
  CHECK(from_environment["status"] == "FAIL");
  CHECK_THAT(from_environment["detail"].get<std::string>(), Catch::Contains("environment.key"));
  const json from_flag = key_row({"/usr/bin/env", "SOLVER_KEY=" + environment_key.string(), solver, "doctor", "--config",
                                  config.string(), "--key", config_key.string(), "--json"});
  CHECK(from_flag["status"] == "OK");
}
