// One task in flight, as a state machine over its folder (task_state.h):
//
//   claimed ─▶ training ─▶ bundled ─▶ published ─▶ completed: folder removed
//                 │   ├─ stopped: stays in training; resumes from the last journaled checkpoint
//                 │   └─ held by the operator (a pause, a disabled device) or a low disk: stops at the next
//                 │      checkpoint, heartbeats the lease until the hold ends, or releases the task to the market
//                 │      after pause.release_after_seconds of the operator's hold (a low disk has no deadline)
//                 ├─ out of memory: trains again from step 0 with each step's batch in more shards
//                 │  (twice as many, or the next count that divides the batch), run one after another
//                 └─ failed, cancelled, lease lost: the market is told (when it should be), folder removed
//
// next() does the work of the current phase and moves the task on. What an error means there
// is the error policy's (error_policy.h): a store or market that is down leaves the finished
// bundle spooled in its phase for a later turn, never lost.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "agent/agent_config.h"
#include "agent/detail/error_policy.h"
#include "agent/detail/services.h"
#include "agent/detail/task_state.h"
#include "net/market_protocol.h"
#include "proof/bundle_writer.h"

namespace solver {
class Error;
struct Task;
}

namespace solver::agent {
class TrainingJob;
}

namespace solver::agent::detail {

class TaskJob {
 public:
  enum class Progress {
    Advanced,  // the task moved to its next phase
    Waiting,   // it stays in its phase for now: stopped, or the store or market is down
    Done,      // completed, failed or dropped; its folder is gone
    Held,      // stopped at a checkpoint for a hold (agent_controls.h); next() holds the lease until it may go on
  };

  // A task the market just leased: its folder, with state.json in phase training; its bundle
  // starts at step 0.
  static TaskJob claim(const net::Lease& lease, const std::filesystem::path& tasks_dir, AgentConfig settings,
                       AgentServices& services, SlotPlace place);
  // A task found in flight on disk: training resumes from its bundle's journal. `settings` are
  // the agent's when the job starts (a reload applies to later jobs).
  TaskJob(TaskState state, AgentConfig settings, AgentServices& services, SlotPlace place);
  ~TaskJob();
  TaskJob(TaskJob&&) noexcept;

  const TaskState& state() const { return state_; }

  // The work of the current phase.
  Progress next();
  // next() until the task is done (true) or has to wait (false).
  bool run();

 private:
  Progress train();
  Progress publish();
  Progress complete();
  // The training job of the task, resumed from its bundle's journal when there is one; nullptr
  // when the task failed or has to wait (handled).
  std::unique_ptr<TrainingJob> open_training(const Task& task, Progress& handled);
  // Renews the lease and commits the checkpoints written since the last accepted heartbeat.
  // Returns whether the market answered; sets `abandon` when the task is not ours any more.
  bool heartbeat(const std::vector<CheckpointCommitment>& written, std::set<std::int64_t>& committed,
                 std::int64_t step, std::int64_t total, float loss, std::atomic<bool>& abandon);
  // While the slot is held (the operator, a low disk): nothing on the device, the lease renewed by heartbeats.
  // nullopt once the hold ends (training goes on from the journal); else how the task left: the
  // agent stopped (Waiting), or it was cancelled, lost, or released after pause.release_after_seconds (Done).
  std::optional<Progress> hold();
  std::chrono::milliseconds heartbeat_interval() const;
  // What the error policy says about `error` at `stage`, done.
  Progress respond(Stage stage, const std::exception& error);
  // After a step ran out of memory: the bundle starts again from step 0 with more shards per step
  // (one shard count per bundle, runtime.shards, so that a verifier replays every step as it
  // ran); with no larger count that divides the batch, the task fails by the rig's fault.
  Progress split_batch(const Error& out_of_memory);
  // Tells the market the task failed and whose fault it was; removes the folder.
  Progress fail(const Error& failure);
  Progress forget(std::string_view why);

  TaskState state_;
  AgentConfig settings_;
  AgentServices& services_;
  SlotPlace place_;
  // Where training stopped for the operator, for the heartbeats while held (0: not known).
  std::int64_t held_step_ = 0, held_total_steps_ = 0;
  float held_loss_ = 0.0f;
  bool resume_ = true;  // false for a fresh claim: whatever lies in its bundle folder is not ours to resume
};

}  // namespace solver::agent::detail
