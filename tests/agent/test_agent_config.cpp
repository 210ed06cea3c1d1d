// The agent config's defaults that depend on the machine (with_visible_devices): a config that
// names no devices trains on every GPU LibTorch sees, one task slot each, or on the CPU.
#include <catch2/catch.hpp>

#include "agent/agent_config.h"
#include "common/files.h"
#include "tests/test_support.h"

using solver::agent::AgentConfig;
using solver::agent::parse_agent_config;
using solver::agent::with_visible_devices;

namespace {

AgentConfig parsed(const std::string& text) { return parse_agent_config(text, "/"); }

}  // namespace

TEST_CASE("a config naming no devices uses every visible GPU, one task slot each", "[agent]") {
  const AgentConfig config = with_visible_devices(parsed("{}"), 3);
  CHECK(config.devices == std::vector<std::string>{"cuda:0", "cuda:1", "cuda:2"});
  CHECK(config.tasks_at_once == 3);
}

TEST_CASE("a config naming no devices trains on the CPU when LibTorch sees no GPU", "[agent]") {
  const AgentConfig config = with_visible_devices(parsed("{}"), 0);
  CHECK(config.devices == std::vector<std::string>{"cpu"});
  CHECK(config.tasks_at_once == 1);
}

TEST_CASE("devices and tasks_at_once named in the config are kept whatever the rig has", "[agent]") {
  const AgentConfig named = with_visible_devices(parsed(R"({"devices": ["cuda:1"]})"), 4);
  CHECK(named.devices == std::vector<std::string>{"cuda:1"});
  CHECK(named.tasks_at_once == 1);

  const AgentConfig slots = with_visible_devices(parsed(R"({"limits": {"tasks_at_once": 2}})"), 4);
  CHECK(slots.devices == std::vector<std::string>{"cuda:0", "cuda:1", "cuda:2", "cuda:3"});
  CHECK(slots.tasks_at_once == 2);

  const AgentConfig cpu = with_visible_devices(parsed(R"({"devices": ["cpu"]})"), 2);
  CHECK(cpu.devices == std::vector<std::string>{"cpu"});
  CHECK(cpu.tasks_at_once == 1);
}

TEST_CASE("limits.keep_bundles and limits.bundle_max_age_days are read and a bad value names its field", "[agent]") {
  const AgentConfig defaults = parsed("{}");
  CHECK(defaults.keep_bundles == 20);
  CHECK(defaults.bundle_max_age_seconds == 30 * 86400.0);
  const AgentConfig set = parsed(R"({"limits": {"keep_bundles": 5, "bundle_max_age_days": 0}})");
  CHECK(set.keep_bundles == 5);
  CHECK(set.bundle_max_age_seconds == 0.0);
  CHECK_THROWS_WITH(parsed(R"({"limits": {"keep_bundles": -1}})"), Catch::Contains("config.limits.keep_bundles"));
  CHECK_THROWS_WITH(parsed(R"({"limits": {"keep_bundles": 2.5}})"), Catch::Contains("config.limits.keep_bundles"));
  CHECK_THROWS_WITH(parsed(R"({"limits": {"bundle_max_age_days": 1e30}})"),
                    Catch::Contains("config.limits.bundle_max_age_days"));
}

TEST_CASE("thermal limits are read, and a resume mark not below the ceiling names its field", "[agent]") {
  const AgentConfig defaults = parsed("{}");
  CHECK(defaults.thermal.max_celsius == 85.0);
  CHECK(defaults.thermal.resume_celsius == 75.0);
  CHECK(defaults.thermal.max_throttled_seconds == 60.0);
  const AgentConfig set = parsed(R"({"thermal": {"max_celsius": 80, "resume_celsius": 70, "max_throttled_seconds": 30}})");
  CHECK(set.thermal.max_celsius == 80.0);
  CHECK(set.thermal.resume_celsius == 70.0);
  CHECK(set.thermal.max_throttled_seconds == 30.0);
  CHECK_THROWS_WITH(parsed(R"({"thermal": {"max_celsius": 80, "resume_celsius": 80}})"),
                    Catch::Contains("config.thermal.resume_celsius"));
  CHECK_THROWS_WITH(parsed(R"({"thermal": {"max_celsius": 400}})"), Catch::Contains("config.thermal.max_celsius"));
  CHECK_THROWS_WITH(parsed(R"({"thermal": {"max_throttled_seconds": 0}})"),
                    Catch::Contains("config.thermal.max_throttled_seconds"));
}

TEST_CASE("the example configs parse", "[agent]") {
  for (const char* example : {"configs/agent.json", "packaging/agent.json"}) {
    INFO(example);
    CHECK_NOTHROW(parse_agent_config(solver::read_file(solver::test::source_dir() / example), "/"));
  }
}
