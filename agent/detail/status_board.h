// What each slot of the agent is doing and what the agent has done, mirrored to
// <work_dir>/status.json at every change: `solver status` reads it, and so can a person or a
// monitoring script. Safe from every slot's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

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

  void set_activity(int slot, std::string activity, std::string task_id = "");
  void set_progress(int slot, std::int64_t step, std::int64_t total_steps);

  void count_task_completed();
  void count_verdict_posted();
  std::int64_t tasks_completed() const { return tasks_completed_; }
  std::int64_t verdicts_posted() const { return verdicts_posted_; }

  // Tasks failed in a row by this rig's fault (not their own): counted by record_worker_fault,
  // reset by a completed task or an operator's reload. Returns the new count.
  int record_worker_fault(std::string what);
  // Returns the count before the reset.
  int clear_worker_faults();
  int worker_faults_in_a_row() const { return faults_in_a_row_; }
  std::string last_worker_fault() const;

  void write();

 private:
  struct Slot {
    std::string device;
    std::string activity = "starting";
    std::string task_id;
    std::int64_t step = 0;
    std::int64_t total_steps = 0;
  };
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
};

}  // namespace solver::agent::detail
