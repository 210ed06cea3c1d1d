#include "agent/detail/verification_job.h"

#include <fmt/format.h>

#include <optional>

#include "agent/detail/error_policy.h"
#include "agent/replayer.h"
#include "agent/stores.h"
#include "agent/training_job.h"
#include "common/bundle_files.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/task.h"
#include "proof/verify.h"

namespace solver::agent::detail {
namespace {

using json = nlohmann::json;

// The verdict, or nullopt when this rig cannot judge the bundle and gave the job back.
std::optional<VerdictSummary> judge(const net::VerificationJob& job, const std::filesystem::path& dir,
                                  const AgentConfig& settings, AgentServices& services, const std::string& device) {
  const std::filesystem::path bundle = dir / "bundle";
  net::check_location(settings.downloads, job.bundle_address, "bundle_address");
  store_for_address(job.bundle_address, settings.storage)->fetch(job.bundle_address, bundle, settings.ceilings.max_disk_bytes);
  VerdictSummary verdict;
  const std::string manifest_sha256 = sha256_file_hex(bundle / kManifestFile);
  if (manifest_sha256 != job.manifest_sha256) {
    verdict.reason = "the bundle at " + job.bundle_address + " has manifest " + manifest_sha256 +
                     ", but the solver completed the task with manifest " + job.manifest_sha256;
    verdict.report = json{{"failures", json::array({verdict.reason})}};
    return verdict;
  }
  Task inputs = parse_task(job.task, "/");
  services.cache.resolve(inputs);
  // The replayer gets the bundle's own task; its files are the ones just fetched (same hashes).
  // A replayed step stuck past its time limit cannot be interrupted: the bundle is rejected
  // for it first (so the job is judged, not handed out again to stall the next verifier), then
  // the process ends and the service restarts it.
  const StuckStepHandler on_stuck_step = [&services, &job](const Error& reason) {
    VerdictSummary stuck{.accepted = false,
                         .reason = std::string("a replayed step could not be checked: ") + reason.what(),
                         .report = json{{"error", reason.what()}}};
    try {
      services.market.post_verdict(job.job_id, stuck);
    } catch (const std::exception& error) {
      log_warn("agent", "verification job={} could not post its verdict ({})", job.job_id, error.what());
    }
    end_process_for_stuck_step(reason);
  };
  const proof::ReplayerFactory trainer_factory = trainer_replayer_factory(on_stuck_step);
  const proof::ReplayerFactory factory = [&](const Task& task, const proof::ReplaySetting& setting) {
    Task local = task;
    for (const auto& [file, what] : task_files(local))
      for (const auto& [fetched, fetched_what] : task_files(inputs))
        if (fetched->sha256 == file->sha256) file->local_copy = fetched->local_copy;
    return trainer_factory(local, setting);
  };
  proof::VerifyOptions options = settings.verify;
  options.expected_task_sha256 = job.task_sha256;
  options.expected_public_key = job.solver_key;
  options.committed_checkpoints = job.commitments;
  options.device = device;
  const proof::Verdict result = proof::verify_bundle(bundle, options, factory);
  if (result.not_covered) {
    // Neither accepted nor rejected: another verifier, on the bundle's runtime or with a
    // profile that covers it, judges it.
    services.market.decline_verification(job.job_id, *result.not_covered);
    log_warn("agent", "verification job={} task={} declined: {}", job.job_id, job.task_id, *result.not_covered);
    services.status.count_verdict("declined");
    return std::nullopt;
  }
  return result.summary();
}

}  // namespace

bool verify_one(const AgentConfig& settings, AgentServices& services, const SlotPlace& place) {
  const std::optional<net::VerificationJob> job = services.market.claim_verification();
  if (!job) return false;
  services.status.set_activity(place.index, "verifying", job->task_id);
  log_info("agent", "verification job={} task={} claimed: bundle {}", job->job_id, job->task_id, job->bundle_address);
  const std::filesystem::path verify_dir = settings.work_dir / "verify";
  std::filesystem::create_directories(verify_dir);
  const std::filesystem::path dir = confined_path(verify_dir, job->job_id);
  remove_confined(verify_dir, dir);
  std::optional<VerdictSummary> verdict;
  try {
    verdict = judge(*job, dir, settings, services, place.device);
  } catch (const Error& error) {
    if (remedy_for(Stage::Verifying, error, services.stop) == Remedy::SkipJob) {
      log_error("agent", "verification job={} could not be done: {}", job->job_id, error.what());
      services.status.record_error(fmt::format("verification job {}: {}", job->job_id, error.what()));
    } else {
      verdict = VerdictSummary{.accepted = false,
                               .reason = std::string("the bundle could not be checked: ") + error.what(),
                               .report = json{{"error", error.what()}}};
    }
  }
  remove_confined(verify_dir, dir);
  if (!verdict) return true;
  services.market.post_verdict(job->job_id, *verdict);
  services.status.count_verdict(verdict->accepted ? "accepted" : "rejected");
  log_info("agent", "verification job={} task={} verdict {}{}", job->job_id, job->task_id,
           verdict->accepted ? "ACCEPTED" : "REJECTED", verdict->accepted ? "" : ": " + verdict->reason);
  return true;
}

}  // namespace solver::agent::detail
