// This rig as the agent sees it (whether it can work at all is agent/doctor.h): what it tells the market about
// itself, whether its disk has room for more, and the lock that keeps one agent per work dir.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "agent/agent_config.h"
#include "net/market_protocol.h"

namespace solver::agent::detail {

// What the agent registers with: its hardware (the first device's memory), roles, the model
// kinds it can train, the devices it has `quarantined` (device: why; hardware.quarantined), and
// the `solver bench --save` figures when the config's bench file holds them. `bench_note` says
// which, for the log.
net::WorkerProfile worker_profile(const AgentConfig& config, const std::map<std::string, std::string>& quarantined,
                                  std::string& bench_note);

// False (with a warning) when the work dir's disk has less free than limits.min_free_disk_gb.
bool disk_has_room(const AgentConfig& config);

// One agent per work dir: two would train, publish and delete the same task folders. An flock
// on <work_dir>/agent.lock, held while the agent lives; the kernel drops it if the process dies.
class WorkDirLock {
 public:
  // Throws Error(Config) naming the pid of the agent that holds it.
  explicit WorkDirLock(const std::filesystem::path& work_dir);
  ~WorkDirLock();
  WorkDirLock(const WorkDirLock&) = delete;
  WorkDirLock& operator=(const WorkDirLock&) = delete;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Whether a live process holds `work_dir`'s WorkDirLock.
bool work_dir_locked(const std::filesystem::path& work_dir);

}  // namespace solver::agent::detail
