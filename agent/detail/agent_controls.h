// What the operator asked of the running agent through its control socket (control_server.h):
// drain (claim nothing, finish what is in flight, exit 0), pause and resume, and devices
// disabled and enabled; and the devices the GPU steward quarantined (gpu_steward.h) until the
// operator clears them. A paused slot, or one on a disabled or quarantined device, stops its
// training at the next checkpoint, holds the lease with heartbeats and claims nothing
// (task_job.h). Kept in memory only: a restarted agent starts with none of them. Safe from every thread.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics.h"

namespace solver::agent::detail {

class AgentControls {
 public:
  using Clock = std::chrono::steady_clock;

  // One entry per slot: the slot's device as the config names it ("cpu", "cuda:0,cuda:1").
  explicit AgentControls(std::vector<std::string> slot_devices);

  // Answers one request of the control socket: {"command": "drain" | "pause" | "resume" |
  // "status" | "disable" | "enable" | "clear", "device": "cuda:0" (disable, enable, clear)}.
  // The reply is {"ok": true, "message": ..., "draining", "paused", "disabled": [...],
  // "quarantined": {device: why}}, or {"ok": false, "error": ...} naming what was wrong (an
  // unknown command, a device no slot trains on).
  nlohmann::json answer(const nlohmann::json& request);

  // Takes `device` (as a slot names it) out of work until a "clear": `reason` is a short word for
  // the metric's label ("ecc_uncorrected", "lost"), `why` says it in full. Returns false when it
  // already was quarantined (the first reason stays).
  bool quarantine(const std::string& device, std::string reason, std::string why);
  // The devices quarantined now, and why: what the agent reports at registration.
  std::map<std::string, std::string> quarantined() const;
  // The rig's own hold on every slot while the work dir's disk is low (disk_watch.h): `reason`
  // says so ("disk low: ..."); nullopt ends it. Apart from the operator's controls: `resume`
  // does not end it, and its end does not end a pause. It has no deadline: a task it holds is
  // never given back for it (held_since does not count it).
  void set_disk_hold(std::optional<std::string> reason);
  std::optional<std::string> disk_hold() const;
  // The idle-only mode's hold on `device` (gpu_steward.h): `why` it may not work now (another
  // process uses it, outside idle_only.hours); nullopt ends it. Like the disk hold, `resume` does
  // not end it; unlike it, held_since counts it, so a task held this long is given back after
  // pause.release_after_seconds like a paused one.
  void set_idle_hold(const std::string& device, std::optional<std::string> why);
  // Since when the idle-only mode holds a device of the slot (the earliest), nullopt while it does not.
  std::optional<Clock::time_point> idle_hold_since(const std::string& slot_device) const;

  bool draining() const;
  // Whether the slot on `slot_device` is held: the agent is paused or one of its devices is
  // disabled, quarantined or held by the idle-only mode, or the disk is low. A held slot stops training at the next
  // checkpoint and claims nothing.
  bool holds(const std::string& slot_device) const;
  // Since when the slot has been held, disk hold aside (the earliest of the pause and its devices'
  // disabling, quarantine and idle-only hold).
  std::optional<Clock::time_point> held_since(const std::string& slot_device) const;
  // Whether the slot may claim a task or a verification: neither draining nor held.
  bool may_claim(const std::string& slot_device) const;
  // What status.json shows for the slot: "quarantined: <why>", "disabled", "paused",
  // "idle-only: <why>", the disk hold's reason, "draining" or "" (none).
  std::string state_of(const std::string& slot_device) const;

  // Waits `delay`, or less: until `stop` is set or a control changes (a resume wakes an idle slot at once).
  void wait(std::chrono::milliseconds delay, const std::atomic<bool>& stop) const;
  // Called after each change, outside the lock (the status board mirrors the states).
  void on_change(std::function<void()> callback);
  // solver_agent_draining, solver_agent_paused, solver_slot_disabled{slot,device} and
  // solver_slot_quarantined{slot,device,reason}, solver_slot_idle_hold{slot,device} and
  // solver_agent_disk_low, read at scrape time.
  void add_metrics(Metrics& metrics) const;

 private:
  nlohmann::json state_locked() const;
  std::string device_of_a_slot(std::string_view device) const;  // its canonical name; throws Error(Input)
  void changed();

  const std::vector<std::string> slot_devices_;
  const std::vector<std::vector<std::string>> slot_device_names_;  // each slot's devices, parsed
  mutable std::mutex mutex_;
  mutable std::condition_variable change_;
  std::uint64_t generation_ = 0;  // counts changes, for wait()
  bool draining_ = false;
  std::optional<Clock::time_point> paused_since_;
  std::map<std::string, Clock::time_point> disabled_since_;  // by device name
  struct Quarantine {
    Clock::time_point since;
    std::string reason, why;
  };
  std::map<std::string, Quarantine> quarantined_;  // by device name
  struct IdleHold {
    Clock::time_point since;
    std::string why;
  };
  std::map<std::string, IdleHold> idle_held_;  // by device name
  std::optional<std::string> disk_hold_;
  std::function<void()> on_change_;
};

}  // namespace solver::agent::detail
