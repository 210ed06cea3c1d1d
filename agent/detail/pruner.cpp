#include "agent/detail/pruner.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <vector>

#include "agent/detail/task_state.h"
#include "common/bundle_files.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "net/market_protocol.h"

namespace solver::agent::detail {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kQuestionsPerPass = 32;
constexpr std::size_t kHexDigitsInName = 16;  // the directory store's bundle names end in -<16 hex of the manifest>

struct StoredBundle {
  std::filesystem::path dir;
  std::string task_id;
  std::filesystem::file_time_type written;
};

// "<task id>-<16 hex>": the task id, or empty for a name the agent does not give bundles.
std::string task_of_bundle_name(const std::string& name) {
  const std::size_t dash = name.rfind('-');
  if (dash == std::string::npos || name.size() - dash - 1 != kHexDigitsInName) return "";
  if (!std::all_of(name.begin() + static_cast<std::ptrdiff_t>(dash) + 1, name.end(),
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
    return "";
  const std::string task_id = name.substr(0, dash);
  return net::is_protocol_id(task_id) ? task_id : "";
}

std::vector<StoredBundle> stored_bundles(const std::filesystem::path& store_dir) {
  std::vector<StoredBundle> bundles;
  std::error_code error;
  if (!std::filesystem::is_directory(store_dir, error)) return bundles;
  for (const auto& entry : std::filesystem::directory_iterator(store_dir)) {
    const std::string name = entry.path().filename().string();
    const std::string task_id = task_of_bundle_name(name);
    if (task_id.empty() || entry.is_symlink() || !entry.is_directory() ||
        !std::filesystem::is_regular_file(entry.path() / kManifestFile, error))
      continue;
    bundles.push_back({entry.path(), task_id, std::filesystem::last_write_time(entry.path())});
  }
  std::sort(bundles.begin(), bundles.end(), [](const StoredBundle& a, const StoredBundle& b) { return a.written > b.written; });
  return bundles;
}

std::uint64_t bytes_under(const std::filesystem::path& dir) {
  std::uint64_t bytes = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file() && !entry.is_symlink()) bytes += entry.file_size();
  return bytes;
}

}  // namespace

BundlePruner::BundlePruner(std::filesystem::path store_dir, std::filesystem::path tasks_dir, net::MarketClient& market,
                           Metrics& metrics, std::mutex& publish_mutex)
    : store_dir_(std::move(store_dir)),
      tasks_dir_(std::move(tasks_dir)),
      market_(market),
      publish_mutex_(publish_mutex),
      pruned_bundles_(metrics.counter("solver_pruned_bundles_total",
                                      "Published bundles removed from the directory store (verified, or past their age)")),
      pruned_bytes_(metrics.counter("solver_pruned_bytes_total", "Bytes freed by removing published bundles")) {}

void BundlePruner::prune_when_due(const PruneLimits& limits) {
  {
    const std::unique_lock pass(pass_mutex_, std::try_to_lock);
    if (!pass.owns_lock()) return;
    if (passed_ && SteadyClock::now() - last_pass_ < kInterval) return;
    passed_ = true;
    last_pass_ = SteadyClock::now();
  }
  try {
    prune(limits);
  } catch (const std::exception& error) {
    log_error("agent", "pruning the store {} failed: {}", store_dir_.string(), error.what());
  }
}

bool BundlePruner::task_over(const std::string& task_id) {
  const std::string state = market_.task_status(task_id).at("state").get<std::string>();
  return state == "verified" || state == "rejected" || state == "failed" || state == "cancelled";
}

int BundlePruner::prune(const PruneLimits& limits) {
  const std::lock_guard pass(pass_mutex_);
  const std::vector<StoredBundle> bundles = stored_bundles(store_dir_);
  const auto now = std::filesystem::file_time_type::clock::now();
  const auto max_age = std::chrono::duration_cast<std::filesystem::file_time_type::duration>(
      std::chrono::duration<double>(limits.max_age_seconds));

  // What to remove and why: past the age, or beyond the newest keep_bundles with the task over.
  std::map<std::filesystem::path, std::string> doomed;
  std::vector<const StoredBundle*> to_ask;
  for (std::size_t i = 0; i < bundles.size(); ++i) {
    if (limits.max_age_seconds > 0 && now - bundles[i].written > max_age)
      doomed[bundles[i].dir] = fmt::format("older than {:g} days", limits.max_age_seconds / 86400);
    else if (i >= static_cast<std::size_t>(limits.keep_bundles))
      to_ask.push_back(&bundles[i]);
  }
  std::stable_sort(to_ask.begin(), to_ask.end(), [this](const StoredBundle* a, const StoredBundle* b) {
    const auto asked_a = asked_.find(a->task_id), asked_b = asked_.find(b->task_id);
    const auto when_a = asked_a == asked_.end() ? SteadyClock::time_point{} : asked_a->second;
    const auto when_b = asked_b == asked_.end() ? SteadyClock::time_point{} : asked_b->second;
    return when_a < when_b;
  });
  if (to_ask.size() > kQuestionsPerPass) to_ask.resize(kQuestionsPerPass);
  for (const StoredBundle* bundle : to_ask) {
    try {
      asked_[bundle->task_id] = SteadyClock::now();
      if (task_over(bundle->task_id)) doomed[bundle->dir] = "its task is over at the market";
    } catch (const net::MarketError& refusal) {
      if (refusal.status() != 404) throw;  // a task the market does not know: age alone decides
    }
  }

  int removed = 0;
  const std::lock_guard publishing(publish_mutex_);
  std::set<std::string> in_flight;
  for (const TaskState& state : tasks_in_flight(tasks_dir_)) in_flight.insert(state.task_id);
  for (const auto& [dir, why] : doomed) {
    const std::string task_id = task_of_bundle_name(dir.filename().string());
    if (in_flight.contains(task_id)) continue;  // its completion is not acknowledged yet
    const std::uint64_t bytes = bytes_under(dir);
    remove_confined(store_dir_, dir);
    asked_.erase(task_id);
    pruned_bundles_.add();
    pruned_bytes_.add(static_cast<double>(bytes));
    ++removed;
    log_info("agent", "task={} pruned its published bundle {} ({}): {} bytes freed", task_id, dir.string(), why, bytes);
  }
  return removed;
}

}  // namespace solver::agent::detail
