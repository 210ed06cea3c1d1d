#include "agent/detail/agent_controls.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/device.h"
#include "common/error.h"
#include "common/log.h"

namespace solver::agent::detail {
namespace {

// How often wait() looks at the stop flag (a signal cannot notify a condition variable).
constexpr std::chrono::milliseconds kStopPoll{100};

std::vector<std::vector<std::string>> device_names(const std::vector<std::string>& slot_devices) {
  std::vector<std::vector<std::string>> names;
  for (const std::string& slot : slot_devices) {
    std::vector<std::string>& slot_names = names.emplace_back();
    for (const Device& device : parse_device_list(slot)) slot_names.push_back(device.name());
  }
  return names;
}

}  // namespace

AgentControls::AgentControls(std::vector<std::string> slot_devices)
    : slot_devices_(std::move(slot_devices)), slot_device_names_(device_names(slot_devices_)) {}

nlohmann::json AgentControls::answer(const nlohmann::json& request) {
  if (!request.is_object() || !request.contains("command") || !request["command"].is_string())
    throw Error(ErrorKind::Input, "expected a JSON object with a \"command\" string, e.g. {\"command\": \"pause\"}");
  const std::string command = request["command"].get<std::string>();
  const bool of_a_device = command == "disable" || command == "enable" || command == "clear";
  if (of_a_device && !(request.contains("device") && request["device"].is_string()))
    throw Error(ErrorKind::Input, command + " needs a \"device\" string, e.g. \"cuda:0\"");
  std::string message;
  bool did_change = false;
  {
    const std::lock_guard lock(mutex_);
    if (command == "drain") {
      did_change = !draining_;
      draining_ = true;
      message = paused_since_ ? "draining: the agent is paused, so its tasks in flight finish (and it exits) once resumed"
                              : "draining: claiming nothing new; the agent exits once its tasks in flight are completed";
    } else if (command == "pause") {
      did_change = !paused_since_;
      if (!paused_since_) paused_since_ = Clock::now();
      message = "paused: training stops at the next checkpoint and the leases are held";
    } else if (command == "resume") {
      did_change = paused_since_.has_value();
      paused_since_.reset();
      message = did_change ? "resumed" : "was not paused";
    } else if (of_a_device) {
      const std::string device = device_of_a_slot(request["device"].get<std::string>());
      if (command == "disable") {
        did_change = disabled_since_.emplace(device, Clock::now()).second;
        message = device + " disabled: its slot stops at the next checkpoint and claims nothing";
      } else if (command == "clear") {
        did_change = quarantined_.erase(device) > 0;
        message = device + (did_change ? " cleared: its slot claims again" : " was not quarantined");
      } else {
        did_change = disabled_since_.erase(device) > 0;
        message = device + (did_change ? " enabled" : " was not disabled");
      }
    } else if (command != "status") {
      throw Error(ErrorKind::Input, "unknown command \"" + command +
                                        "\" (drain, pause, resume, disable, enable, clear or status)");
    }
    if (did_change) ++generation_;
  }
  if (did_change) {
    log_info("agent", "control: {}", message);
    changed();
  }
  const std::lock_guard lock(mutex_);
  nlohmann::json reply = state_locked();
  reply["ok"] = true;
  if (!message.empty()) reply["message"] = message;
  return reply;
}

bool AgentControls::quarantine(const std::string& device, std::string reason, std::string why) {
  {
    const std::lock_guard lock(mutex_);
    if (!quarantined_.emplace(device, Quarantine{Clock::now(), std::move(reason), why}).second) return false;
    ++generation_;
  }
  log_error("agent", "{} quarantined: {}; its slot stops at the next checkpoint and claims nothing until "
            "`solver agent clear {}`", device, why, device);
  changed();
  return true;
}

std::map<std::string, std::string> AgentControls::quarantined() const {
  const std::lock_guard lock(mutex_);
  std::map<std::string, std::string> devices;
  for (const auto& [device, quarantine] : quarantined_) devices.emplace(device, quarantine.why);
  return devices;
}

std::string AgentControls::device_of_a_slot(std::string_view text) const {
  const std::string name = parse_device(text).name();
  for (const std::vector<std::string>& names : slot_device_names_)
    if (std::ranges::find(names, name) != names.end()) return name;
  throw Error(ErrorKind::Input, fmt::format("no slot of this agent trains on {} (its slots: {})", name,
                                            fmt::join(slot_devices_, ", ")));
}

void AgentControls::changed() {
  change_.notify_all();
  std::function<void()> callback;
  {
    const std::lock_guard lock(mutex_);
    callback = on_change_;
  }
  if (callback) callback();
}

nlohmann::json AgentControls::state_locked() const {
  nlohmann::json disabled = nlohmann::json::array();
  for (const auto& [device, since] : disabled_since_) disabled.push_back(device);
  nlohmann::json quarantined = nlohmann::json::object();
  for (const auto& [device, quarantine] : quarantined_) quarantined[device] = quarantine.why;
  nlohmann::json idle_held = nlohmann::json::object();
  for (const auto& [device, hold] : idle_held_) idle_held[device] = hold.why;
  return {{"draining", draining_}, {"paused", paused_since_.has_value()}, {"disabled", disabled},
          {"quarantined", quarantined}, {"idle_held", idle_held},
          {"disk_hold", disk_hold_ ? nlohmann::json(*disk_hold_) : nlohmann::json()}};
}

bool AgentControls::draining() const {
  const std::lock_guard lock(mutex_);
  return draining_;
}

std::optional<AgentControls::Clock::time_point> AgentControls::held_since(const std::string& slot_device) const {
  const auto slot = std::ranges::find(slot_devices_, slot_device);
  if (slot == slot_devices_.end()) return std::nullopt;
  const std::lock_guard lock(mutex_);
  std::optional<Clock::time_point> since = paused_since_;
  for (const std::string& name : slot_device_names_[static_cast<std::size_t>(slot - slot_devices_.begin())]) {
    if (const auto disabled = disabled_since_.find(name); disabled != disabled_since_.end())
      since = since ? std::min(*since, disabled->second) : disabled->second;
    if (const auto quarantined = quarantined_.find(name); quarantined != quarantined_.end())
      since = since ? std::min(*since, quarantined->second.since) : quarantined->second.since;
    if (const auto idle = idle_held_.find(name); idle != idle_held_.end())
      since = since ? std::min(*since, idle->second.since) : idle->second.since;
  }
  return since;
}

std::optional<AgentControls::Clock::time_point> AgentControls::idle_hold_since(const std::string& slot_device) const {
  const auto slot = std::ranges::find(slot_devices_, slot_device);
  if (slot == slot_devices_.end()) return std::nullopt;
  const std::lock_guard lock(mutex_);
  std::optional<Clock::time_point> since;
  for (const std::string& name : slot_device_names_[static_cast<std::size_t>(slot - slot_devices_.begin())])
    if (const auto idle = idle_held_.find(name); idle != idle_held_.end())
      since = since ? std::min(*since, idle->second.since) : idle->second.since;
  return since;
}

void AgentControls::set_idle_hold(const std::string& device, std::optional<std::string> why) {
  {
    const std::lock_guard lock(mutex_);
    const auto held = idle_held_.find(device);
    if (!why) {
      if (held == idle_held_.end()) return;
      idle_held_.erase(held);
      ++generation_;  // wakes the held slot at once
    } else if (held == idle_held_.end()) {
      idle_held_.emplace(device, IdleHold{Clock::now(), std::move(*why)});
      ++generation_;
    } else {
      if (held->second.why == *why) return;
      held->second.why = std::move(*why);  // a new reason for the same hold only shows: its start stays
    }
  }
  changed();
}

bool AgentControls::holds(const std::string& slot_device) const {
  return held_since(slot_device).has_value() || disk_hold().has_value();
}

void AgentControls::set_disk_hold(std::optional<std::string> reason) {
  {
    const std::lock_guard lock(mutex_);
    if (reason == disk_hold_) return;
    // Only a hold that starts or ends wakes the waiting slots; a new figure of free space just shows.
    if (reason.has_value() != disk_hold_.has_value()) ++generation_;
    disk_hold_ = std::move(reason);
  }
  changed();
}

std::optional<std::string> AgentControls::disk_hold() const {
  const std::lock_guard lock(mutex_);
  return disk_hold_;
}

bool AgentControls::may_claim(const std::string& slot_device) const { return !draining() && !holds(slot_device); }

std::string AgentControls::state_of(const std::string& slot_device) const {
  const auto slot = std::ranges::find(slot_devices_, slot_device);
  const std::lock_guard lock(mutex_);
  if (slot != slot_devices_.end()) {
    const std::vector<std::string>& names = slot_device_names_[static_cast<std::size_t>(slot - slot_devices_.begin())];
    for (const std::string& name : names)
      if (const auto quarantined = quarantined_.find(name); quarantined != quarantined_.end())
        return "quarantined: " + quarantined->second.why;
    for (const std::string& name : names)
      if (disabled_since_.contains(name)) return "disabled";
  }
  if (paused_since_) return "paused";
  if (slot != slot_devices_.end())
    for (const std::string& name : slot_device_names_[static_cast<std::size_t>(slot - slot_devices_.begin())])
      if (const auto idle = idle_held_.find(name); idle != idle_held_.end()) return "idle-only: " + idle->second.why;
  if (disk_hold_) return *disk_hold_;
  return draining_ ? "draining" : "";
}

void AgentControls::wait(std::chrono::milliseconds delay, const std::atomic<bool>& stop) const {
  const auto until = Clock::now() + delay;
  std::unique_lock lock(mutex_);
  const std::uint64_t seen = generation_;
  while (!stop && generation_ == seen && Clock::now() < until)
    change_.wait_until(lock, std::min(until, Clock::now() + kStopPoll));
}

void AgentControls::on_change(std::function<void()> callback) {
  const std::lock_guard lock(mutex_);
  on_change_ = std::move(callback);
}

void AgentControls::add_metrics(Metrics& metrics) const {
  metrics.add_collector([this](Metrics& m) {
    const std::lock_guard lock(mutex_);
    m.gauge("solver_agent_draining", "1 while the agent drains: it claims nothing and exits once its tasks are completed.")
        .set(draining_ ? 1 : 0);
    m.gauge("solver_agent_paused", "1 while the operator has paused the agent: training held at a checkpoint, leases kept.")
        .set(paused_since_ ? 1 : 0);
    for (std::size_t i = 0; i < slot_devices_.size(); ++i) {
      const bool disabled = std::ranges::any_of(slot_device_names_[i], [&](const std::string& name) {
        return disabled_since_.contains(name);
      });
      m.gauge("solver_slot_disabled", "1 while a device of the slot is disabled by the operator: it claims nothing.",
              {{"slot", std::to_string(i)}, {"device", slot_devices_[i]}})
          .set(disabled ? 1 : 0);
    }
    // Labelled with the reason, so a cleared quarantine leaves no series behind.
    m.clear_gauges("solver_slot_quarantined");
    for (std::size_t i = 0; i < slot_devices_.size(); ++i) {
      const auto quarantined = std::ranges::find_if(slot_device_names_[i], [&](const std::string& name) {
        return quarantined_.contains(name);
      });
      const bool is = quarantined != slot_device_names_[i].end();
      m.gauge("solver_slot_quarantined",
              "1 while a device of the slot is quarantined (reason: ecc_uncorrected, memory_repair_pending, row_remap_failed, lost): it claims nothing until "
              "`solver agent clear`.",
              {{"slot", std::to_string(i)}, {"device", slot_devices_[i]},
               {"reason", is ? quarantined_.at(*quarantined).reason : ""}})
          .set(is ? 1 : 0);
    }
    for (std::size_t i = 0; i < slot_devices_.size(); ++i) {
      const bool held = std::ranges::any_of(slot_device_names_[i], [&](const std::string& name) {
        return idle_held_.contains(name);
      });
      m.gauge("solver_slot_idle_hold",
              "1 while idle_only holds the slot: another process uses its GPU, or it is outside idle_only.hours.",
              {{"slot", std::to_string(i)}, {"device", slot_devices_[i]}})
          .set(held ? 1 : 0);
    }
    m.gauge("solver_agent_disk_low", "1 while the work dir's disk is below limits.min_free_disk_gb: training held at a "
            "checkpoint, leases kept, nothing claimed.")
        .set(disk_hold_ ? 1 : 0);
  });
}

}  // namespace solver::agent::detail
