#include "agent/detail/task_state.h"

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"

namespace solver::agent::detail {
namespace {

using json = nlohmann::json;

constexpr std::string_view kTaskStateSchema = "solver.agent-task/1";
constexpr TaskPhase kPhases[] = {TaskPhase::Training, TaskPhase::Bundled, TaskPhase::Published};

TaskPhase parse_phase(const std::string& name) {
  for (const TaskPhase phase : kPhases)
    if (phase_name(phase) == name) return phase;
  throw Error(ErrorKind::Input, "unknown phase \"" + name + "\"");
}

}  // namespace

std::string_view phase_name(TaskPhase phase) {
  switch (phase) {
    case TaskPhase::Training: return "training";
    case TaskPhase::Bundled: return "bundled";
    case TaskPhase::Published: return "published";
  }
  return "unknown";
}

TaskState TaskState::leased(const net::Lease& lease, std::filesystem::path dir) {
  TaskState state;
  state.task_id = lease.task_id;
  state.lease_id = lease.lease_id;
  state.task = lease.task;
  state.task_sha256 = lease.task_sha256;
  state.lease_seconds = lease.lease_seconds;
  state.dir = std::move(dir);
  return state;
}

void TaskState::save() const {
  write_file_durably(dir / "state.json", json{{"schema", kTaskStateSchema},
                                              {"task_id", task_id},
                                              {"lease_id", lease_id},
                                              {"task", task},
                                              {"task_sha256", task_sha256},
                                              {"lease_seconds", lease_seconds},
                                              {"phase", phase_name(phase)},
                                              {"manifest_sha256", manifest_sha256},
                                              {"manifest_signature", manifest_signature},
                                              {"bundle_address", bundle_address},
                                              {"shards", shards}}
                                             .dump(2));
}

TaskState TaskState::load(const std::filesystem::path& dir) {
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
    state.phase = parse_phase(saved.at("phase").get<std::string>());
    state.manifest_sha256 = saved.at("manifest_sha256").get<std::string>();
    state.manifest_signature = saved.at("manifest_signature").get<std::string>();
    state.bundle_address = saved.at("bundle_address").get<std::string>();
    state.shards = saved.value("shards", 0);  // absent in the folders of agents before 0.2
    if (state.shards < 0) throw Error(ErrorKind::Input, "shards is " + std::to_string(state.shards));
    state.dir = dir;
    return state;
  } catch (const json::exception& error) {
    throw Error(ErrorKind::Input, path.string() + " is damaged: " + error.what());
  } catch (const Error& error) {
    throw error.with_context(path.string());
  }
}

std::vector<TaskState> tasks_in_flight(const std::filesystem::path& tasks_dir) {
  std::vector<TaskState> states;
  if (!std::filesystem::exists(tasks_dir)) return states;
  for (const auto& entry : std::filesystem::directory_iterator(tasks_dir)) {
    try {
      if (!entry.is_directory()) continue;
      TaskState state = TaskState::load(confined_path(tasks_dir, entry.path().filename()));
      if (state.task_id != entry.path().filename())
        throw Error(ErrorKind::Input, entry.path().string() + " holds the state of task " + state.task_id);
      states.push_back(std::move(state));
    } catch (const Error& error) {
      log_error("agent", "skipping a task folder: {}", error.what());
    }
  }
  return states;
}

}  // namespace solver::agent::detail
