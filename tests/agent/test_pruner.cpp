// Pruning the directory store (agent/detail/pruner.h) against a real market in-process: tasks
// are submitted, leased, completed and verified through the protocol; their bundles are folders
// in the store, aged by setting their time.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "agent/detail/pruner.h"
#include "agent/detail/task_state.h"
#include "common/files.h"
#include "common/keys.h"
#include "common/records.h"
#include "tests/agent/agent_rig.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::agent::detail;
using namespace std::chrono_literals;

namespace {

// The rig, a verifier and the store folder the rig publishes to.
struct StoreRig {
  test::Rig rig{"pruner"};
  SigningKey verifier_key = SigningKey::generate();
  net::MarketClient verifier{net::MarketClientOptions{rig.server->url(), test::quick_retries()}, verifier_key};
  std::filesystem::path store_dir = rig.dir / "published";
  std::uint64_t seed = 1;

  StoreRig() { verifier.register_worker({"test-verifier", {"verify"}, {{"cpu", "test"}}, 0, 8192, {"mlp"}}); }

  // A bundle folder in the store, last written `age` ago, of `bytes` bytes in all.
  std::filesystem::path bundle(const std::string& task_id, std::chrono::minutes age, std::size_t bytes = 1000) {
    const std::filesystem::path dir = store_dir / (task_id + "-0123456789abcdef");
    std::filesystem::create_directories(dir);
    test::write_text(dir / "manifest.json", std::string(bytes / 2, 'm'));
    test::write_text(dir / "checkpoint-0.bin", std::string(bytes - bytes / 2, 'c'));
    std::filesystem::last_write_time(dir, std::filesystem::file_time_type::clock::now() - age);
    return dir;
  }

  // A task leased to the rig.
  net::Lease leased() { return rig.lease(test::small_task(seed++)); }

  // A task the rig completed with the bundle at `address`; `verified`: a verifier accepted it.
  std::string completed(std::chrono::minutes age, bool verified) {
    const net::Lease lease = leased();
    const std::filesystem::path dir = bundle(lease.task_id, age);
    rig.worker->complete_task(lease.task_id, net::Completion{lease.lease_id, dir.string(), std::string(64, 'a'),
                                                             std::string(128, 'b')});
    if (verified) {
      const std::optional<net::VerificationJob> job = verifier.claim_verification();
      REQUIRE(job);
      REQUIRE(job->task_id == lease.task_id);
      verifier.post_verdict(job->job_id, VerdictSummary{.accepted = true, .reason = "replayed"});
      REQUIRE(rig.submitter->task_status(lease.task_id)["state"] == "verified");
    }
    return lease.task_id;
  }

  // A task still in the work dir in `phase`, its bundle published (or not) to the store.
  std::string in_flight(TaskPhase phase, std::chrono::minutes age) {
    const net::Lease lease = leased();
    TaskState state = TaskState::leased(lease, rig.tasks_dir() / lease.task_id);
    state.phase = phase;
    std::filesystem::create_directories(state.bundle_dir());
    test::write_text(state.bundle_dir() / "manifest.json", "{}");
    if (phase == TaskPhase::Published) state.bundle_address = bundle(lease.task_id, age).string();
    state.save();
    return lease.task_id;
  }

  BundlePruner pruner() {
    return BundlePruner(store_dir, rig.tasks_dir(), *rig.worker, rig.status.metrics(), rig.publish_mutex);
  }

  bool stored(const std::string& task_id) const {
    return std::filesystem::exists(store_dir / (task_id + "-0123456789abcdef"));
  }
};

}  // namespace

TEST_CASE("pruning removes verified bundles beyond the newest N, keeps unverified and in-flight ones, and counts them",
          "[agent][pruner]") {
  StoreRig rig;
  const std::string oldest = rig.completed(50min, true);
  const std::string older = rig.completed(40min, true);
  const std::string newer = rig.completed(30min, true);
  const std::string newest = rig.completed(20min, true);
  const std::string unverified = rig.completed(60min, false);  // completed last: the verifier claims the oldest
  const std::string published = rig.in_flight(TaskPhase::Published, 70min);
  const std::string spooled = rig.in_flight(TaskPhase::Bundled, 0min);

  BundlePruner pruner = rig.pruner();
  CHECK(pruner.prune(PruneLimits{.keep_bundles = 2, .max_age_seconds = 0}) == 2);

  CHECK_FALSE(rig.stored(oldest));
  CHECK_FALSE(rig.stored(older));
  CHECK(rig.stored(newer));
  CHECK(rig.stored(newest));
  CHECK(rig.stored(unverified));  // no verdict yet: a verifier may still fetch it
  CHECK(rig.stored(published));   // its completion is not acknowledged yet
  CHECK(std::filesystem::exists(rig.rig.tasks_dir() / spooled / "bundle" / "manifest.json"));  // never published
  const std::string metrics = rig.rig.status.metrics().exposition();
  CHECK_THAT(metrics, Catch::Contains("solver_pruned_bundles_total 2\n"));
  CHECK_THAT(metrics, Catch::Contains("solver_pruned_bytes_total 2000\n"));

  // A second pass has nothing more to do.
  CHECK(pruner.prune(PruneLimits{.keep_bundles = 2, .max_age_seconds = 0}) == 0);
}

TEST_CASE("pruning removes a bundle past its age whatever the market says, but never one whose task is in flight",
          "[agent][pruner]") {
  StoreRig rig;
  const std::string old_unverified = rig.completed(41 * 24h, false);
  const std::string fresh_unverified = rig.completed(10min, false);
  const std::string old_published = rig.in_flight(TaskPhase::Published, 41 * 24h);
  const std::filesystem::path not_a_bundle = rig.store_dir / "notes";
  std::filesystem::create_directories(not_a_bundle);
  std::filesystem::last_write_time(not_a_bundle, std::filesystem::file_time_type::clock::now() - 100 * 24h);

  BundlePruner pruner = rig.pruner();
  CHECK(pruner.prune(PruneLimits{.keep_bundles = 20, .max_age_seconds = 30 * 86400.0}) == 1);

  CHECK_FALSE(rig.stored(old_unverified));
  CHECK(rig.stored(fresh_unverified));
  CHECK(rig.stored(old_published));
  CHECK(std::filesystem::exists(not_a_bundle));  // not named as the agent names bundles: not the agent's
  CHECK_THAT(rig.rig.status.metrics().exposition(), Catch::Contains("solver_pruned_bundles_total 1\n"));
}
