// The disk watch (agent/detail/disk_watch.h): a work dir below limits.min_free_disk_gb holds
// every slot through the agent's controls, apart from the operator's pause, and frees them only
// above the mark plus a tenth.
#include <catch2/catch.hpp>

#include "agent/detail/agent_controls.h"
#include "agent/detail/disk_watch.h"
#include "agent/metrics.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent;
using namespace solver::agent::detail;

TEST_CASE("a low disk holds every slot with its reason, apart from the operator's pause, until it is a tenth above the mark",
          "[agent][disk]") {
  test::ScratchDir dir("disk-watch");
  AgentControls controls({"cpu", "cuda:0"});
  Metrics metrics;
  controls.add_metrics(metrics);
  DiskWatch watch(dir.path(), controls);

  watch.apply(5'000'000'000, 0);  // no mark: never held
  CHECK_FALSE(controls.holds("cpu"));

  watch.apply(5'000'000'000, 10'000'000'000);
  for (const std::string slot : {"cpu", "cuda:0"}) {
    CHECK(controls.holds(slot));
    CHECK_FALSE(controls.may_claim(slot));
    CHECK_FALSE(controls.held_since(slot));  // no deadline: a task it holds is never given back for it
    CHECK(controls.state_of(slot) == "disk low: 5.0 GB free, limits.min_free_disk_gb is 10");
  }
  CHECK_THAT(metrics.exposition(), Catch::Contains("solver_agent_disk_low 1"));
  CHECK(controls.answer({{"command", "status"}})["disk_hold"] == "disk low: 5.0 GB free, limits.min_free_disk_gb is 10");

  controls.answer({{"command", "resume"}});  // the operator's resume is not the disk's
  CHECK(controls.holds("cpu"));
  watch.apply(10'500'000'000, 10'000'000'000);  // above the mark, but within its tenth
  CHECK(controls.holds("cpu"));
  watch.apply(11'000'000'000, 10'000'000'000);
  CHECK_FALSE(controls.holds("cpu"));
  CHECK(controls.state_of("cpu") == "");
  CHECK_THAT(metrics.exposition(), Catch::Contains("solver_agent_disk_low 0"));

  // A pause outlives the disk hold that came and went under it.
  controls.answer({{"command", "pause"}});
  watch.apply(1'000'000'000, 10'000'000'000);
  CHECK(controls.state_of("cpu") == "paused");
  watch.apply(20'000'000'000, 10'000'000'000);
  CHECK(controls.holds("cpu"));
  CHECK(controls.held_since("cpu"));
  controls.answer({{"command", "resume"}});
  CHECK_FALSE(controls.holds("cpu"));
}

TEST_CASE("the disk watch reads the work dir's free space", "[agent][disk]") {
  test::ScratchDir dir("disk-watch-real");
  AgentControls controls({"cpu"});
  DiskWatch watch(dir.path(), controls);
  watch.check(1'000'000ull * 1'000'000'000ull);  // 1 PB, the most limits.min_free_disk_gb allows
  REQUIRE(controls.disk_hold());
  CHECK_THAT(*controls.disk_hold(), Catch::StartsWith("disk low: ") && Catch::EndsWith("limits.min_free_disk_gb is 1000000"));
  watch.check(0);
  CHECK_FALSE(controls.disk_hold());
}
