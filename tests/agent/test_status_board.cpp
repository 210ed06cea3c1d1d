// The status board's one-line summary, which the agent sends to systemd as STATUS=: it shows
// the step a slot has just trained, not the one of its last heartbeat or status.json write.
#include <catch2/catch.hpp>

#include "agent/detail/status_board.h"
#include "common/files.h"
#include "tests/test_support.h"

using solver::agent::detail::StatusBoard;
using solver::test::ScratchDir;

TEST_CASE("STATUS shows the step just trained, between two progress reports", "[agent][unit]") {
  ScratchDir dir("status-board");
  const std::atomic<bool> stop{false};
  StatusBoard board(dir / "status.json", {"rig", "http://127.0.0.1:1", "ab"}, {"cpu"}, stop);
  board.set_activity(0, "training", "t-1");
  board.set_progress(0, 0, 100);
  const std::string written = solver::read_file(dir / "status.json");

  for (std::int64_t step = 1; step <= 7; ++step) board.count_step(0, step, 32);
  CHECK_THAT(board.summary(), Catch::StartsWith("training task t-1 step 7/100 on cpu"));
  // The steps are not written one by one: status.json changes at the next progress report.
  CHECK(solver::read_file(dir / "status.json") == written);
  board.set_progress(0, 7, 100);
  CHECK(solver::read_file(dir / "status.json") != written);
}
