// What each slot of the agent is doing and what the agent has done, mirrored to
// <work_dir>/status.json at every change: `solver status` reads it, and so can a person or a
// monitoring script. Safe from every slot's thread. It also holds the agent's metrics
// (agent/metrics.h), which the jobs report to through it and the metrics endpoint serves.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics.h"

namespace solver::agent::detail {

struct StatusIdentity {
  std::string name;
  std::string market_url;
  std::string public_key;
};

class StatusBoard {
 public:
  StatusBoard(std::filesystem::path status_file, StatusIdentity identity, std::vector<std::string> slot_devices,
              const std::atomic<bool>& stop);
  ~StatusBoard();

  void set_activity(int slot, std::string activity, std::string task_id = "");
  // Also measures the slot's rate (since its first progress report of this activity) and ETA.
  void set_progress(int slot, std::int64_t step, std::int64_t total_steps);
  // Training step `step`, of `samples` samples, is done: counted and shown by summary() at
  // once, not written (set_progress writes, and measures the rates).
  void count_step(int slot, std::int64_t step, std::int64_t samples);
  // Signs of life for systemd's watchdog (service_manager.h): set_activity and count_step show one.
  // set_waiting: the slot waits `wait` for its next turn, and may stay silent that long on top of
  // kSilenceLimit. set_finished: its loop has ended; it is idle and no longer expected to show life.
  void set_waiting(int slot, std::string activity, std::chrono::milliseconds wait);
  void set_finished(int slot);
  // How long a working slot may go without a sign of life before it counts as hung: longer than a
  // step may take (a stuck step ends the process after ceilings' max_step_seconds, 10 min by
  // default), than a download, an upload or a replayed segment should.
  static constexpr std::chrono::minutes kSilenceLimit{30};
  // "slot 0 (cuda:0, training task X) silent for 31 min", or nullopt while every slot shows life.
  std::optional<std::string> silent_slot() const;
  // What the agent does now, in one line (systemd's STATUS=): "training task X step 120/938 on
  // cuda:0; 3 tasks completed, 0 verdicts posted".
  std::string summary() const;
  // When the slot's lease runs out (unix seconds; 0: it holds none).
  void set_lease_expiry(int slot, std::int64_t expires_at);
  // What the operator's controls make of the slot (AgentControls::state_of): "disabled",
  // "paused", "draining" or "" (none); shown per slot in status.json and in summary().
  void set_control(int slot, std::string control);

  void count_task_completed();
  void count_task_claimed();
  void count_task_failed(std::string_view fault);  // net::fault_name: "task", "worker", "unknown"
  // A verification finished: "accepted" or "rejected" (a verdict posted), or "declined".
  void count_verdict(std::string_view result);
  void count_heartbeat_failure();
  void observe_checkpoint_write(double seconds);   // from a checkpoint's step to its journal line
  void observe_publish(double seconds, std::uint64_t bytes);
  // The latest error the agent logged about its work, with its time: status.json and solver_last_error_timestamp_seconds.
  void record_error(std::string what);
  Metrics& metrics() { return metrics_; }
  std::int64_t tasks_completed() const { return tasks_completed_; }
  std::int64_t verdicts_posted() const { return verdicts_posted_; }

  // Tasks failed in a row by this rig's fault (not their own): counted by record_worker_fault,
  // reset by a completed task or an operator's reload. Returns the new count.
  int record_worker_fault(std::string what);
  // Returns the count before the reset.
  int clear_worker_faults();
  int worker_faults_in_a_row() const { return faults_in_a_row_; }
  std::string last_worker_fault() const;

  // Why the market no longer lets this agent claim (detail/version_gate.h), "" while it does:
  // status.json's "outdated" and the solver_agent_outdated gauge.
  void set_outdated(std::string why);

  void write();

 private:
  struct Slot {
    std::string device;
    std::string activity = "starting";
    std::string task_id;
    std::int64_t step = 0;
    std::int64_t total_steps = 0;
    std::int64_t samples = 0;  // trained in this activity
    // The rate is measured from the first progress report of the activity.
    std::optional<std::chrono::steady_clock::time_point> rate_since;
    std::int64_t rate_base_step = 0, rate_base_samples = 0;
    double steps_per_second = 0.0, samples_per_second = 0.0;
    std::int64_t lease_expires_at = 0;
    std::chrono::steady_clock::time_point silent_since = std::chrono::steady_clock::now();  // its last sign of life
    std::chrono::milliseconds may_wait{0};  // on top of kSilenceLimit
    bool finished = false;
    std::string control;
  };
  struct Counters;  // the metrics' handles
  void write_locked();

  const std::filesystem::path status_file_;
  const StatusIdentity identity_;
  const std::atomic<bool>& stop_;
  mutable std::mutex mutex_;
  std::vector<Slot> slots_;  // fixed in number; fields guarded by mutex_
  std::atomic<std::int64_t> tasks_completed_{0};
  std::atomic<std::int64_t> verdicts_posted_{0};
  std::atomic<int> faults_in_a_row_{0};
  std::string last_fault_;  // guarded by mutex_
  std::string last_error_;  // guarded by mutex_
  std::string outdated_;    // guarded by mutex_
  std::int64_t last_error_at_ = 0;  // unix seconds; guarded by mutex_
  Metrics metrics_;
  std::unique_ptr<Counters> counters_;
};

}  // namespace solver::agent::detail
