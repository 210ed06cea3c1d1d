// A task in flight on disk (agent/detail/task_state.h): what the agent reads back after a crash.
#include <catch2/catch.hpp>

#include "agent/detail/task_state.h"
#include "common/error.h"
#include "common/files.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent::detail;

namespace {

TaskState bundled_state(const std::filesystem::path& tasks_dir, const std::string& task_id) {
  TaskState state;
  state.task_id = task_id;
  state.lease_id = "0123456789abcdef0123456789abcdef";
  state.task = {{"id", "t"}, {"seed", 7}};
  state.task_sha256 = std::string(64, 'a');
  state.lease_seconds = 300;
  state.phase = TaskPhase::Bundled;
  state.manifest_sha256 = std::string(64, 'b');
  state.manifest_signature = "c0ffee";
  state.dir = tasks_dir / task_id;
  std::filesystem::create_directories(state.dir);
  return state;
}

}  // namespace

TEST_CASE("a task's state reads back as it was saved, phase included", "[agent][unit]") {
  test::ScratchDir dir("task-state");
  const TaskState saved = bundled_state(dir.path(), "task-a");
  saved.save();
  const TaskState loaded = TaskState::load(saved.dir);
  CHECK(loaded.task_id == "task-a");
  CHECK(loaded.phase == TaskPhase::Bundled);
  CHECK(loaded.task == saved.task);
  CHECK(loaded.manifest_signature == "c0ffee");
  CHECK(loaded.bundle_dir() == saved.dir / "bundle");
  CHECK(loaded.shards == 0);  // one per device of the slot, until a step runs out of memory
}

TEST_CASE("a task's shard count, raised after running out of memory, survives a restart", "[agent][unit]") {
  test::ScratchDir dir("task-state-shards");
  TaskState saved = bundled_state(dir.path(), "task-a");
  saved.shards = 4;
  saved.save();
  CHECK(TaskState::load(saved.dir).shards == 4);
}

TEST_CASE("a state file with a phase this agent does not know is refused, naming the file and the phase", "[agent][unit]") {
  test::ScratchDir dir("task-state-phase");
  const TaskState saved = bundled_state(dir.path(), "task-a");
  saved.save();
  std::string text = read_file(saved.dir / "state.json");
  text.replace(text.find("\"bundled\""), 9, "\"uploaded\"");
  write_file_durably(saved.dir / "state.json", text);
  try {
    TaskState::load(saved.dir);
    FAIL("a state in an unknown phase was accepted");
  } catch (const Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("state.json") && Catch::Contains("unknown phase \"uploaded\""));
  }
}

TEST_CASE("the tasks in flight skip a damaged folder and one holding another task's state, and keep them", "[agent][unit]") {
  test::ScratchDir dir("task-state-scan");
  bundled_state(dir.path(), "good").save();
  TaskState moved = bundled_state(dir.path(), "other");
  moved.dir = dir.path() / "elsewhere";
  std::filesystem::create_directories(moved.dir);
  moved.save();  // the state of task "other" in folder "elsewhere"
  std::filesystem::create_directories(dir.path() / "torn");
  write_file_durably(dir.path() / "torn" / "state.json", "{\"schema\": \"solver.agent-task/1\", \"task_id\": ");

  const std::vector<TaskState> found = tasks_in_flight(dir.path());
  REQUIRE(found.size() == 1);
  CHECK(found.front().task_id == "good");
  CHECK(std::filesystem::exists(dir.path() / "torn" / "state.json"));
  CHECK(std::filesystem::exists(dir.path() / "elsewhere" / "state.json"));
}
