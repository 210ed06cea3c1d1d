// The work dir's free space against limits.min_free_disk_gb, checked every few seconds by the
// agent: below the mark every slot is held (AgentControls::set_disk_hold), so training stops at
// its next checkpoint and keeps its lease, rather than failing when the disk fills; back above
// the mark plus a tenth of it (so a disk hovering at the mark does not start and stop training
// each check), the hold ends and training goes on from the checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>

#include "agent/detail/agent_controls.h"

namespace solver::agent::detail {

class DiskWatch {
 public:
  DiskWatch(std::filesystem::path work_dir, AgentControls& controls);

  // Reads the free space of the work dir's disk and applies it; a disk it cannot read changes nothing.
  void check(std::uint64_t min_free_bytes);
  // Holds or frees the slots for `free_bytes` against `min_free_bytes` (0: never held).
  void apply(std::uint64_t free_bytes, std::uint64_t min_free_bytes);

 private:
  std::filesystem::path work_dir_;
  AgentControls& controls_;
};

}  // namespace solver::agent::detail
