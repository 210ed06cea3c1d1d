// The GPU steward (agent/detail/gpu_steward.h): the thermal gate's hysteresis and throttle
// timing on made-up readings; quarantine on the fake NVML, whose GPU 0 a test heats, breaks or
// unplugs at run time (fake_nvml_state.h); and a task job training on the CPU with its slot
// bound to fake GPU 0, against the in-process market: it waits between steps while too hot,
// and holds a task it is given while quarantined, until `clear`.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <thread>

#include "agent/detail/agent_controls.h"
#include "agent/detail/gpu_steward.h"
#include "agent/detail/services.h"
#include "agent/detail/task_job.h"
#include "agent/metrics.h"
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

constexpr std::uint64_t kHwThermalSlowdown = 0x40;
constexpr std::uint64_t kSwPowerCap = 0x4;

hardware::GpuInfo reading(int celsius, std::uint64_t throttle_reasons = 0) {
  hardware::GpuInfo gpu;
  gpu.temperature_c = celsius;
  gpu.throttle_reasons = throttle_reasons;
  return gpu;
}

// Fake GPU 0 as `initial` says, watched for the slot on cuda:0, with the controls and metrics its
// steward reports to.
struct WatchedFakeGpu {
  explicit WatchedFakeGpu(const std::string& name, const FakeGpu0& initial = {}) : dir(name), fake(dir / "nvml-state") {
    fake.set(initial);
    controls.add_metrics(metrics);
    steward.emplace(std::vector<WatchedGpu>{{"cuda:0", kFakeGpu0Uuid}}, ThermalLimits{}, controls, SOLVER_FAKE_NVML);
  }
  test::ScratchDir dir;
  FakeNvmlState fake;
  AgentControls controls{{"cuda:0"}};
  Metrics metrics;
  std::optional<GpuSteward> steward;  // last: it reads the fake and reports to the others until it is gone
};

}  // namespace

TEST_CASE("the thermal gate pauses at the ceiling and resumes only at or below the lower mark", "[agent]") {
  ThermalGate gate(ThermalLimits{.max_celsius = 85, .resume_celsius = 75, .max_throttled_seconds = 60});
  const auto now = ThermalGate::Clock::now();
  CHECK(gate.update("cuda:0", reading(84), now).empty());
  const std::string hot = gate.update("cuda:0", reading(85), now);
  CHECK(hot.find("cuda:0 at 85 °C (thermal.max_celsius 85)") != std::string::npos);
  CHECK_FALSE(gate.update("cuda:0", reading(80), now).empty());
  CHECK_FALSE(gate.update("cuda:0", reading(76), now).empty());
  CHECK(gate.update("cuda:0", reading(75), now).empty());
  CHECK(gate.update("cuda:0", reading(84), now).empty());  // below the ceiling again: works on
}

TEST_CASE("a heat or power slowdown pauses only once it lasted longer than max_throttled_seconds", "[agent]") {
  ThermalGate gate(ThermalLimits{.max_celsius = 85, .resume_celsius = 75, .max_throttled_seconds = 60});
  const auto start = ThermalGate::Clock::now();
  CHECK(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start).empty());
  CHECK(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start + 60s).empty());
  const std::string slowed = gate.update("cuda:0", reading(70, kHwThermalSlowdown), start + 61s);
  CHECK(slowed.find("slowed by hw_thermal_slowdown for 61 s (thermal.max_throttled_seconds 60") != std::string::npos);
  // Cool but still slowed: it waits on; slowed no more: it goes on.
  CHECK_FALSE(gate.update("cuda:0", reading(60, kHwThermalSlowdown), start + 62s).empty());
  CHECK(gate.update("cuda:0", reading(60), start + 63s).empty());
}

TEST_CASE("a slowdown that stops restarts the throttle clock", "[agent]") {
  ThermalGate gate(ThermalLimits{.max_celsius = 85, .resume_celsius = 75, .max_throttled_seconds = 60});
  const auto start = ThermalGate::Clock::now();
  CHECK(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start).empty());
  CHECK(gate.update("cuda:0", reading(70), start + 50s).empty());
  CHECK(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start + 55s).empty());
  CHECK(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start + 115s).empty());  // 60 s: not longer
  CHECK_FALSE(gate.update("cuda:0", reading(70, kHwThermalSlowdown), start + 116s).empty());
}

TEST_CASE("a GPU held at its power cap is working as it should and never pauses", "[agent]") {
  ThermalGate gate(ThermalLimits{.max_celsius = 85, .resume_celsius = 75, .max_throttled_seconds = 60});
  const auto start = ThermalGate::Clock::now();
  CHECK(gate.update("cuda:0", reading(80, kSwPowerCap), start).empty());
  CHECK(gate.update("cuda:0", reading(80, kSwPowerCap), start + 3600s).empty());
}

TEST_CASE("a CPU slot has no GPU for the steward to watch", "[agent]") {
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory(SOLVER_FAKE_NVML);
  REQUIRE(inventory.gpus.size() == 2);
  CHECK(GpuSteward::gpus_of_slot("cpu", inventory).empty());
  AgentControls controls({"cpu"});
  GpuSteward steward({}, ThermalLimits{}, controls, SOLVER_FAKE_NVML);
  CHECK(steward.check().empty());
}

TEST_CASE("the steward reads NVML at most every few seconds and pauses a GPU over its ceiling", "[agent]") {
  test::ScratchDir dir("steward-heat");
  FakeNvmlState fake(dir / "nvml-state");
  AgentControls controls({"cuda:0"});
  GpuSteward steward({{"cuda:0", kFakeGpu0Uuid}}, ThermalLimits{}, controls, SOLVER_FAKE_NVML);
  CHECK(steward.check().empty());
  fake.set(FakeGpu0{.temperature_c = 90});
  CHECK(steward.check().empty());  // not read again yet
  await_next_reading();
  CHECK(steward.check().find("cuda:0 at 90 °C") != std::string::npos);
  CHECK(controls.may_claim("cuda:0"));  // too hot is no fault: nothing is quarantined
}

TEST_CASE("a GPU with uncorrected ECC errors is quarantined until cleared, and again on a new error", "[agent]") {
  WatchedFakeGpu watched("steward-ecc");
  FakeNvmlState& fake = watched.fake;
  AgentControls& controls = watched.controls;
  Metrics& metrics = watched.metrics;
  CHECK(controls.may_claim("cuda:0"));

  fake.set(FakeGpu0{.ecc_uncorrected = 1});
  await_next_reading();
  CHECK_FALSE(controls.may_claim("cuda:0"));
  CHECK(controls.state_of("cuda:0") == "quarantined: cuda:0 has 1 uncorrected ECC error(s) since the driver loaded");
  CHECK(controls.answer({{"command", "status"}})["quarantined"]["cuda:0"] ==
        "cuda:0 has 1 uncorrected ECC error(s) since the driver loaded");
  CHECK(metrics.exposition().find("solver_slot_quarantined{slot=\"0\",device=\"cuda:0\",reason=\"ecc_uncorrected\"} 1") !=
        std::string::npos);

  CHECK(controls.answer({{"command", "clear"}, {"device", "cuda:0"}})["message"] == "cuda:0 cleared: its slot claims again");
  CHECK(controls.may_claim("cuda:0"));
  CHECK(metrics.exposition().find("solver_slot_quarantined{slot=\"0\",device=\"cuda:0\",reason=\"\"} 0") != std::string::npos);
  await_next_reading();
  CHECK(controls.may_claim("cuda:0"));  // the operator accepted that count

  fake.set(FakeGpu0{.ecc_uncorrected = 2});
  await_next_reading();
  CHECK_FALSE(controls.may_claim("cuda:0"));
}

TEST_CASE("a GPU NVML no longer lists is quarantined as lost", "[agent]") {
  WatchedFakeGpu watched("steward-lost", FakeGpu0{.gpu_count = 0});
  AgentControls& controls = watched.controls;
  Metrics& metrics = watched.metrics;
  CHECK(controls.state_of("cuda:0").starts_with("quarantined: NVML no longer lists cuda:0 (" + std::string(kFakeGpu0Uuid)));
  CHECK(metrics.exposition().find("solver_slot_quarantined{slot=\"0\",device=\"cuda:0\",reason=\"lost\"} 1") !=
        std::string::npos);
}

TEST_CASE("a GPU whose failing memory waits for a reset, or could not be remapped, is quarantined once for each",
          "[agent]") {
  WatchedFakeGpu watched("steward-memory");
  FakeNvmlState& fake = watched.fake;
  AgentControls& controls = watched.controls;
  Metrics& metrics = watched.metrics;
  CHECK(controls.may_claim("cuda:0"));

  fake.set(FakeGpu0{.row_remap_pending = true});
  await_next_reading();
  CHECK(controls.state_of("cuda:0") ==
        "quarantined: cuda:0 has failing memory that is repaired (pages retired or rows remapped) only at the next GPU reset");
  CHECK(metrics.exposition().find("reason=\"memory_repair_pending\"} 1") != std::string::npos);
  controls.answer({{"command", "clear"}, {"device", "cuda:0"}});
  await_next_reading();
  CHECK(controls.may_claim("cuda:0"));  // the same fault, already seen: cleared means the operator accepted it

  fake.set(FakeGpu0{.row_remap_pending = true, .row_remap_failed = true});
  await_next_reading();
  CHECK_THAT(controls.state_of("cuda:0"), Catch::Contains("could not remap a failing memory row"));
  CHECK(metrics.exposition().find("reason=\"row_remap_failed\"} 1") != std::string::npos);
}

// ---- a task job on a slot bound to fake GPU 0, training on the CPU ----

TEST_CASE("a slot whose GPU crosses the temperature ceiling stops stepping, keeps its lease, and completes once cooled",
          "[agent][torch]") {
  test::Rig rig("steward-job-heat");
  FakeNvmlState fake(rig.dir / "nvml-state");
  fake.set(FakeGpu0{.temperature_c = 90});
  GpuSteward steward({{"cpu", kFakeGpu0Uuid}}, ThermalLimits{}, rig.controls, SOLVER_FAKE_NVML);
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(test::small_task(21)), rig.tasks_dir(), rig.settings, services,
                               SlotPlace{.index = 0, .device = "cpu", .steward = &steward});
  std::atomic<bool> completed{false};
  std::thread runner([&] { completed = job.run(); });

  const auto progress = [&] { return rig.submitter->task_status(rig.task_id)["progress"]; };
  const auto lease_expiry = [&] { return rig.submitter->task_status(rig.task_id)["lease"]["expires_at"].get<std::int64_t>(); };
  // Step 1 is trained, then the training waits between steps.
  REQUIRE(eventually([&] { return !progress().is_null() && progress()["step"] == 1; }));
  CHECK(eventually([&] { return rig.status.summary().find("cooling: cpu at 90 °C") != std::string::npos; }));
  const json before = progress();
  const std::int64_t expiry_before = lease_expiry();
  std::this_thread::sleep_for(3s);
  CHECK(progress()["step"] == 1);
  CHECK(progress()["updated_at"].get<std::int64_t>() > before["updated_at"].get<std::int64_t>());  // heartbeats go on
  CHECK(lease_expiry() > expiry_before);

  fake.set(FakeGpu0{.temperature_c = 80});  // below the ceiling, above the resume mark: it waits on
  std::this_thread::sleep_for(GpuSteward::kReadInterval + 1s);
  CHECK(progress()["step"] == 1);
  CHECK(rig.status.summary().find("cooling: cpu cooling down (80 °C)") != std::string::npos);

  fake.set(FakeGpu0{.temperature_c = 70});
  runner.join();
  CHECK(completed);
  CHECK(rig.market_state() == "completed");
}

TEST_CASE("a slot whose GPU is quarantined when its task comes holds the task, before any step, with its lease, and "
          "clear lets it train", "[agent][torch]") {
  test::Rig rig("steward-job-ecc");
  FakeNvmlState fake(rig.dir / "nvml-state");
  fake.set(FakeGpu0{.ecc_uncorrected = 1});
  GpuSteward steward({{"cpu", kFakeGpu0Uuid}}, ThermalLimits{}, rig.controls, SOLVER_FAKE_NVML);
  // The steward's first reading, made before it returns, quarantined the GPU.
  CHECK_FALSE(rig.controls.may_claim("cpu"));
  CHECK(rig.controls.state_of("cpu") == "quarantined: cpu has 1 uncorrected ECC error(s) since the driver loaded");
  net::DirectoryStore store(rig.dir / "store");
  AgentServices services = rig.services(store);
  TaskJob job = TaskJob::claim(rig.lease(test::small_task(22)), rig.tasks_dir(), rig.settings, services,
                               SlotPlace{.index = 0, .device = "cpu", .steward = &steward});

  std::atomic<bool> completed{false};
  std::thread runner([&] { completed = job.run(); });
  std::this_thread::sleep_for(2s);
  CHECK(rig.submitter->task_status(rig.task_id)["progress"]["step"] == 0);  // held, heartbeating, nothing trained
  CHECK(rig.market_state() == "leased");

  rig.controls.answer({{"command", "clear"}, {"device", "cpu"}});
  runner.join();
  CHECK(completed);
  CHECK(rig.market_state() == "completed");
  CHECK(rig.controls.may_claim("cpu"));
}
