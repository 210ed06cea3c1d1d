// The task job's state machine (agent/detail/task_job.h) against a real market in-process on
// 127.0.0.1 and real training on Fashion-MNIST: each test leases a small task and drives the
// job through its phases, with a store or a market that misbehaves on the way.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>

#include "agent/detail/services.h"
#include "agent/detail/status_board.h"
#include "agent/detail/task_job.h"
#include "agent/detail/task_state.h"
#include "common/files.h"
#include "common/keys.h"
#include "market/server.h"
#include "net/fetch.h"
#include "net/market_client.h"
#include "net/store.h"
#include "tests/agent/agent_rig.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent;
using namespace solver::agent::detail;
using json = nlohmann::json;
using namespace std::chrono_literals;

using test::Rig;
using test::small_task;

namespace {

const SlotPlace kSlot{.index = 0, .device = "cpu"};

}  // namespace

TEST_CASE("a task job carries a leased task through training, bundled and published to completed", "[agent][torch]") {
  Rig rig("task-job-life");
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(small_task(1)), rig.tasks_dir(), rig.settings, services, kSlot);
  const std::filesystem::path folder = job.state().dir;

  REQUIRE(job.next() == TaskJob::Progress::Advanced);
  CHECK(TaskState::load(folder).phase == TaskPhase::Bundled);
  CHECK(std::filesystem::exists(folder / "bundle" / "manifest.json"));
  REQUIRE(job.next() == TaskJob::Progress::Advanced);
  const TaskState published = TaskState::load(folder);
  CHECK(published.phase == TaskPhase::Published);
  CHECK(std::filesystem::exists(std::filesystem::path(published.bundle_address) / "manifest.json"));
  REQUIRE(job.next() == TaskJob::Progress::Done);

  CHECK_FALSE(std::filesystem::exists(folder));
  CHECK(rig.market_state() == "completed");
  CHECK(rig.submitter->task_status(rig.task_id)["completion"]["bundle_address"] == published.bundle_address);
  CHECK(rig.status.tasks_completed() == 1);
}

TEST_CASE("a finished bundle whose store fails stays spooled in phase bundled, and a later job delivers it",
          "[agent][torch]") {
  Rig rig("task-job-spool");
  write_file_durably(rig.dir / "not-a-folder", "a file where the store's folder should be");
  net::DirectoryStore broken(rig.dir / "not-a-folder");
  AgentServices failing = rig.services(broken);
  TaskJob job = TaskJob::claim(rig.lease(small_task(2)), rig.tasks_dir(), rig.settings, failing, kSlot);
  const std::filesystem::path folder = job.state().dir;

  CHECK_FALSE(job.run());
  const TaskState spooled = TaskState::load(folder);
  CHECK(spooled.phase == TaskPhase::Bundled);
  CHECK(std::filesystem::exists(spooled.bundle_dir() / "manifest.json"));
  CHECK(rig.market_state() == "leased");

  // The next turn of the loop finds it on disk, as an agent that restarted would.
  net::DirectoryStore store(rig.dir / "store");
  AgentServices working = rig.services(store);
  const std::vector<TaskState> in_flight = tasks_in_flight(rig.tasks_dir());
  REQUIRE(in_flight.size() == 1);
  CHECK(TaskJob(in_flight.front(), rig.settings, working, kSlot).run());
  CHECK_FALSE(std::filesystem::exists(folder));
  CHECK(rig.market_state() == "completed");
}

TEST_CASE("a task cancelled by its submitter while spooled is dropped at completion, not completed", "[agent][torch]") {
  Rig rig("task-job-cancel");
  write_file_durably(rig.dir / "not-a-folder", "");
  net::DirectoryStore broken(rig.dir / "not-a-folder");
  AgentServices failing = rig.services(broken);
  TaskJob job = TaskJob::claim(rig.lease(small_task(3)), rig.tasks_dir(), rig.settings, failing, kSlot);
  REQUIRE_FALSE(job.run());
  rig.submitter->cancel_task(rig.task_id);

  net::DirectoryStore store(rig.dir / "store");
  AgentServices working = rig.services(store);
  CHECK(TaskJob(TaskState::load(job.state().dir), rig.settings, working, kSlot).run());
  CHECK_FALSE(std::filesystem::exists(job.state().dir));
  CHECK(rig.market_state() == "cancelled");
  CHECK(rig.status.tasks_completed() == 0);
}

TEST_CASE("a task whose data does not match its hash fails as the task's fault, not the rig's", "[agent][torch]") {
  Rig rig("task-job-bad-data");
  json task = small_task(4);
  task["dataset"]["train_labels"]["sha256"] = std::string(64, '0');
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(task), rig.tasks_dir(), rig.settings, services, kSlot);

  CHECK(job.next() == TaskJob::Progress::Done);
  CHECK_FALSE(std::filesystem::exists(job.state().dir));
  CHECK(rig.status.worker_faults_in_a_row() == 0);
  const json status = rig.submitter->task_status(rig.task_id);
  CHECK(status["state"] == "failed");
  CHECK_THAT(status["failure_reason"].get<std::string>(), Catch::Contains("train_labels: sha256 mismatch"));
}

TEST_CASE("a task left in training with an unusable journal trains again from step 0 and completes", "[agent][torch]") {
  Rig rig("task-job-torn");
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob claimed = TaskJob::claim(rig.lease(small_task(5)), rig.tasks_dir(), rig.settings, services, kSlot);
  // What a crash in the middle of the first checkpoint can leave.
  std::filesystem::create_directories(claimed.state().bundle_dir());
  write_file_durably(claimed.state().bundle_dir() / "journal.jsonl", "{\"step\": 20, \"sha256\": \"torn");

  CHECK(TaskJob(TaskState::load(claimed.state().dir), rig.settings, services, kSlot).run());
  CHECK(rig.market_state() == "completed");
}

TEST_CASE("a task stopped before its second checkpoint resumes from checkpoint 0 and completes", "[agent][torch]") {
  Rig rig("task-job-resume-0");
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob claimed = TaskJob::claim(rig.lease(small_task(6)), rig.tasks_dir(), rig.settings, services, kSlot);
  // A stop at once (SIGTERM, an upgrade's restart): training ends after its first step, with
  // only the initial state, checkpoint 0, in the journal.
  rig.stop = true;
  REQUIRE(claimed.next() == TaskJob::Progress::Waiting);
  rig.stop = false;

  test::LogCapture log;
  CHECK(TaskJob(TaskState::load(claimed.state().dir), rig.settings, services, kSlot).run());
  CHECK(rig.market_state() == "completed");
  const std::vector<std::string> lines = log.lines();
  CHECK(std::any_of(lines.begin(), lines.end(),
                    [](const std::string& line) { return line.find("resuming from checkpoint step=0") != std::string::npos; }));
}
