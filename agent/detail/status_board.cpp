#include "agent/detail/status_board.h"

#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"

namespace solver::agent::detail {
namespace {

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", std::chrono::floor<std::chrono::seconds>(now));
}

}  // namespace

StatusBoard::StatusBoard(std::filesystem::path status_file, StatusIdentity identity,
                         std::vector<std::string> slot_devices, const std::atomic<bool>& stop)
    : status_file_(std::move(status_file)), identity_(std::move(identity)), stop_(stop) {
  for (std::string& device : slot_devices) slots_.push_back(Slot{.device = std::move(device)});
}

void StatusBoard::set_activity(int slot, std::string activity, std::string task_id) {
  const std::lock_guard lock(mutex_);
  Slot& entry = slots_.at(static_cast<std::size_t>(slot));
  entry.activity = std::move(activity);
  entry.task_id = std::move(task_id);
  entry.step = entry.total_steps = 0;
  write_locked();
}

void StatusBoard::set_progress(int slot, std::int64_t step, std::int64_t total_steps) {
  const std::lock_guard lock(mutex_);
  Slot& entry = slots_.at(static_cast<std::size_t>(slot));
  entry.step = step;
  entry.total_steps = total_steps;
  write_locked();
}

void StatusBoard::count_task_completed() {
  ++tasks_completed_;
  faults_in_a_row_ = 0;
}

void StatusBoard::count_verdict_posted() { ++verdicts_posted_; }

int StatusBoard::record_worker_fault(std::string what) {
  const std::lock_guard lock(mutex_);
  last_fault_ = std::move(what);
  return ++faults_in_a_row_;
}

int StatusBoard::clear_worker_faults() { return faults_in_a_row_.exchange(0); }

std::string StatusBoard::last_worker_fault() const {
  const std::lock_guard lock(mutex_);
  return last_fault_;
}

void StatusBoard::write() {
  const std::lock_guard lock(mutex_);
  write_locked();
}

void StatusBoard::write_locked() {
  nlohmann::json slot_list = nlohmann::json::array();
  bool busy = false;
  for (const Slot& slot : slots_) {
    slot_list.push_back({{"device", slot.device},
                         {"activity", slot.activity},
                         {"task_id", slot.task_id},
                         {"step", slot.step},
                         {"total_steps", slot.total_steps}});
    busy = busy || slot.activity != "idle";
  }
  const nlohmann::json status{{"pid", ::getpid()},
                              {"name", identity_.name},
                              {"market", identity_.market_url},
                              {"public_key", identity_.public_key},
                              {"activity", stop_ ? "stopped" : busy ? "working" : "idle"},
                              {"slots", slot_list},
                              {"tasks_completed", tasks_completed_.load()},
                              {"verdicts_posted", verdicts_posted_.load()},
                              {"faults_in_a_row", faults_in_a_row_.load()},
                              {"last_fault", last_fault_},
                              {"updated_at", now_utc()}};
  try {
    write_file_durably(status_file_, status.dump(2));
  } catch (const Error& error) {
    log_warn("agent", "cannot write status.json: {}", error.what());
  }
}

}  // namespace solver::agent::detail
