// Keeps the directory store (storage.kind "directory", by default <work_dir>/published) from
// filling the disk. A published bundle goes once the market says its task is over (verified,
// rejected, failed or cancelled), except the newest `keep_bundles`; a bundle older than
// `bundle_max_age` goes whatever the market says. Never pruned: the bundle of a task still in
// the work dir (published, its completion not yet acknowledged), and anything in the store that
// is not a bundle named as the agent names them (<task id>-<16 hex digits>). Task folders are
// never pruned: they hold only work the market has not acknowledged, and go once it has.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

#include "agent/metrics.h"
#include "net/market_client.h"

namespace solver::agent::detail {

struct PruneLimits {
  int keep_bundles = 20;                // the newest this many stay whatever the market says
  double max_age_seconds = 30 * 86400;  // older bundles go whatever the market says; 0: no age limit
};

class BundlePruner {
 public:
  // How often the agent's loop prunes: the market is asked about each bundle, so not every turn.
  static constexpr std::chrono::minutes kInterval{5};

  // `publish_mutex` is held while bundles are removed, so a bundle being published is seen by
  // its task folder's state, never half-way.
  BundlePruner(std::filesystem::path store_dir, std::filesystem::path tasks_dir, net::MarketClient& market,
               Metrics& metrics, std::mutex& publish_mutex);

  // prune() when the last pass is kInterval old or there was none; a pass already running on
  // another slot's thread is not waited for. Errors are logged, never thrown.
  void prune_when_due(const PruneLimits& limits);
  // One pass now. Returns how many bundles it removed.
  int prune(const PruneLimits& limits);

 private:
  // Whether the market says the task is over (nothing will fetch its bundle again). Unknown
  // tasks and unanswered questions are "not over": age alone removes those bundles.
  bool task_over(const std::string& task_id);

  std::filesystem::path store_dir_;
  std::filesystem::path tasks_dir_;
  net::MarketClient& market_;
  std::mutex& publish_mutex_;
  Metrics::Counter pruned_bundles_;
  Metrics::Counter pruned_bytes_;
  std::mutex pass_mutex_;
  std::chrono::steady_clock::time_point last_pass_{};
  bool passed_ = false;
  // When each bundle's task was last asked about: each pass asks about those asked least
  // recently first, and at most kQuestionsPerPass of them, to spare the market (and this key's rate).
  std::map<std::string, std::chrono::steady_clock::time_point> asked_;
};

}  // namespace solver::agent::detail
