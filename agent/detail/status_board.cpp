#include "agent/detail/status_board.h"

#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/version.h"

namespace solver::agent::detail {
namespace {

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", std::chrono::floor<std::chrono::seconds>(now));
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Seconds, from a fast local write to a slow network store.
const std::vector<double> kDurationBuckets{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

}  // namespace

// The solver_ metrics the board keeps (docs/agent.md lists them).
struct StatusBoard::Counters {
  explicit Counters(Metrics& m)
      : claimed(m.counter("solver_tasks_claimed_total", "Tasks claimed from the market.")),
        completed(m.counter("solver_tasks_completed_total", "Tasks completed: bundle published and the market told.")),
        steps(m.counter("solver_steps_trained_total", "Optimizer steps trained (retrained steps after a resume count again).")),
        samples(m.counter("solver_samples_trained_total", "Training samples consumed by the steps trained.")),
        heartbeat_failures(m.counter("solver_heartbeat_failures_total", "Heartbeats the market did not answer.")),
        uploaded(m.counter("solver_uploaded_bytes_total", "Bundle bytes published to the store.")),
        checkpoint_write(m.histogram("solver_checkpoint_write_seconds",
                                     "Time from a checkpoint's step to its journal line (encode, durable write, hash).",
                                     kDurationBuckets)),
        publish(m.histogram("solver_publish_seconds", "Time to publish a bundle to the store.", kDurationBuckets)),
        last_error(m.gauge("solver_last_error_timestamp_seconds", "Unix time of the last error logged about work (0: none).")),
        outdated(m.gauge("solver_agent_outdated", "1 while the market accepts only newer agents and this one claims nothing.")) {
    m.gauge("solver_build_info", "The running solver's version.", {{"version", std::string(solver_version())}}).set(1);
    for (const char* fault : {"task", "worker", "unknown"}) failed_by_fault(m, fault);
    for (const char* result : {"accepted", "rejected", "declined"}) verdicts(m, result);
  }
  static Metrics::Counter failed_by_fault(Metrics& m, std::string_view fault) {
    return m.counter("solver_tasks_failed_total", "Tasks failed, by whose fault (task, worker, unknown).",
                     {{"fault", std::string(fault)}});
  }
  static Metrics::Counter verdicts(Metrics& m, std::string_view result) {
    return m.counter("solver_verdicts_total", "Verifications finished, by result (accepted, rejected, declined).",
                     {{"result", std::string(result)}});
  }
  Metrics::Counter claimed, completed, steps, samples, heartbeat_failures, uploaded;
  Metrics::Histogram checkpoint_write, publish;
  Metrics::Gauge last_error, outdated;
};

StatusBoard::StatusBoard(std::filesystem::path status_file, StatusIdentity identity,
                         std::vector<std::string> slot_devices, const std::atomic<bool>& stop)
    : status_file_(std::move(status_file)),
      identity_(std::move(identity)),
      stop_(stop),
      counters_(std::make_unique<Counters>(metrics_)) {
  for (std::string& device : slot_devices) slots_.push_back(Slot{.device = std::move(device)});
  // Rates and leases are read at scrape time, so a stalled slot shows as such.
  metrics_.add_collector([this](Metrics& metrics) {
    const std::lock_guard lock(mutex_);
    double samples_per_second = 0.0;
    double steps_per_second = 0.0;
    metrics.clear_gauges("solver_lease_seconds_left");
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const Slot& slot = slots_[i];
      const bool training = slot.activity == "training";
      samples_per_second += training ? slot.samples_per_second : 0.0;
      steps_per_second += training ? slot.steps_per_second : 0.0;
      if (slot.lease_expires_at > 0)
        metrics.gauge("solver_lease_seconds_left", "Seconds until the lease of the slot's task runs out unless renewed.",
                      {{"slot", std::to_string(i)}, {"device", slot.device}})
            .set(static_cast<double>(slot.lease_expires_at - unix_now()));
    }
    metrics.gauge("solver_samples_per_second", "Training samples per second, all slots together.").set(samples_per_second);
    metrics.gauge("solver_steps_per_second", "Optimizer steps per second, all slots together.").set(steps_per_second);
  });
}

StatusBoard::~StatusBoard() = default;

void StatusBoard::set_activity(int slot, std::string activity, std::string task_id) {
  const std::lock_guard lock(mutex_);
  Slot& entry = slots_.at(static_cast<std::size_t>(slot));
  entry.activity = std::move(activity);
  // The same task's progress stays (cooling, held, training again); another task starts afresh.
  if (entry.task_id != task_id) {
    entry.lease_expires_at = 0;
    entry.step = entry.total_steps = 0;
  }
  entry.task_id = std::move(task_id);
  entry.samples = 0;
  entry.rate_since.reset();
  entry.silent_since = std::chrono::steady_clock::now();
  entry.may_wait = std::chrono::milliseconds(0);
  entry.finished = false;
  entry.steps_per_second = entry.samples_per_second = 0.0;
  write_locked();
}

void StatusBoard::set_progress(int slot, std::int64_t step, std::int64_t total_steps) {
  const std::lock_guard lock(mutex_);
  Slot& entry = slots_.at(static_cast<std::size_t>(slot));
  entry.step = step;
  entry.total_steps = total_steps;
  const auto now = std::chrono::steady_clock::now();
  if (!entry.rate_since) {
    entry.rate_since = now;
    entry.rate_base_step = step;
    entry.rate_base_samples = entry.samples;
  } else if (const double seconds = std::chrono::duration<double>(now - *entry.rate_since).count(); seconds > 0) {
    entry.steps_per_second = static_cast<double>(step - entry.rate_base_step) / seconds;
    entry.samples_per_second = static_cast<double>(entry.samples - entry.rate_base_samples) / seconds;
  }
  write_locked();
}

void StatusBoard::count_step(int slot, std::int64_t step, std::int64_t samples) {
  counters_->steps.add();
  counters_->samples.add(static_cast<double>(samples));
  const std::lock_guard lock(mutex_);
  Slot& entry = slots_.at(static_cast<std::size_t>(slot));
  entry.step = step;
  entry.samples += samples;
  entry.silent_since = std::chrono::steady_clock::now();
}

void StatusBoard::set_lease_expiry(int slot, std::int64_t expires_at) {
  const std::lock_guard lock(mutex_);
  slots_.at(static_cast<std::size_t>(slot)).lease_expires_at = expires_at;
}

void StatusBoard::set_control(int slot, std::string control) {
  const std::lock_guard lock(mutex_);
  slots_.at(static_cast<std::size_t>(slot)).control = std::move(control);
  write_locked();
}

void StatusBoard::set_waiting(int slot, std::string activity, std::chrono::milliseconds wait) {
  set_activity(slot, std::move(activity));
  const std::lock_guard lock(mutex_);
  slots_.at(static_cast<std::size_t>(slot)).may_wait = wait;
}

void StatusBoard::set_finished(int slot) {
  set_activity(slot, "idle");
  const std::lock_guard lock(mutex_);
  slots_.at(static_cast<std::size_t>(slot)).finished = true;
}

std::optional<std::string> StatusBoard::silent_slot() const {
  const auto now = std::chrono::steady_clock::now();
  const std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const Slot& slot = slots_[i];
    if (slot.finished || now - slot.silent_since <= kSilenceLimit + slot.may_wait) continue;
    return fmt::format("slot {} ({}, {}{}) silent for {} min", i, slot.device, slot.activity,
                       slot.task_id.empty() ? "" : " task " + slot.task_id,
                       std::chrono::duration_cast<std::chrono::minutes>(now - slot.silent_since).count());
  }
  return std::nullopt;
}

std::string StatusBoard::summary() const {
  std::vector<std::string> doing;
  {
    const std::lock_guard lock(mutex_);
    for (const Slot& slot : slots_) {
      std::string line = slot.activity;
      if (!slot.task_id.empty()) line += " task " + slot.task_id;
      if (slot.total_steps > 0) line += fmt::format(" step {}/{}", slot.step, slot.total_steps);
      doing.push_back((slot.control.empty() ? "" : slot.control + ": ") + line + " on " + slot.device);
    }
  }
  // Activities quote the market's and the store's errors: one line, no control characters.
  return escape_log_text(fmt::format("{}; {} tasks completed, {} verdicts posted", fmt::join(doing, ", "),
                                     tasks_completed_.load(), verdicts_posted_.load()));
}

void StatusBoard::count_task_claimed() { counters_->claimed.add(); }

void StatusBoard::count_task_failed(std::string_view fault) { Counters::failed_by_fault(metrics_, fault).add(); }

void StatusBoard::count_verdict(std::string_view result) {
  if (result != "declined") ++verdicts_posted_;
  Counters::verdicts(metrics_, result).add();
}

void StatusBoard::count_heartbeat_failure() { counters_->heartbeat_failures.add(); }

void StatusBoard::observe_checkpoint_write(double seconds) { counters_->checkpoint_write.observe(seconds); }

void StatusBoard::observe_publish(double seconds, std::uint64_t bytes) {
  counters_->publish.observe(seconds);
  counters_->uploaded.add(static_cast<double>(bytes));
}

void StatusBoard::record_error(std::string what) {
  const std::lock_guard lock(mutex_);
  last_error_ = std::move(what);
  last_error_at_ = unix_now();
  counters_->last_error.set(static_cast<double>(last_error_at_));
  write_locked();
}

void StatusBoard::set_outdated(std::string why) {
  const std::lock_guard lock(mutex_);
  outdated_ = std::move(why);
  counters_->outdated.set(outdated_.empty() ? 0 : 1);
  write_locked();
}

void StatusBoard::count_task_completed() {
  ++tasks_completed_;
  counters_->completed.add();
  faults_in_a_row_ = 0;
}


int StatusBoard::record_worker_fault(std::string what) {
  const std::lock_guard lock(mutex_);
  last_fault_ = std::move(what);
  return ++faults_in_a_row_;
}

int StatusBoard::clear_worker_faults() { return faults_in_a_row_.exchange(0); }

std::string StatusBoard::last_worker_fault() const {
  const std::lock_guard lock(mutex_);
  return last_fault_;
}

void StatusBoard::write() {
  const std::lock_guard lock(mutex_);
  write_locked();
}

void StatusBoard::write_locked() {
  nlohmann::json slot_list = nlohmann::json::array();
  bool busy = false;
  for (const Slot& slot : slots_) {
    slot_list.push_back({{"device", slot.device},
                         {"activity", slot.activity},
                         {"control", slot.control},
                         {"task_id", slot.task_id},
                         {"step", slot.step},
                         {"total_steps", slot.total_steps},
                         {"steps_per_second", slot.steps_per_second},
                         {"samples_per_second", slot.samples_per_second},
                         {"eta_seconds", slot.steps_per_second > 0 && slot.total_steps > slot.step
                                             ? nlohmann::json(static_cast<double>(slot.total_steps - slot.step) /
                                                              slot.steps_per_second)
                                             : nlohmann::json(nullptr)},
                         {"lease_expires_at", slot.lease_expires_at > 0 ? nlohmann::json(slot.lease_expires_at)
                                                                        : nlohmann::json(nullptr)}});
    busy = busy || slot.activity != "idle";
  }
  const nlohmann::json status{{"pid", ::getpid()},
                              {"name", identity_.name},
                              {"market", identity_.market_url},
                              {"public_key", identity_.public_key},
                              {"activity", stop_ ? "stopped" : busy ? "working" : "idle"},
                              {"slots", slot_list},
                              {"tasks_completed", tasks_completed_.load()},
                              {"verdicts_posted", verdicts_posted_.load()},
                              {"faults_in_a_row", faults_in_a_row_.load()},
                              {"last_fault", last_fault_},
                              {"version", solver_version()},
                              {"outdated", outdated_},
                              {"last_error", last_error_},
                              {"last_error_at", last_error_at_ > 0 ? nlohmann::json(last_error_at_) : nlohmann::json(nullptr)},
                              {"updated_at", now_utc()}};
  try {
    write_file_durably(status_file_, status.dump(2));
  } catch (const Error& error) {
    log_warn("agent", "cannot write status.json: {}", error.what());
  }
}

}  // namespace solver::agent::detail
