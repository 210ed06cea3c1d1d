// A task in flight as it lives on disk: <work_dir>/tasks/<task id>/state.json beside the bundle
// folder, rewritten durably at every change of phase. The folder is the whole state of the task:
// an agent that restarts reads it and carries on where the phase says (task_job.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "net/market_protocol.h"

namespace solver::agent::detail {

// The phases of a task in flight, in order. Each is written before the work it names begins
// (training) or right after the work it names is durable (bundled, published).
enum class TaskPhase {
  Training,   // leased; the bundle folder may hold a journal to resume from
  Bundled,    // the bundle is finished and signed
  Published,  // the store holds it at bundle_address; the market has not acknowledged it yet
};

std::string_view phase_name(TaskPhase phase);

struct TaskState {
  std::string task_id;
  std::string lease_id;
  nlohmann::json task;
  std::string task_sha256;
  std::int64_t lease_seconds = 0;
  TaskPhase phase = TaskPhase::Training;
  std::string manifest_sha256;     // from phase bundled on
  std::string manifest_signature;  // from phase bundled on
  std::string bundle_address;      // from phase published on
  // Data-parallel shards each step's batch is split into: 0, one per device of the slot, until a
  // step runs out of memory and the task trains again with more (task_job.h).
  int shards = 0;
  std::filesystem::path dir;       // not saved: the folder state.json lives in

  // A task just leased, in phase Training, in `dir` (not created, not saved).
  static TaskState leased(const net::Lease& lease, std::filesystem::path dir);

  std::filesystem::path bundle_dir() const { return dir / "bundle"; }

  // Writes dir/state.json durably (temp file, fsync, rename).
  void save() const;
  // Throws Error(Input) naming the file and what is wrong with it.
  static TaskState load(const std::filesystem::path& dir);
};

// Every task folder under `tasks_dir` whose state.json reads back and names that folder's task.
// Others are logged and left for a person to look at.
std::vector<TaskState> tasks_in_flight(const std::filesystem::path& tasks_dir);

}  // namespace solver::agent::detail
