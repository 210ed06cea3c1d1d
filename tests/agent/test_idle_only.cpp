// The idle-only mode (config "idle_only", agent/detail/gpu_steward.h): its config and hour
// windows; the decision, with the time of day given; the steward holding a GPU another process
// uses on the fake NVML (fake_nvml_state.h); and a task job training on the CPU with its slot
// bound to fake GPU 0: a foreign process stops it (at a checkpoint, or at once past the
// deadline), the lease is heartbeated while held, and it resumes from its checkpoint and
// completes once the GPU is idle again.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <regex>
#include <string_view>
#include <thread>

#include "agent/agent_config.h"
#include "agent/detail/agent_controls.h"
#include "agent/detail/gpu_steward.h"
#include "agent/detail/services.h"
#include "agent/detail/task_job.h"
#include "agent/metrics.h"
#include "common/error.h"
#include "net/store.h"
#include "tests/agent/agent_rig.h"
#include "tests/agent/fake_nvml_state.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent;
using namespace solver::agent::detail;
using json = nlohmann::json;
using namespace std::chrono_literals;

using test::FakeGpu0;
using test::FakeNvmlState;
using test::await_next_reading;
using test::eventually;
using test::kFakeGpu0Uuid;

namespace {

const unsigned kOwnPid = static_cast<unsigned>(::getpid());
constexpr unsigned kForeignPid = 4194301;  // above the default pid_max: no process of this machine

constexpr int at(int hours, int minutes) { return 60 * hours + minutes; }

IdleOnly night_only() {
  return IdleOnly{.enabled = true, .stop_within_seconds = 60, .hours = {HourWindow{at(22, 0), at(8, 0)}}};
}

std::string config_error(const std::string& idle_only) {
  try {
    parse_agent_config(R"({"idle_only": )" + idle_only + "}", "/");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}


// A task of 10000 steps of the reference MLP (several seconds): long enough for a foreign process to
// appear while it trains.
json long_task(std::uint64_t seed, int checkpoint_every) {
  json task = test::small_task(seed);
  task["training"]["steps"] = 10000;
  task["proof"]["checkpoint_every"] = checkpoint_every;
  return task;
}

bool logged(const test::LogCapture& log, std::string_view text) {
  const std::vector<std::string> lines = log.lines();
  return std::ranges::any_of(lines, [&](const std::string& line) { return line.find(text) != std::string::npos; });
}

}  // namespace

TEST_CASE("idle_only is read from the config, off by default", "[agent]") {
  CHECK_FALSE(parse_agent_config("{}", "/").idle_only.enabled);
  const AgentConfig config = parse_agent_config(
      R"({"idle_only": {"enabled": true, "stop_within_seconds": 5, "hours": ["22:00-08:00", "12:00-13:30"]}})", "/");
  CHECK(config.idle_only.enabled);
  CHECK(config.idle_only.stop_within_seconds == 5);
  REQUIRE(config.idle_only.hours.size() == 2);
  CHECK(config.idle_only.hours[0].start_minute == at(22, 0));
  CHECK(config.idle_only.hours[0].end_minute == at(8, 0));
  CHECK(config.idle_only.hours[1].start_minute == at(12, 0));
  CHECK(config.idle_only.hours[1].end_minute == at(13, 30));
}

TEST_CASE("a malformed idle_only hour window is refused, naming the entry", "[agent]") {
  CHECK(config_error(R"({"hours": ["22:00-08:00", "25:00-08:00"]})")
            .find("config.idle_only.hours[1]: expected \"HH:MM-HH:MM\" in local time") != std::string::npos);
  CHECK(config_error(R"({"hours": ["22:00"]})").find("config.idle_only.hours[0]: expected \"HH:MM-HH:MM\"") !=
        std::string::npos);
  CHECK(config_error(R"({"hours": ["22:60-08:00"]})").find("config.idle_only.hours[0]") != std::string::npos);
  CHECK(config_error(R"({"hours": ["2200-0800xx"]})").find("config.idle_only.hours[0]") != std::string::npos);
  CHECK(config_error(R"({"hours": [22]})").find("config.idle_only.hours[0]: expected \"HH:MM-HH:MM\"") !=
        std::string::npos);
  CHECK(config_error(R"({"hours": ["08:00-08:00"]})").find("config.idle_only.hours[0]: \"08:00-08:00\" starts where it ends") !=
        std::string::npos);
  CHECK(config_error(R"({"stop_within_seconds": -1})").find("config.idle_only.stop_within_seconds") != std::string::npos);
  CHECK(config_error(R"({"enable": true})").find("config.idle_only") != std::string::npos);  // a typo is not ignored
}

TEST_CASE("an hour window across midnight holds both sides of it, up to but not including its end", "[agent]") {
  const HourWindow night{at(22, 0), at(8, 0)};
  CHECK(night.contains(at(22, 0)));
  CHECK(night.contains(at(23, 59)));
  CHECK(night.contains(at(0, 0)));
  CHECK(night.contains(at(7, 59)));
  CHECK_FALSE(night.contains(at(8, 0)));
  CHECK_FALSE(night.contains(at(21, 59)));
  const HourWindow lunch{at(12, 0), at(13, 30)};
  CHECK(lunch.contains(at(12, 0)));
  CHECK_FALSE(lunch.contains(at(13, 30)));
  CHECK_FALSE(lunch.contains(at(11, 59)));
  CHECK(IdleOnly{}.inside_hours(at(15, 0)));  // no hours: every hour
}

TEST_CASE("idle_only holds a GPU with another process on it, or outside its hours, and never when off", "[agent]") {
  const IdleOnly settings = night_only();
  CHECK(idle_only_hold(settings, "cuda:0", {}, at(23, 0)).empty());
  CHECK(idle_only_hold(settings, "cuda:0", {}, at(12, 0)) == "outside idle_only.hours (22:00-08:00, local time)");
  CHECK(idle_only_hold(settings, "cuda:0", {4242, 4243}, at(23, 0)) ==
        "cuda:0 is in use by another process (pid 4242, 4243)");
  CHECK(idle_only_hold(IdleOnly{.enabled = true}, "cuda:0", {}, at(12, 0)).empty());
  CHECK(idle_only_hold(IdleOnly{}, "cuda:0", {4242}, at(12, 0)).empty());
}

TEST_CASE("this agent's own process on its GPU is not a foreign one", "[agent]") {
  hardware::GpuInfo gpu;
  CHECK(foreign_processes(gpu, kOwnPid).empty());  // NVML could not list them
  gpu.process_ids = std::vector<unsigned>{kOwnPid};
  CHECK(foreign_processes(gpu, kOwnPid).empty());
  gpu.process_ids = std::vector<unsigned>{17, kOwnPid};
  CHECK(foreign_processes(gpu, kOwnPid) == std::vector<unsigned>{17});
}

TEST_CASE("the steward holds a GPU while another process uses it, not for its own, and lets it go once idle",
          "[agent]") {
  test::ScratchDir dir("idle-steward");
  FakeNvmlState fake(dir / "nvml-state");
  fake.set(FakeGpu0{.processes = {kOwnPid}});
  AgentControls controls({"cuda:0"});
  Metrics metrics;
  controls.add_metrics(metrics);
  GpuSteward steward({{"cuda:0", kFakeGpu0Uuid}}, ThermalLimits{}, controls, SOLVER_FAKE_NVML,
                     IdleOnly{.enabled = true});
  CHECK(controls.may_claim("cuda:0"));

  fake.set(FakeGpu0{.processes = {kOwnPid}, .graphics_processes = {kForeignPid}});
  await_next_reading();
  CHECK_FALSE(controls.may_claim("cuda:0"));
  CHECK(controls.idle_hold_since("cuda:0").has_value());
  CHECK(controls.state_of("cuda:0") ==
        "idle-only: cuda:0 is in use by another process (pid " + std::to_string(kForeignPid) + ")");
  CHECK(controls.answer({{"command", "status"}})["idle_held"]["cuda:0"].is_string());
  CHECK(metrics.exposition().find("solver_slot_idle_hold{slot=\"0\",device=\"cuda:0\"} 1") != std::string::npos);
  controls.answer({{"command", "resume"}});
  CHECK_FALSE(controls.may_claim("cuda:0"));  // the operator's resume is not the GPU's idleness

  fake.set(FakeGpu0{});
  await_next_reading();
  CHECK(controls.may_claim("cuda:0"));
  CHECK(metrics.exposition().find("solver_slot_idle_hold{slot=\"0\",device=\"cuda:0\"} 0") != std::string::npos);
}

TEST_CASE("the steward holds an idle GPU outside idle_only.hours and lets it work inside them", "[agent]") {
  test::ScratchDir dir("idle-hours");
  FakeNvmlState fake(dir / "nvml-state");
  AgentControls controls({"cuda:0"});
  std::atomic<int> now{at(12, 0)};
  GpuSteward steward({{"cuda:0", kFakeGpu0Uuid}}, ThermalLimits{}, controls, SOLVER_FAKE_NVML, night_only(),
                     [&] { return now.load(); });
  CHECK(controls.state_of("cuda:0") == "idle-only: outside idle_only.hours (22:00-08:00, local time)");
  now = at(22, 30);
  await_next_reading();
  CHECK(controls.may_claim("cuda:0"));
}

// ---- a task job on a slot bound to fake GPU 0, training on the CPU ----

TEST_CASE("a foreign process on the slot's GPU stops the task at its next checkpoint, the lease is heartbeated, "
          "and it completes once the GPU is idle",
          "[agent][torch]") {
  test::Rig rig("idle-job-checkpoint");
  test::LogCapture log;
  FakeNvmlState fake(rig.dir / "nvml-state");
  fake.set(FakeGpu0{.processes = {kOwnPid}});
  rig.settings.idle_only = IdleOnly{.enabled = true, .stop_within_seconds = 600};
  GpuSteward steward({{"cpu", kFakeGpu0Uuid}}, ThermalLimits{}, rig.controls, SOLVER_FAKE_NVML, rig.settings.idle_only);
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(long_task(31, 20)), rig.tasks_dir(), rig.settings, services,
                               SlotPlace{.index = 0, .device = "cpu", .steward = &steward});
  std::atomic<bool> completed{false};
  std::thread runner([&] { completed = job.run(); });
  const auto progress = [&] { return rig.submitter->task_status(rig.task_id)["progress"]; };
  const auto lease_expiry = [&] { return rig.submitter->task_status(rig.task_id)["lease"]["expires_at"].get<std::int64_t>(); };
  REQUIRE(eventually([&] { return !progress().is_null() && progress()["step"] > 0; }));

  // A foreign process appears while it trains: the training goes on to its next checkpoint, well
  // within the deadline, and stops there.
  fake.set(FakeGpu0{.processes = {kOwnPid, kForeignPid}});
  std::string held_at;  // the checkpoint it stopped at, from its log line
  REQUIRE(eventually([&] {
    std::smatch match;
    for (const std::string& line : log.lines())
      if (std::regex_search(line, match, std::regex("stopped at checkpoint step ([0-9]+) of 10000 while held \\(idle-only: "
                                                    "cpu is in use by another process")))
        held_at = match[1];
    return !held_at.empty();
  }));
  CHECK(std::stoi(held_at) % 20 == 0);
  CHECK(rig.controls.state_of("cpu").starts_with("idle-only: cpu is in use by another process"));
  REQUIRE(eventually([&] { return progress()["step"] == std::stoi(held_at); }));  // the held task's heartbeats
  const json before = progress();
  const std::int64_t expiry_before = lease_expiry();
  std::this_thread::sleep_for(3s);
  CHECK(progress()["step"] == before["step"]);  // held at its checkpoint
  CHECK(progress()["updated_at"].get<std::int64_t>() > before["updated_at"].get<std::int64_t>());
  CHECK(lease_expiry() > expiry_before);
  CHECK(rig.market_state() == "leased");

  fake.set(FakeGpu0{.processes = {kOwnPid}});
  runner.join();
  CHECK(completed);
  CHECK(rig.market_state() == "completed");
  CHECK(rig.controls.may_claim("cpu"));
  CHECK(logged(log, "resuming from checkpoint step=" + held_at));
}

TEST_CASE("past idle_only.stop_within_seconds the task stops at once and retrains from its last checkpoint",
          "[agent][torch]") {
  test::Rig rig("idle-job-deadline");
  test::LogCapture log;
  FakeNvmlState fake(rig.dir / "nvml-state");
  rig.settings.idle_only = IdleOnly{.enabled = true, .stop_within_seconds = 0};
  GpuSteward steward({{"cpu", kFakeGpu0Uuid}}, ThermalLimits{}, rig.controls, SOLVER_FAKE_NVML, rig.settings.idle_only);
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(long_task(32, 1000)), rig.tasks_dir(), rig.settings, services,
                               SlotPlace{.index = 0, .device = "cpu", .steward = &steward});
  std::atomic<bool> completed{false};
  std::thread runner([&] { completed = job.run(); });
  REQUIRE(eventually([&] {
    const json progress = rig.submitter->task_status(rig.task_id)["progress"];
    return !progress.is_null() && progress["step"] > 0;
  }));

  // With no time left, it stops at once, giving up the steps since its last checkpoint (of every 1000).
  fake.set(FakeGpu0{.processes = {kForeignPid}});
  REQUIRE(eventually([&] { return logged(log, "while held (idle-only: cpu is in use by another process"); }));
  CHECK(logged(log, "within idle_only.stop_within_seconds; steps "));
  CHECK(rig.market_state() == "leased");

  fake.set(FakeGpu0{});
  runner.join();
  CHECK(completed);
  CHECK(rig.market_state() == "completed");
  CHECK(logged(log, "are retrained from checkpoint step"));
}
