#include "agent/detail/disk_watch.h"

#include <fmt/format.h>

#include <system_error>

#include "common/log.h"

namespace solver::agent::detail {

DiskWatch::DiskWatch(std::filesystem::path work_dir, AgentControls& controls)
    : work_dir_(std::move(work_dir)), controls_(controls) {}

void DiskWatch::check(std::uint64_t min_free_bytes) {
  std::error_code error;
  const std::uint64_t free_bytes = std::filesystem::space(work_dir_, error).available;
  if (!error) apply(free_bytes, min_free_bytes);
}

void DiskWatch::apply(std::uint64_t free_bytes, std::uint64_t min_free_bytes) {
  const bool held = controls_.disk_hold().has_value();
  if (free_bytes < min_free_bytes) {
    const std::string reason = fmt::format("disk low: {:.1f} GB free, limits.min_free_disk_gb is {}", free_bytes / 1e9,
                                           min_free_bytes / 1e9);
    if (!held)
      log_warn("agent", "{} under {}: training stops at its next checkpoint and holds its lease; nothing is claimed "
               "until the disk has room again", reason, work_dir_.string());
    controls_.set_disk_hold(reason);
  } else if (held && free_bytes >= min_free_bytes + min_free_bytes / 10) {
    log_info("agent", "{:.1f} GB free under {} again (limits.min_free_disk_gb is {}): training goes on",
             free_bytes / 1e9, work_dir_.string(), min_free_bytes / 1e9);
    controls_.set_disk_hold(std::nullopt);
  }
}

}  // namespace solver::agent::detail
