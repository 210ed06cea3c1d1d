#include "agent/detail/rig.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/task.h"
#include "common/version.h"
#include "hardware/nvml.h"
#include "kernels/distance.h"

namespace solver::agent::detail {

using json = nlohmann::json;

net::WorkerProfile worker_profile(const AgentConfig& config, const std::map<std::string, std::string>& quarantined,
                                  std::string& bench_note) {
  net::WorkerProfile profile;
  profile.name = config.name;
  profile.roles = config.roles;
  const std::string& device = config.devices.front();
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory();
  json gpus = json::array();
  for (const hardware::GpuInfo& gpu : inventory.gpus)
    gpus.push_back({{"name", gpu.name}, {"memory_mb", gpu.memory_total_bytes.value_or(0) >> 20}});
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  const std::int64_t ram_mb = pages > 0 && page_size > 0 ? (static_cast<std::int64_t>(pages) * page_size) >> 20 : 0;
  profile.devices = kernels::cuda_device_count();
  // On the CPU, the host's tensor memory limit when there is one.
  profile.memory_mb = config.max_host_memory_bytes > 0
                          ? std::min(ram_mb, static_cast<std::int64_t>(config.max_host_memory_bytes >> 20))
                          : ram_mb;
  // A task's memory budget is checked against the device it trains on: the first slot's first device.
  const Device first = parse_device_list(device).front();
  if (const hardware::GpuInfo* gpu = first.is_cuda() ? hardware::gpu_of_cuda_device(inventory, first.index) : nullptr)
    profile.memory_mb = static_cast<std::int64_t>(gpu->memory_total_bytes.value_or(0) >> 20);
  profile.hardware = {{"cpu_threads", std::thread::hardware_concurrency()},
                      {"ram_mb", ram_mb},
                      {"gpus", gpus},
                      {"driver", inventory.driver_version},
                      {"device", device},
                      {"tasks_at_once", config.tasks_at_once},
                      {"quarantined", quarantined}};
  bench_note = "no bench figures (run `solver bench --save " + config.bench_file.string() + "` to add them)";
  if (std::filesystem::exists(config.bench_file)) {
    try {
      profile.hardware["bench"] = parse_json_document(read_file(config.bench_file), config.bench_file.string());
      bench_note = "with the bench figures of " + config.bench_file.string();
    } catch (const Error& error) {
      log_warn("agent", "ignoring the bench figures: {}", error.what());
    }
  }
  profile.model_kinds.assign(kModelKinds.begin(), kModelKinds.end());
  profile.agent_version = std::string(solver_version());
  return profile;
}

bool disk_has_room(const AgentConfig& config) {
  std::error_code error;
  const std::uint64_t free_bytes = std::filesystem::space(config.work_dir, error).available;
  if (error || free_bytes >= config.min_free_disk_bytes) return true;
  log_warn("agent", "only {:.1f} GB free under {} (limits.min_free_disk_gb is {:.1f}): claiming nothing new",
           free_bytes / 1e9, config.work_dir.string(), config.min_free_disk_bytes / 1e9);
  return false;
}

WorkDirLock::WorkDirLock(const std::filesystem::path& work_dir) : path_(work_dir / "agent.lock") {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(ErrorKind::Config, "config.work_dir: cannot open " + path_.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {};
    [[maybe_unused]] const ssize_t read = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    throw Error(ErrorKind::Config, "another agent (pid " + std::string(holder) + ") works in " + work_dir.string() +
                                       ": one agent per work dir (config.work_dir)");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    log_warn("agent", "cannot write the pid into {}", path_.string());
}

WorkDirLock::~WorkDirLock() { ::close(fd_); }

bool work_dir_locked(const std::filesystem::path& work_dir) {
  const std::filesystem::path path = work_dir / "agent.lock";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // no agent has locked it yet
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return held;
}

}  // namespace solver::agent::detail
