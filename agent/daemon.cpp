// The agent's loop and its per-task state machine (see daemon.h). Every market call goes through
// MarketClient's retries; what still fails is logged and retried on a later turn of the loop, so
// a market or store that is down, slow or erroring delays work but never crashes the agent.
#include "agent/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "agent/replayer.h"
#include "agent/stores.h"
#include "agent/training_job.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/task.h"
#include "hardware/nvml.h"
#include "kernels/distance.h"
#include "net/fetch.h"
#include "net/market_client.h"
#include "net/retry.h"
#include "net/store.h"
#include "proof/manifest.h"
#include "proof/verify.h"
#include "train/benchmark.h"

namespace solver::agent {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kTaskStateSchema = "solver.agent-task/1";
// Checkpoints are committed as they land, but not in more than one heartbeat a second.
constexpr auto kMinCommitInterval = std::chrono::seconds(1);

// The phases of a task in flight, in order. Each is written before the work it names begins
// (training) or right after the work it names is durable (bundled, published).
constexpr std::string_view kTraining = "training";    // leased; the bundle folder may hold a journal
constexpr std::string_view kBundled = "bundled";      // the bundle is finished and signed
constexpr std::string_view kPublished = "published";  // the store holds it at bundle_address

struct TaskState {
  std::string task_id;
  std::string lease_id;
  json task;
  std::string task_sha256;
  std::int64_t lease_seconds = 0;
  std::string phase;
  std::string manifest_sha256;
  std::string manifest_signature;
  std::string bundle_address;
  std::filesystem::path dir;  // not saved: where state.json lives

  std::filesystem::path bundle_dir() const { return dir / "bundle"; }

  void save() const {
    write_file_durably(dir / "state.json", json{{"schema", kTaskStateSchema},
                                                {"task_id", task_id},
                                                {"lease_id", lease_id},
                                                {"task", task},
                                                {"task_sha256", task_sha256},
                                                {"lease_seconds", lease_seconds},
                                                {"phase", phase},
                                                {"manifest_sha256", manifest_sha256},
                                                {"manifest_signature", manifest_signature},
                                                {"bundle_address", bundle_address}}
                                               .dump(2));
  }

  static TaskState load(const std::filesystem::path& dir) {
    const std::filesystem::path path = dir / "state.json";
    try {
      const json saved = parse_json_document(read_file(path), path.string());
      if (saved.value("schema", "") != kTaskStateSchema) throw Error(ErrorKind::Input, "unknown schema");
      TaskState state;
      state.task_id = saved.at("task_id").get<std::string>();
      state.lease_id = saved.at("lease_id").get<std::string>();
      state.task = saved.at("task");
      state.task_sha256 = saved.at("task_sha256").get<std::string>();
      state.lease_seconds = saved.at("lease_seconds").get<std::int64_t>();
      state.phase = saved.at("phase").get<std::string>();
      state.manifest_sha256 = saved.at("manifest_sha256").get<std::string>();
      state.manifest_signature = saved.at("manifest_signature").get<std::string>();
      state.bundle_address = saved.at("bundle_address").get<std::string>();
      state.dir = dir;
      if (state.phase != kTraining && state.phase != kBundled && state.phase != kPublished)
        throw Error(ErrorKind::Input, "unknown phase \"" + state.phase + "\"");
      return state;
    } catch (const json::exception& error) {
      throw Error(ErrorKind::Input, path.string() + " is damaged: " + error.what());
    } catch (const Error& error) {
      throw error.with_context(path.string());
    }
  }
};

bool is_market_refusal(const std::exception& error, long status) {
  const auto* refusal = dynamic_cast<const net::MarketError*>(&error);
  return refusal != nullptr && refusal->status() == status;
}

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", std::chrono::floor<std::chrono::seconds>(now));
}

// Who a failure is down to (docs/market-protocol.md, "Failures"). A GPU error may be the
// device's or the model's, and a download that failed for good the host's or our network's:
// unknown, so that neither a broken rig nor a poisoned task can go on forever.
net::Fault fault_of(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::Input:
    case ErrorKind::Budget: return net::Fault::Task;
    case ErrorKind::Network:
    case ErrorKind::Cuda: return net::Fault::Unknown;
    default: return net::Fault::Worker;  // disk, configuration, this rig's ceilings, a bug
  }
}

std::uint64_t state_bytes(const train::Trainer& trainer) {
  std::uint64_t bytes = 0;
  for (const checkpoint::Tensor& tensor : trainer.state(0).tensors) bytes += tensor.data.size();
  return bytes;
}

json hardware_profile(const std::string& device, std::int64_t& memory_mb, int& devices) {
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory();
  json gpus = json::array();
  for (const hardware::GpuInfo& gpu : inventory.gpus)
    gpus.push_back({{"name", gpu.name}, {"memory_mb", gpu.memory_total_bytes.value_or(0) >> 20}});
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  const std::int64_t ram_mb = pages > 0 && page_size > 0 ? (static_cast<std::int64_t>(pages) * page_size) >> 20 : 0;
  devices = kernels::cuda_device_count();
  memory_mb = ram_mb;
  if (device.starts_with("cuda") && !inventory.gpus.empty())
    memory_mb = static_cast<std::int64_t>(inventory.gpus.front().memory_total_bytes.value_or(0) >> 20);
  return {{"cpu_threads", std::thread::hardware_concurrency()},
          {"ram_mb", ram_mb},
          {"gpus", gpus},
          {"driver", inventory.driver_version},
          {"device", device}};
}

// A rig that cannot do the work must not claim it (each claim would fail and cost the task an
// attempt): a device the config names but LibTorch cannot use stops the agent with exit 69,
// a work or cache folder it cannot write with exit 78.
void check_rig(const AgentConfig& config) {
  const int needed = cuda_devices_needed(config);
  const int usable = train::cuda_device_count();
  if (needed > usable)
    throw Error(ErrorKind::Cuda, fmt::format("config.devices {} need {} CUDA device(s), but LibTorch can use {}{}; "
                                             "fix \"devices\" in the agent config",
                                             fmt::join(config.devices, ","), needed, usable,
                                             usable == 0 ? " (no GPU, no driver, or a CPU-only LibTorch build)" : ""));
  for (const auto& [dir, field] : {std::pair{config.work_dir / "tasks", "work_dir"}, std::pair{config.cache_dir, "cache_dir"}}) {
    try {
      std::filesystem::create_directories(dir);
      const std::filesystem::path probe = dir / ".write-probe";
      write_file_durably(probe, "solver");
      std::filesystem::remove(probe);
    } catch (const std::exception& error) {
      throw Error(ErrorKind::Config, fmt::format("config.{}: cannot write in {}: {}", field, dir.string(), error.what()));
    }
  }
}

// One agent per work dir: two would train, publish and delete the same task folders. An flock
// on <work_dir>/agent.lock, held while the agent lives; the kernel drops it if the process dies.
class WorkDirLock {
 public:
  explicit WorkDirLock(const std::filesystem::path& work_dir) : path_(work_dir / "agent.lock") {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(ErrorKind::Config, "config.work_dir: cannot open " + path_.string() + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char holder[32] = {};
      [[maybe_unused]] const ssize_t read = ::pread(fd_, holder, sizeof holder - 1, 0);
      ::close(fd_);
      throw Error(ErrorKind::Config, "another agent (pid " + std::string(holder) + ") works in " +
                                         work_dir.string() + ": one agent per work dir (config.work_dir)");
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
      log_warn("agent", "cannot write the pid into {}", path_.string());
  }
  ~WorkDirLock() { ::close(fd_); }
  WorkDirLock(const WorkDirLock&) = delete;
  WorkDirLock& operator=(const WorkDirLock&) = delete;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace

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

  // One slot per task at once, each on its own thread and device; status.json shows them all.
  struct Slot {
    int index = 0;
    std::string device;
    std::string activity = "starting";
    std::string task_id;
    std::int64_t step = 0;
    std::int64_t total_steps = 0;
  };
  std::vector<Slot> slots;  // fixed after construction; fields guarded by status_mutex
  std::mutex status_mutex;
  std::atomic<std::int64_t> tasks_completed{0};
  std::atomic<std::int64_t> verdicts_posted{0};
  std::mutex busy_mutex;
  std::set<std::string> busy_tasks;  // task folders a slot is working on
  std::mutex publish_mutex;          // one upload at a time: the uplink is shared anyway
  // Tasks failed in a row not by their own fault; at config.max_worker_faults the agent stops
  // claiming until an operator sends SIGHUP or restarts it.
  std::atomic<int> faults_in_a_row{0};
  std::string last_fault;  // guarded by status_mutex

  Impl(AgentConfig config_in, const SigningKey& key_in, const std::atomic<bool>& stop_in, std::atomic<bool>* reload_in,
       std::function<AgentConfig()> reread_in)
      : work_dir_lock(config_in.work_dir),
        config(std::move(config_in)),
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
                                .s3 = make_downloader(config.storage, "s3")}) {
    for (int i = 0; i < config.tasks_at_once; ++i)
      slots.push_back(Slot{.index = i, .device = config.devices[static_cast<std::size_t>(i) % config.devices.size()]});
  }

  AgentConfig current() {
    const std::lock_guard lock(settings_mutex);
    return config;
  }

  // SIGHUP: the ceilings, the download policy and the verification settings are re-read and
  // apply to work taken from now on; a hold for worker faults ends. Other changes need a restart.
  void reload_if_asked() {
    if (reload == nullptr || !reload->exchange(false)) return;
    if (faults_in_a_row.exchange(0) >= config.max_worker_faults) log_info("agent", "reload: claiming again");
    if (!reread_config) return;
    AgentConfig fresh;
    try {
      fresh = reread_config();
    } catch (const Error& error) {
      log_error("agent", "reload failed, the running config stays: {}", error.what());
      return;
    }
    {
      const std::lock_guard lock(settings_mutex);
      config.ceilings = fresh.ceilings;
      config.downloads = fresh.downloads;
      config.verify_q = fresh.verify_q;
      config.verify_random = fresh.verify_random;
      config.verify_coverages = fresh.verify_coverages;
    }
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
    log_info("agent", "reloaded the config: ceilings, downloads and verify settings apply to work taken from now on{}",
             unapplied.empty() ? "" : fmt::format("; {} changed too, which needs a restart", fmt::join(unapplied, ", ")));
  }

  bool held_for_faults() const { return faults_in_a_row >= config.max_worker_faults; }

  net::RetryPolicy market_retry() const {
    return net::RetryPolicy{.max_attempts = 4,
                            .initial_delay = std::chrono::milliseconds(500),
                            .max_delay = std::chrono::milliseconds(8000),
                            .stop = &stop};
  }

  std::filesystem::path tasks_dir() const { return config.work_dir / "tasks"; }

  // Rewrites status.json; the caller holds status_mutex.
  void write_status_locked() {
    json slot_list = json::array();
    bool busy = false;
    for (const Slot& slot : slots) {
      slot_list.push_back({{"device", slot.device},
                           {"activity", slot.activity},
                           {"task_id", slot.task_id},
                           {"step", slot.step},
                           {"total_steps", slot.total_steps}});
      busy = busy || slot.activity != "idle";
    }
    const json status{{"pid", ::getpid()},
                      {"name", config.name},
                      {"market", config.market_url},
                      {"public_key", key.public_key_hex()},
                      {"activity", stop ? "stopped" : busy ? "working" : "idle"},
                      {"slots", slot_list},
                      {"tasks_completed", tasks_completed.load()},
                      {"verdicts_posted", verdicts_posted.load()},
                      {"faults_in_a_row", faults_in_a_row.load()},
                      {"last_fault", last_fault},
                      {"updated_at", now_utc()}};
    try {
      write_file_durably(config.work_dir / "status.json", status.dump(2));
    } catch (const Error& error) {
      log_warn("agent", "cannot write status.json: {}", error.what());
    }
  }

  void set_activity(Slot& slot, std::string what, std::string task_id = "") {
    const std::lock_guard lock(status_mutex);
    slot.activity = std::move(what);
    slot.task_id = std::move(task_id);
    slot.step = slot.total_steps = 0;
    write_status_locked();
  }

  void set_progress(Slot& slot, std::int64_t step, std::int64_t total_steps) {
    const std::lock_guard lock(status_mutex);
    slot.step = step;
    slot.total_steps = total_steps;
    write_status_locked();
  }

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

  // Registers, retrying until the market answers or the agent is stopped.
  bool register_with_market() {
    net::WorkerProfile profile;
    profile.name = config.name;
    profile.roles = config.roles;
    profile.hardware = hardware_profile(config.devices.front(), profile.memory_mb, profile.devices);
    profile.hardware["tasks_at_once"] = config.tasks_at_once;
    std::string bench_note = "no bench figures (run `solver bench --save " + config.bench_file.string() + "` to add them)";
    if (std::filesystem::exists(config.bench_file)) {
      try {
        profile.hardware["bench"] = parse_json_document(read_file(config.bench_file), config.bench_file.string());
        bench_note = "with the bench figures of " + config.bench_file.string();
      } catch (const Error& error) {
        log_warn("agent", "ignoring the bench figures: {}", error.what());
      }
    }
    profile.model_kinds.assign(kModelKinds.begin(), kModelKinds.end());
    for (int round = 1; !stop; ++round) {
      try {
        market.register_worker(profile);
        log_info("agent", "registered with {} as {} (key {}, roles {}), {}", config.market_url, config.name,
                 key.public_key_hex().substr(0, 16), fmt::join(config.roles, ","), bench_note);
        return true;
      } catch (const Error& error) {
        // Even a market that refuses us or answers garbage is waited for: an operator may be
        // fixing it, and a worker that exits would need a person to start it again.
        if (error.kind() != ErrorKind::Network) throw;
        const auto delay = idle_delay(round);
        log_warn("agent", "market {} unreachable ({}); trying again in {:.0f} s", config.market_url, error.what(),
                 delay.count() / 1000.0);
        net::sleep_unless_stopped(delay, &stop);
      }
    }
    return false;
  }

  net::RetryPolicy idle_policy() const {
    return net::RetryPolicy{.initial_delay = std::chrono::milliseconds(static_cast<std::int64_t>(config.poll_min_seconds * 1000)),
                            .max_delay = std::chrono::milliseconds(static_cast<std::int64_t>(config.poll_max_seconds * 1000))};
  }

  // Idle polling: backs off from poll.min_seconds to poll.max_seconds, jittered, never below the minimum.
  std::chrono::milliseconds idle_delay(int round) const {
    const net::RetryPolicy policy = idle_policy();
    return std::max(net::backoff_delay(policy, round), policy.initial_delay);
  }

  // ---- tasks in flight ----

  std::vector<TaskState> tasks_in_flight() {
    std::vector<TaskState> states;
    if (!std::filesystem::exists(tasks_dir())) return states;
    for (const auto& entry : std::filesystem::directory_iterator(tasks_dir())) {
      try {
        if (!entry.is_directory()) continue;
        TaskState state = TaskState::load(confined_path(tasks_dir(), entry.path().filename()));
        if (state.task_id != entry.path().filename())
          throw Error(ErrorKind::Input, entry.path().string() + " holds the state of task " + state.task_id);
        states.push_back(std::move(state));
      } catch (const Error& error) {
        // Keep it for a person to look at; it cannot be worked on.
        log_error("agent", "skipping a task folder: {}", error.what());
      }
    }
    return states;
  }

  void forget(const TaskState& state, std::string_view why) {
    try {
      remove_confined(tasks_dir(), state.dir);
      log_info("agent", "task={} {}; removed its work folder", state.task_id, why);
    } catch (const Error& error) {
      log_error("agent", "task={} {}; its work folder stays: {}", state.task_id, why, error.what());
    }
  }

  // The market told us the task is not ours any more (expired and re-leased, cancelled).
  bool lost_lease(const std::exception& error) { return is_market_refusal(error, 409) || is_market_refusal(error, 404); }

  // Tells the market the task failed and whose fault it was: the task's fails it, anything else
  // returns it for another rig and counts against this one.
  void report_failure(const TaskState& state, const Error& failure) {
    const net::Fault fault = fault_of(failure);
    const bool requeue = fault != net::Fault::Task;
    log_error("agent", "task={} failed ({} fault): {}", state.task_id, net::fault_name(fault), failure.what());
    if (fault != net::Fault::Task) {
      const int in_a_row = ++faults_in_a_row;
      {
        const std::lock_guard lock(status_mutex);
        last_fault = "task " + state.task_id + ": " + failure.what();
      }
      if (in_a_row == config.max_worker_faults)
        log_error("agent", "{} tasks failed in a row by no fault of theirs: claiming nothing more until this rig is "
                  "fixed and the agent gets SIGHUP or a restart (limits.max_worker_faults)", in_a_row);
    }
    try {
      market.fail_task(state.task_id, state.lease_id, failure.what(), fault);
    } catch (const Error& error) {
      log_warn("agent", "task={} could not report the failure ({}); the lease will expire instead", state.task_id,
               error.what());
    }
    forget(state, requeue ? "returned to the market" : "failed");
  }

  void take_lease(Slot& slot, const net::Lease& lease) {
    TaskState state;
    state.task_id = lease.task_id;
    state.lease_id = lease.lease_id;
    state.task = lease.task;
    state.task_sha256 = lease.task_sha256;
    state.lease_seconds = lease.lease_seconds;
    state.phase = kTraining;
    state.dir = confined_path(tasks_dir(), lease.task_id);
    std::filesystem::create_directories(state.dir);
    state.save();
    log_info("agent", "task={} claimed (lease {} for {} s) on {}", state.task_id, state.lease_id, state.lease_seconds,
             slot.device);
    train(slot, state, false);
  }

  // Trains (or resumes) a task while heartbeating; ends in phase bundled, or with the folder
  // kept for a later resume (stopped), or removed (failed, cancelled, lost).
  void train(Slot& slot, TaskState& state, bool resume) {
    set_activity(slot, "training", state.task_id);
    const TaskCeilings ceilings = current().ceilings;
    Task task;
    try {
      task = parse_task(state.task, "/");
      if (task_sha256(task) != state.task_sha256)
        throw Error(ErrorKind::Input, "the market's task hashes to " + task_sha256(task) + ", not to the lease's " +
                                          state.task_sha256);
      check_declared_task(task, ceilings);
      cache.resolve(task);
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::Network && stop) return;  // interrupted while fetching: resume later
      report_failure(state, error);
      return;
    }

    // A step stuck past its time limit cannot be interrupted. The job has already recorded why
    // in the bundle folder, so the restarted agent fails the task with that reason instead of
    // resuming it; tell the market now too (in case no one restarts us), then end the process:
    // the other slots resume from their last checkpoints after the restart.
    const StuckStepHandler on_stuck_step = [this, &state](const Error& reason) {
      try {
        market.fail_task(state.task_id, state.lease_id, reason.what(), net::Fault::Task);
      } catch (const std::exception& error) {
        log_warn("agent", "task={} could not report the stuck step now ({}); it is reported after the restart",
                 state.task_id, error.what());
      }
      end_process_for_stuck_step(reason);
    };
    std::unique_ptr<TrainingJob> job;
    try {
      job = std::make_unique<TrainingJob>(task,
                                          train::TrainerOptions{.device = slot.device,
                                                                .threads = config.threads,
                                                                .max_step_seconds = ceilings.max_step_seconds},
                                          &key,
                                          state.bundle_dir(), resume && std::filesystem::exists(state.bundle_dir()),
                                          on_stuck_step);
      check_loaded_task(task, job->trainer().total_steps(), state_bytes(job->trainer()), ceilings);
    } catch (const Error& error) {
      if (resume && error.kind() == ErrorKind::Input) {
        // An unusable journal (say, a half-written first checkpoint): start the bundle afresh.
        log_warn("agent", "task={} cannot resume ({}); training from step 0", state.task_id, error.what());
        remove_confined(state.dir, state.bundle_dir());
        return train(slot, state, false);
      }
      report_failure(state, error);
      return;
    }
    const std::int64_t start_step = job->start_step();
    const std::int64_t total_steps = job->trainer().total_steps();
    log_info("agent", "task={} training steps {}..{} on {}{}", state.task_id, start_step + 1, total_steps, slot.device,
             resume ? " (resumed)" : "");

    std::atomic<std::int64_t> step{start_step};
    std::atomic<float> loss{0.0f};
    std::atomic<bool> abandon{false};  // cancelled by the submitter, or the lease is gone
    std::atomic<bool> past_ceiling{false};  // ran longer than this rig allows a task
    std::atomic<bool> done{false};
    std::exception_ptr failure;
    TrainingOutcome outcome;
    train::TrainHooks hooks;
    hooks.on_step = [&](StepRecord&& record) {
      step = record.step;
      loss = record.loss;
    };
    hooks.should_stop = [&] { return stop.load() || abandon.load() || past_ceiling.load(); };
    const auto ceiling = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(ceilings.max_wall_seconds));
    std::thread worker([&] {
      try {
        outcome = job->run(std::move(hooks));
      } catch (...) {
        failure = std::current_exception();
      }
      done = true;
    });

    std::set<std::int64_t> committed;
    const auto interval = std::chrono::milliseconds(static_cast<std::int64_t>(
        1000 * std::min(config.heartbeat_seconds, std::max<double>(1.0, state.lease_seconds / 3.0))));
    // A heartbeat goes out when the lease needs renewing, and also soon after each checkpoint
    // lands: the sooner a hash is committed, the less time a forger has to rewrite history.
    auto next_beat = Clock::now();
    auto last_beat = Clock::now();
    bool market_answered = true;  // while it does not, only the lease interval paces heartbeats
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (done || abandon) continue;
      const auto now = Clock::now();
      if (now > ceiling) past_ceiling = true;
      const std::vector<proof::WrittenCheckpoint> written = job->written_checkpoints();
      const bool uncommitted = !written.empty() && !committed.contains(written.back().step);
      if (now < next_beat && !(market_answered && uncommitted && now - last_beat >= kMinCommitInterval)) continue;
      last_beat = now;
      next_beat = now + interval;
      set_progress(slot, step, total_steps);
      market_answered = heartbeat(state, written, committed, step, total_steps, loss, abandon);
    }
    worker.join();

    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const Error& error) {
        report_failure(state, error);
      } catch (const std::exception& error) {
        report_failure(state, Error(ErrorKind::Internal, std::string("training failed: ") + error.what()));
      }
      return;
    }
    if (abandon) {
      forget(state, "abandoned");
      return;
    }
    if (past_ceiling) {
      report_failure(state, Error(ErrorKind::Capacity, fmt::format("ran past this rig's ceiling of {:.1f} h per task "
                                                                   "(limits.max_task_hours) at step {} of {}",
                                                                   ceilings.max_wall_seconds / 3600.0,
                                                                   outcome.last_step, outcome.total_steps)));
      return;
    }
    if (!outcome.finished) {
      log_info("agent", "task={} stopped at step {} of {}; the lease is kept and training resumes from the last "
               "checkpoint when the agent starts again", state.task_id, outcome.last_step, outcome.total_steps);
      return;
    }
    const proof::Manifest& manifest = *outcome.manifest;
    state.manifest_sha256 = sha256_file_hex(state.bundle_dir() / "manifest.json");
    state.manifest_signature = read_file(state.bundle_dir() / "manifest.sig");
    while (!state.manifest_signature.empty() && std::isspace(static_cast<unsigned char>(state.manifest_signature.back())))
      state.manifest_signature.pop_back();
    state.phase = kBundled;
    state.save();
    log_info("agent", "task={} trained {} steps in {:.1f} s (test accuracy {:.2f}%); bundle {} checkpoints, manifest {}",
             state.task_id, outcome.last_step - outcome.first_step, outcome.train_seconds, outcome.test_accuracy * 100.0,
             manifest.checkpoints.size(), state.manifest_sha256.substr(0, 16));
    deliver(slot, state);
  }

  // Renews the lease and commits the checkpoints written since the last accepted heartbeat.
  // Returns whether the market answered.
  bool heartbeat(const TaskState& state, const std::vector<proof::WrittenCheckpoint>& written,
                 std::set<std::int64_t>& committed, std::int64_t step, std::int64_t total, float loss,
                 std::atomic<bool>& abandon) {
    net::Heartbeat beat;
    beat.lease_id = state.lease_id;
    beat.step = step;
    beat.total_steps = total;
    if (step > 0) beat.loss = loss;
    for (const proof::WrittenCheckpoint& checkpoint : written)
      if (!committed.contains(checkpoint.step)) beat.checkpoints.push_back({checkpoint.step, checkpoint.sha256});
    try {
      const net::HeartbeatReply reply = market.heartbeat(state.task_id, beat);
      for (const auto& commitment : beat.checkpoints) {
        committed.insert(commitment.step);
        log_info("agent", "task={} checkpoint step={} committed sha256={}", state.task_id, commitment.step,
                 commitment.sha256.substr(0, 16));
      }
      if (reply.cancel) {
        log_info("agent", "task={} cancelled by the market: {}", state.task_id, reply.reason);
        abandon = true;
      }
      return true;
    } catch (const Error& error) {
      if (lost_lease(error)) {
        log_warn("agent", "task={} lease lost: {}", state.task_id, error.what());
        abandon = true;
        return true;
      }
      log_warn("agent", "task={} heartbeat failed, training goes on: {}", state.task_id, error.what());
      return false;
    }
  }

  // bundled -> published -> completed. Leaves the task spooled when the store or the market
  // is unreachable; returns false then.
  bool deliver(Slot& slot, TaskState& state) {
    try {
      if (state.phase == kBundled) {
        set_activity(slot, "publishing", state.task_id);
        const auto started = Clock::now();
        const std::lock_guard lock(publish_mutex);
        state.bundle_address = store->publish(state.bundle_dir(), state.task_id + "-" + state.manifest_sha256.substr(0, 16));
        state.phase = kPublished;
        state.save();
        log_info("agent", "task={} published {} in {:.1f} s", state.task_id, state.bundle_address,
                 std::chrono::duration<double>(Clock::now() - started).count());
      }
      // The commitments again, all of them: the market keeps the first copy of each, and a
      // heartbeat lost while training must not leave one out.
      set_activity(slot, "completing", state.task_id);
      net::Heartbeat beat;
      beat.lease_id = state.lease_id;
      for (const proof::WrittenCheckpoint& checkpoint : manifest_checkpoints(state)) {
        beat.checkpoints.push_back({checkpoint.step, checkpoint.sha256});
        beat.step = beat.total_steps = checkpoint.step;
      }
      if (const net::HeartbeatReply reply = market.heartbeat(state.task_id, beat); reply.cancel) {
        forget(state, "cancelled before completion: " + reply.reason);
        return true;
      }
      log_info("agent", "task={} all {} checkpoints committed (steps 0..{})", state.task_id, beat.checkpoints.size(),
               beat.step);
      market.complete_task(state.task_id, net::Completion{state.lease_id, state.bundle_address, state.manifest_sha256,
                                                          state.manifest_signature});
      ++tasks_completed;
      faults_in_a_row = 0;
      forget(state, "completed (bundle " + state.bundle_address + ")");
      return true;
    } catch (const Error& error) {
      if (lost_lease(error)) {
        forget(state, std::string("refused by the market at completion: ") + error.what());
        return true;
      }
      // Anything else (the store down or failing, the market unreachable) leaves the finished
      // bundle spooled on disk in its phase; every turn of the loop tries it again.
      if (error.kind() == ErrorKind::Internal) throw;
      log_warn("agent", "task={} spooled in phase {}: {}", state.task_id, state.phase, error.what());
      return false;
    }
  }

  std::vector<proof::WrittenCheckpoint> manifest_checkpoints(const TaskState& state) {
    std::vector<proof::WrittenCheckpoint> checkpoints;
    for (const proof::CheckpointEntry& entry : proof::read_manifest(state.bundle_dir()).checkpoints)
      checkpoints.push_back({entry.step, entry.file.sha256});
    return checkpoints;
  }

  // Resumes what a previous run left: training first, then the spool. Returns false when
  // something is still spooled (the store or market is down).
  bool work_in_flight(Slot& slot) {
    bool all_delivered = true;
    for (TaskState& state : tasks_in_flight()) {
      if (stop) return false;
      const TaskHold hold(*this, state.task_id);
      if (!hold.held()) continue;  // another slot has it
      if (state.phase == kTraining) {
        log_info("agent", "task={} was in training when the agent stopped: resuming", state.task_id);
        train(slot, state, true);
        if (std::filesystem::exists(state.dir)) all_delivered = false;
      } else {
        all_delivered = deliver(slot, state) && all_delivered;
      }
    }
    return all_delivered;
  }

  bool disk_has_room() {
    struct statvfs info {};
    if (::statvfs(config.work_dir.c_str(), &info) != 0) return true;
    const std::uint64_t free_bytes = static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
    if (free_bytes >= config.min_free_disk_bytes) return true;
    log_warn("agent", "only {:.1f} GB free under {} (limits.min_free_disk_gb is {:.1f}): claiming nothing new",
             free_bytes / 1e9, config.work_dir.string(), config.min_free_disk_bytes / 1e9);
    return false;
  }

  // ---- verification ----

  bool verify_one(Slot& slot) {
    const std::optional<net::VerificationJob> job = market.claim_verification();
    if (!job) return false;
    set_activity(slot, "verifying", job->task_id);
    log_info("agent", "verification job={} task={} claimed: bundle {}", job->job_id, job->task_id, job->bundle_address);
    const std::filesystem::path verify_dir = config.work_dir / "verify";
    std::filesystem::create_directories(verify_dir);
    const std::filesystem::path dir = confined_path(verify_dir, job->job_id);
    remove_confined(verify_dir, dir);
    net::Verdict verdict;
    try {
      const std::optional<net::Verdict> judged = judge(*job, dir, slot.device);
      if (!judged) {
        remove_confined(verify_dir, dir);
        return true;
      }
      verdict = *judged;
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::Network || error.kind() == ErrorKind::Io || error.kind() == ErrorKind::Cuda ||
          error.kind() == ErrorKind::Internal) {
        // Our problem, not the solver's: post nothing; the job's lease expires and it is retried.
        log_error("agent", "verification job={} could not be done: {}", job->job_id, error.what());
        remove_confined(verify_dir, dir);
        return true;
      }
      verdict.accepted = false;
      verdict.reason = std::string("the bundle could not be checked: ") + error.what();
      verdict.report = json{{"error", error.what()}};
    }
    remove_confined(verify_dir, dir);
    market.post_verdict(job->job_id, verdict);
    ++verdicts_posted;
    log_info("agent", "verification job={} task={} verdict {}{}", job->job_id, job->task_id,
             verdict.accepted ? "ACCEPTED" : "REJECTED", verdict.accepted ? "" : ": " + verdict.reason);
    return true;
  }

  // The verdict, or nullopt when this rig cannot judge the bundle and gave the job back.
  std::optional<net::Verdict> judge(const net::VerificationJob& job, const std::filesystem::path& dir, const std::string& device) {
    const std::filesystem::path bundle = dir / "bundle";
    const AgentConfig settings = current();
    net::check_location(settings.downloads, job.bundle_address, "bundle_address");
    store_for_address(job.bundle_address, config.storage)->fetch(job.bundle_address, bundle, settings.ceilings.max_disk_bytes);
    net::Verdict verdict;
    const std::string manifest_sha256 = sha256_file_hex(bundle / "manifest.json");
    if (manifest_sha256 != job.manifest_sha256) {
      verdict.reason = "the bundle at " + job.bundle_address + " has manifest " + manifest_sha256 +
                       ", but the solver completed the task with manifest " + job.manifest_sha256;
      verdict.report = json{{"failures", json::array({verdict.reason})}};
      return verdict;
    }
    Task inputs = parse_task(job.task, "/");
    cache.resolve(inputs);
    // The replayer gets the bundle's own task; its files are the ones just fetched (same hashes).
    // A replayed step stuck past its time limit cannot be interrupted: the bundle is rejected
    // for it first (so the job is judged, not handed out again to stall the next verifier), then
    // the process ends and the service restarts it.
    const StuckStepHandler on_stuck_step = [this, &job](const Error& reason) {
      net::Verdict stuck{.accepted = false,
                         .reason = std::string("a replayed step could not be checked: ") + reason.what(),
                         .report = json{{"error", reason.what()}}};
      try {
        market.post_verdict(job.job_id, stuck);
      } catch (const std::exception& error) {
        log_warn("agent", "verification job={} could not post its verdict ({})", job.job_id, error.what());
      }
      end_process_for_stuck_step(reason);
    };
    const proof::ReplayerFactory trainer_factory = trainer_replayer_factory(device, on_stuck_step);
    const proof::ReplayerFactory factory = [&](const Task& task, int threads, int shards) {
      Task local = task;
      for (const auto& [file, what] : task_files(local))
        for (const auto& [fetched, fetched_what] : task_files(inputs))
          if (fetched->sha256 == file->sha256) file->local_copy = fetched->local_copy;
      return trainer_factory(local, threads, shards);
    };
    proof::VerifyOptions options;
    options.q = settings.verify_q;
    options.random_count = settings.verify_random;
    options.catch_probability = settings.verify_catch_probability;
    options.faked_fraction = settings.verify_faked_fraction;
    options.coverages = settings.verify_coverages;
    options.expected_task_sha256 = job.task_sha256;
    options.expected_public_key = job.solver_key;
    for (const net::CheckpointCommitment& commitment : job.commitments)
      options.committed_checkpoints[commitment.step] = commitment.sha256;
    const proof::Verdict result = proof::verify_bundle(bundle, options, factory);
    if (result.not_covered) {
      // Neither accepted nor rejected: another verifier, on the bundle's runtime or with a
      // profile that covers it, judges it.
      market.decline_verification(job.job_id, *result.not_covered);
      log_warn("agent", "verification job={} task={} declined: {}", job.job_id, job.task_id, *result.not_covered);
      return std::nullopt;
    }
    verdict.accepted = result.accepted;
    verdict.reason = result.accepted ? "replayed segments match" : result.failures.front();
    verdict.report = result.to_json();
    return verdict;
  }

  // ---- the loop ----

  int run(bool until_idle) {
    log_info("agent", "{} starting: market {}, work dir {}, store {}, {} task(s) at once on {}", config.name,
             config.market_url, config.work_dir.string(), config.storage.kind, config.tasks_at_once,
             fmt::join(config.devices, ","));
    if (!register_with_market()) return finish_run();
    std::vector<std::thread> threads;
    std::mutex failure_mutex;
    std::exception_ptr failure;  // a bug in one slot stops the agent (exit 70), after the others saved their work
    std::atomic<bool> failed{false};
    for (Slot& slot : slots)
      threads.emplace_back([&, until_idle] {
        try {
          work(slot, until_idle, failed);
        } catch (...) {
          const std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          failed = true;
        }
      });
    for (std::thread& thread : threads) thread.join();
    if (failure) std::rethrow_exception(failure);
    return finish_run();
  }

  // One slot's loop: its share of the work left in flight, then new tasks, then verifications.
  void work(Slot& slot, bool until_idle, const std::atomic<bool>& failed) {
    for (int idle_rounds = 0; !stop && !failed;) {
      reload_if_asked();
      bool worked = false;
      bool spool_empty = true;
      std::string waiting = "idle";  // what status.json says while the slot waits
      try {
        spool_empty = work_in_flight(slot);
        if (held_for_faults()) {
          const std::lock_guard lock(status_mutex);
          waiting = fmt::format("held: {} tasks failed in a row by this rig's fault (last: {}); fix it, then send "
                                "SIGHUP or restart", faults_in_a_row.load(), last_fault);
        } else {
          if (!stop && config.has_role("solve") && disk_has_room()) {
            if (const std::optional<net::Lease> lease = market.claim_task()) {
              const TaskHold hold(*this, lease->task_id);
              take_lease(slot, *lease);
              worked = true;
            }
          }
          if (!stop && !worked && config.has_role("verify")) worked = verify_one(slot);
        }
      } catch (const Error& error) {
        if (error.kind() == ErrorKind::Internal) throw;
        log_error("agent", "{}", error.what());
        if (is_market_refusal(error, 403) && dynamic_cast<const net::MarketError&>(error).code() == "held_back")
          waiting = std::string("held back by the market: ") + error.what();
      }
      if (worked) {
        idle_rounds = 0;
        continue;
      }
      if (until_idle && spool_empty) break;
      set_activity(slot, waiting);
      net::sleep_unless_stopped(idle_delay(++idle_rounds), &stop);
    }
    set_activity(slot, "idle");
  }

  int finish_run() {
    {
      const std::lock_guard lock(status_mutex);
      write_status_locked();
    }
    log_info("agent", "{}: {} tasks completed, {} verdicts posted", stop ? "stopped" : "no work left",
             tasks_completed.load(), verdicts_posted.load());
    return 0;
  }
};

Agent::Agent(AgentConfig config, const SigningKey& key, const std::atomic<bool>& stop, std::atomic<bool>* reload,
             std::function<AgentConfig()> reread_config) {
  check_rig(config);
  impl_ = std::make_unique<Impl>(std::move(config), key, stop, reload, std::move(reread_config));
}

Agent::~Agent() = default;

int Agent::run(bool until_idle) { return impl_->run(until_idle); }

}  // namespace solver::agent
