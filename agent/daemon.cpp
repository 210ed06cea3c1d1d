// The agent's loop (see daemon.h): slots on their own threads, each taking its share of the
// tasks left in flight, then new tasks, then verifications. The work itself is in detail/:
// a task job per task (task_job.h), verification jobs, the error policy, the status board.
// Every market call goes through MarketClient's retries; what still fails is logged and tried
// again on a later turn, so a market or store that is down delays work but never crashes the agent.
#include "agent/daemon.h"

#include <fmt/format.h>

#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "agent/control_client.h"
#include "agent/detail/agent_controls.h"
#include "agent/detail/control_server.h"
#include "agent/detail/disk_watch.h"
#include "agent/detail/error_policy.h"
#include "agent/detail/gpu_steward.h"
#include "agent/detail/metrics_server.h"
#include "agent/detail/pruner.h"
#include "agent/doctor.h"
#include "agent/detail/rig.h"
#include "agent/detail/service_manager.h"
#include "agent/detail/services.h"
#include "agent/detail/status_board.h"
#include "agent/detail/task_job.h"
#include "agent/detail/task_state.h"
#include "agent/detail/verification_job.h"
#include "agent/detail/version_gate.h"
#include "agent/stores.h"
#include "common/error.h"
#include "common/keys.h"
#include "common/log.h"
#include "net/fetch.h"
#include "net/market_client.h"
#include "net/retry.h"
#include "net/store.h"
#include "train/benchmark.h"
#include "train/host_memory.h"

namespace solver::agent {

using namespace detail;

struct Agent::Impl {
  WorkDirLock work_dir_lock;  // first: held before anything in the work dir is touched
  AgentConfig config;  // ceilings, downloads and verify_* change on reload: read them through current()
  const SigningKey& key;
  const std::atomic<bool>& stop;
  std::atomic<bool>* reload;                   // set by SIGHUP; cleared by the slot that reloads
  std::function<AgentConfig()> reread_config;  // empty: nothing to re-read
  std::mutex settings_mutex;
  net::MarketClient market;
  std::unique_ptr<net::BundleStore> store;
  net::FileCache cache;
  StatusBoard status;
  std::mutex publish_mutex;
  AgentControls controls;  // the operator's drain, pause and disabled devices
  std::vector<std::unique_ptr<GpuSteward>> stewards;  // one per slot, watching its GPUs
  AgentServices services;
  VersionGate version_gate{market, status};  // after the status board it reports to
  std::optional<MetricsServer> metrics_server;  // metrics.port; after the status board, whose metrics it serves
  std::vector<SlotPlace> slots;  // one per task at once, each on its own thread and device
  DiskWatch disk_watch{config.work_dir, controls};  // limits.min_free_disk_gb: every slot held while the disk is low
  std::optional<BundlePruner> pruner;  // storage.kind directory: published bundles the market is done with go
  std::mutex busy_mutex;
  std::set<std::string> busy_tasks;  // task folders a slot is working on
  std::map<std::string, std::string> registered_quarantine;  // as the market last heard it (watch_rig's thread after start)
  std::optional<ControlServer> control_server;  // last: it drives the controls until it is gone

  Impl(AgentConfig config_in, const SigningKey& key_in, const std::atomic<bool>& stop_in, std::atomic<bool>* reload_in,
       std::function<AgentConfig()> reread_in)
      : work_dir_lock(config_in.work_dir),
        config(with_visible_devices(std::move(config_in), train::torch_cuda_device_count())),
        key(key_in),
        stop(stop_in),
        reload(reload_in),
        reread_config(std::move(reread_in)),
        market(net::MarketClientOptions{config.market_url, market_retry()}, key),
        store(make_store(config.storage)),
        cache(net::FetchOptions{.cache_dir = config.cache_dir,
                                .max_cache_bytes = config.max_cache_bytes,
                                .policy = config.downloads,
                                .retry = market_retry(),
                                .ipfs = make_downloader(config.storage, "ipfs"),
                                .s3 = make_downloader(config.storage, "s3")}),
        status(config.work_dir / "status.json", StatusIdentity{config.name, config.market_url, key.public_key_hex()},
               slot_devices(config), stop),
        controls(slot_devices(config)),
        services{key, stop, market, *store, cache, publish_mutex, status, config.max_worker_faults, controls} {
    train::limit_host_tensor_memory(config.max_host_memory_bytes);
    for (int i = 0; i < config.tasks_at_once; ++i)
      slots.push_back(SlotPlace{.index = i, .device = config.devices[static_cast<std::size_t>(i) % config.devices.size()]});
    // The tests of the steward, which have no GPU, name a stand-in NVML (tests/hardware/fake_nvml.cpp)
    // in SOLVER_TEST_NVML; its GPU i is watched for the CPU slot i (docs/testing.md).
    const char* test_nvml = std::getenv("SOLVER_TEST_NVML");
    const std::string nvml_library = test_nvml != nullptr ? test_nvml : std::string(hardware::kNvmlLibrary);
    const hardware::GpuInventory inventory = cuda_devices_needed(config) > 0 || test_nvml != nullptr
                                                 ? hardware::read_gpu_inventory(nvml_library)
                                                 : hardware::GpuInventory{};
    for (SlotPlace& slot : slots) {
      std::vector<WatchedGpu> gpus = GpuSteward::gpus_of_slot(slot.device, inventory);
      if (test_nvml != nullptr && slot.device == "cpu" && std::cmp_less(slot.index, inventory.gpus.size()))
        gpus.push_back(WatchedGpu{slot.device, inventory.gpus[static_cast<std::size_t>(slot.index)].uuid});
      stewards.push_back(std::make_unique<GpuSteward>(std::move(gpus), config.thermal, controls, nvml_library,
                                                      config.idle_only));
      slot.steward = stewards.back().get();
    }
    if (config.storage.kind == "directory")
      pruner.emplace(config.storage.directory, tasks_dir(), market, status.metrics(), publish_mutex);
    controls.add_metrics(status.metrics());
    controls.on_change([this] {
      for (const SlotPlace& slot : slots) status.set_control(slot.index, controls.state_of(slot.device));
    });
    control_server.emplace(control_socket_path(config.work_dir),
                           [this](const nlohmann::json& request) { return controls.answer(request); });
    if (config.metrics_port > 0) {
      add_gpu_collector(status.metrics());
      metrics_server.emplace(status.metrics(), config.metrics_port);
    }
  }

  static std::vector<std::string> slot_devices(const AgentConfig& config) {
    std::vector<std::string> devices;
    for (int i = 0; i < config.tasks_at_once; ++i) devices.push_back(config.devices[static_cast<std::size_t>(i) % config.devices.size()]);
    return devices;
  }

  AgentConfig current() {
    const std::lock_guard lock(settings_mutex);
    return config;
  }

  // SIGHUP: the ceilings, the download policy, the verification settings and the pruning limits
  // are re-read and apply to work taken from now on, limits.min_free_disk_gb (watch_rig) and
  // limits.max_host_memory_gb at once;
  // a hold for worker faults ends. Other changes need a restart.
  void reload_if_asked() {
    if (reload == nullptr || !reload->exchange(false)) return;
    if (status.clear_worker_faults() >= config.max_worker_faults) log_info("agent", "reload: claiming again");
    if (!reread_config) return;
    AgentConfig fresh;
    try {
      fresh = with_visible_devices(reread_config(), train::torch_cuda_device_count());
    } catch (const Error& error) {
      log_error("agent", "reload failed, the running config stays: {}", error.what());
      return;
    }
    {
      const std::lock_guard lock(settings_mutex);
      config.ceilings = fresh.ceilings;
      config.downloads = fresh.downloads;
      config.verify = fresh.verify;
      config.keep_bundles = fresh.keep_bundles;
      config.bundle_max_age_seconds = fresh.bundle_max_age_seconds;
      config.min_free_disk_bytes = fresh.min_free_disk_bytes;
      config.max_host_memory_bytes = fresh.max_host_memory_bytes;
    }
    train::limit_host_tensor_memory(fresh.max_host_memory_bytes);
    cache.set_policy(fresh.downloads);
    std::vector<std::string> unapplied;
    if (fresh.market_url != config.market_url) unapplied.push_back("market");
    if (fresh.work_dir != config.work_dir) unapplied.push_back("work_dir");
    if (fresh.cache_dir != config.cache_dir) unapplied.push_back("cache_dir");
    if (fresh.devices != config.devices) unapplied.push_back("devices");
    if (fresh.roles != config.roles) unapplied.push_back("roles");
    if (fresh.tasks_at_once != config.tasks_at_once) unapplied.push_back("limits.tasks_at_once");
    if (fresh.max_worker_faults != config.max_worker_faults) unapplied.push_back("limits.max_worker_faults");
    if (fresh.storage.kind != config.storage.kind || fresh.storage.directory != config.storage.directory ||
        fresh.storage.settings != config.storage.settings)
      unapplied.push_back("storage");
    log_info("agent", "reloaded the config: ceilings, downloads and verify settings apply to work taken from now on, "
             "limits.min_free_disk_gb at once{}",
             unapplied.empty() ? "" : fmt::format("; {} changed too, which needs a restart", fmt::join(unapplied, ", ")));
  }

  bool held_for_faults() const { return status.worker_faults_in_a_row() >= config.max_worker_faults; }

  net::RetryPolicy market_retry() const {
    return net::RetryPolicy{.max_attempts = 4,
                            .initial_delay = std::chrono::milliseconds(500),
                            .max_delay = std::chrono::milliseconds(8000),
                            .stop = &stop};
  }

  std::filesystem::path tasks_dir() const { return config.work_dir / "tasks"; }

  // A task folder is worked on by one slot at a time: a slot holds a TaskHold while it does.
  class TaskHold {
   public:
    TaskHold(Impl& agent, std::string task_id) : agent_(agent), task_id_(std::move(task_id)) {
      const std::lock_guard lock(agent_.busy_mutex);
      held_ = agent_.busy_tasks.insert(task_id_).second;
    }
    ~TaskHold() {
      if (!held_) return;
      const std::lock_guard lock(agent_.busy_mutex);
      agent_.busy_tasks.erase(task_id_);
    }
    TaskHold(const TaskHold&) = delete;
    TaskHold& operator=(const TaskHold&) = delete;
    bool held() const { return held_; }

   private:
    Impl& agent_;
    std::string task_id_;
    bool held_ = false;
  };

  // Registers, retrying until the market answers or the agent is stopped. The stewards read
  // their GPUs when made, so a GPU already faulty is quarantined before the market hears of the rig.
  bool register_with_market() {
    registered_quarantine = controls.quarantined();
    std::string bench_note;
    const net::WorkerProfile profile = worker_profile(config, registered_quarantine, bench_note);
    for (int round = 1; !stop; ++round) {
      try {
        market.register_worker(profile);
        log_info("agent", "registered with {} as {} (key {}, roles {}), {}", config.market_url, config.name,
                 key.public_key_hex().substr(0, 16), fmt::join(config.roles, ","), bench_note);
        return true;
      } catch (const Error& error) {
        if (remedy_for(Stage::Registering, error, stop) != Remedy::Later) throw;
        const auto delay = idle_delay(round);
        log_warn("agent", "market {} unreachable ({}); trying again in {:.0f} s", config.market_url, error.what(),
                 delay.count() / 1000.0);
        net::sleep_unless_stopped(delay, &stop);
      }
    }
    return false;
  }

  // Idle polling: backs off from poll.min_seconds to poll.max_seconds, jittered, never below the minimum.
  std::chrono::milliseconds idle_delay(int round) const {
    const net::RetryPolicy policy{
        .initial_delay = std::chrono::milliseconds(static_cast<std::int64_t>(config.poll_min_seconds * 1000)),
        .max_delay = std::chrono::milliseconds(static_cast<std::int64_t>(config.poll_max_seconds * 1000))};
    return std::max(net::backoff_delay(policy, round), policy.initial_delay);
  }

  // Carries on with what a previous run (or an earlier turn) left: training first, then the
  // spool. Returns false when something is still waiting (stopped, or the store or market is down).
  bool work_in_flight(const SlotPlace& slot) {
    bool all_done = true;
    for (TaskState& state : tasks_in_flight(tasks_dir())) {
      if (stop) return false;
      const TaskHold hold(*this, state.task_id);
      if (!hold.held()) continue;  // another slot has it
      if (state.phase == TaskPhase::Training)
        log_info("agent", "task={} was in training when the agent stopped: resuming", state.task_id);
      all_done = TaskJob(std::move(state), current(), services, slot).run() && all_done;
    }
    return all_done;
  }

  // What a slot the operator keeps from claiming says while it waits (AgentControls::state_of).
  static std::string operator_hold_note(const std::string& state) {
    if (state == "draining") return "draining: claiming nothing; the agent exits once its tasks in flight are completed";
    if (state == "paused") return "paused by the operator: claiming nothing until `solver agent resume`";
    if (state.starts_with("quarantined")) return state + "; claiming nothing until `solver agent clear DEVICE`";
    if (state.starts_with("disk low")) return state + "; claiming nothing until the disk has room again";
    if (state.starts_with("idle-only")) return state + "; claiming nothing until its GPUs are idle inside the hours";
    return "device disabled by the operator: claiming nothing until `solver agent enable`";
  }

  // One slot's loop: its share of the work left in flight, then new tasks, then verifications.
  void work(const SlotPlace& slot, bool until_idle, const std::atomic<bool>& failed) {
    for (int idle_rounds = 0; !stop && !failed;) {
      reload_if_asked();
      if (pruner) {
        const AgentConfig settings = current();
        pruner->prune_when_due(PruneLimits{settings.keep_bundles, settings.bundle_max_age_seconds});
      }
      bool worked = false;
      bool spool_empty = true;
      std::string waiting = "idle";  // what status.json says while the slot waits
      try {
        spool_empty = work_in_flight(slot);
        if (controls.draining() && spool_empty) break;  // drained: this slot's tasks are completed
        const std::string cooling = slot.steward->check();
        if (!controls.may_claim(slot.device)) {
          waiting = operator_hold_note(controls.state_of(slot.device));
        } else if (!cooling.empty()) {
          waiting = "cooling: " + cooling;
        } else if (held_for_faults()) {
          waiting = fmt::format("held: {} tasks failed in a row by this rig's fault (last: {}); fix it, then send "
                                "SIGHUP or restart", status.worker_faults_in_a_row(), status.last_worker_fault());
        } else if (const std::optional<std::string> outdated = version_gate.outdated()) {
          waiting = *outdated;
        } else {
          if (!stop && config.has_role("solve") && disk_has_room(current())) {
            if (const std::optional<net::Lease> lease = market.claim_task()) {
              const TaskHold hold(*this, lease->task_id);
              TaskJob::claim(*lease, tasks_dir(), current(), services, slot).run();
              worked = true;
            }
          }
          if (!stop && !worked && config.has_role("verify")) worked = verify_one(current(), services, slot);
        }
      } catch (const Error& error) {
        if (remedy_for(Stage::Polling, error, stop) == Remedy::StopAgent) throw;
        log_error("agent", "{}", error.what());
        status.record_error(error.what());
        if (const auto* refusal = dynamic_cast<const net::MarketError*>(&error);
            refusal != nullptr && refusal->status() == 403 && refusal->code() == "held_back")
          waiting = std::string("held back by the market: ") + error.what();
      }
      if (worked) {
        idle_rounds = 0;
        continue;
      }
      if (until_idle && spool_empty) break;
      const std::chrono::milliseconds delay = idle_delay(++idle_rounds);
      status.set_waiting(slot.index, waiting, delay);
      controls.wait(delay, stop);  // a control (resume, enable, drain) ends the wait at once
    }
    status.set_finished(slot.index);
  }

  int run(bool until_idle) {
    log_info("agent", "{} starting: market {}, work dir {}, store {}, {} task(s) at once on {}", config.name,
             config.market_url, config.work_dir.string(), config.storage.kind, config.tasks_at_once,
             fmt::join(config.devices, ","));
    ServiceManager service_manager(status, stop);
    service_manager.set_status("registering with " + config.market_url);
    if (!register_with_market()) return finish_run();
    std::vector<std::thread> threads;
    std::mutex failure_mutex;
    std::exception_ptr failure;  // a bug in one slot stops the agent (exit 70), after the others saved their work
    std::atomic<bool> failed{false};
    for (const SlotPlace& slot : slots)
      threads.emplace_back([&, until_idle] {
        try {
          work(slot, until_idle, failed);
        } catch (...) {
          const std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          failed = true;
        }
      });
    std::atomic<bool> slots_done{false};
    std::thread rig_watch([&] { watch_rig(slots_done); });
    service_manager.ready();
    for (std::thread& thread : threads) thread.join();
    slots_done = true;
    rig_watch.join();
    if (failure) std::rethrow_exception(failure);
    return finish_run();
  }

  // Every few seconds, whatever the slots are doing (training, held, idle): a SIGHUP applies, so a
  // new limits.min_free_disk_gb reaches a held slot, whose own loop does not turn; and the disk
  // hold follows the work dir's free space (disk_watch.h).
  void watch_rig(const std::atomic<bool>& slots_done) {
    constexpr auto kInterval = std::chrono::seconds(2);
    while (!stop && !slots_done) {
      try {
        reload_if_asked();
        disk_watch.check(current().min_free_disk_bytes);
        register_quarantine_change();
      } catch (const std::exception& error) {
        log_error("agent", "watching the rig: {}", error.what());
      }
      for (const auto next = std::chrono::steady_clock::now() + kInterval;
           !stop && !slots_done && std::chrono::steady_clock::now() < next;)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // Registers again when a device was quarantined or cleared since the last registration, so the
  // market's view of the rig says which devices are out of work and why. One try a round.
  void register_quarantine_change() {
    const std::map<std::string, std::string> quarantined = controls.quarantined();
    if (quarantined == registered_quarantine) return;
    std::string bench_note;
    try {
      market.register_worker(worker_profile(current(), quarantined, bench_note));
      registered_quarantine = quarantined;
      log_info("agent", "told the market of the quarantined devices: {}",
               quarantined.empty() ? std::string("none") : nlohmann::json(quarantined).dump());
    } catch (const Error& error) {
      log_warn("agent", "could not tell the market of the quarantined devices ({}); trying again", error.what());
    }
  }

  int finish_run() {
    status.write();
    log_info("agent", "{}: {} tasks completed, {} verdicts posted",
             stop ? "stopped" : controls.draining() ? "drained" : "no work left",
             status.tasks_completed(), status.verdicts_posted());
    return 0;
  }
};

Agent::Agent(AgentConfig config, const SigningKey& key, const std::atomic<bool>& stop, std::atomic<bool>* reload,
             std::function<AgentConfig()> reread_config) {
  const std::vector<Check> device_failures = check_rig_can_work(config);
  impl_ = std::make_unique<Impl>(std::move(config), key, stop, reload, std::move(reread_config));
  for (const Check& failure : device_failures)
    impl_->controls.quarantine(failure.device, failure.quarantine_reason,
                               fmt::format("{} failed its {}: {}", failure.device, failure.name.substr(0, failure.name.rfind(' ')),
                                           failure.detail));
}

Agent::~Agent() = default;

int Agent::run(bool until_idle) { return impl_->run(until_idle); }

bool agent_running_in(const std::filesystem::path& work_dir) { return work_dir_locked(work_dir); }

}  // namespace solver::agent
