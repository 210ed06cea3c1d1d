#include "agent/detail/task_job.h"

#include <fmt/format.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "agent/ceilings.h"
#include "agent/detail/gpu_steward.h"
#include "agent/training_job.h"
#include "common/error.h"
#include "common/files.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/bundle_files.h"
#include "common/device.h"
#include "common/task.h"
#include "proof/manifest.h"

namespace solver::agent::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Checkpoints are committed as they land, but not in more than one heartbeat a second.
constexpr auto kMinCommitInterval = std::chrono::seconds(1);

std::uint64_t state_bytes(const train::Trainer& trainer) {
  std::uint64_t bytes = 0;
  for (const checkpoint::Tensor& tensor : trainer.state(0).tensors) bytes += tensor.data.size();
  return bytes;
}

}  // namespace

TaskJob TaskJob::claim(const net::Lease& lease, const std::filesystem::path& tasks_dir, AgentConfig settings,
                       AgentServices& services, SlotPlace place) {
  TaskState state = TaskState::leased(lease, confined_path(tasks_dir, lease.task_id));
  std::filesystem::create_directories(state.dir);
  state.save();
  log_info("agent", "task={} claimed (lease {} for {} s) on {}", state.task_id, state.lease_id, state.lease_seconds,
           place.device);
  services.status.count_task_claimed();
  services.status.set_activity(place.index, "claimed", state.task_id);
  services.status.set_lease_expiry(place.index, lease.expires_at);
  TaskJob job(std::move(state), std::move(settings), services, std::move(place));
  job.resume_ = false;
  return job;
}

TaskJob::TaskJob(TaskState state, AgentConfig settings, AgentServices& services, SlotPlace place)
    : state_(std::move(state)), settings_(std::move(settings)), services_(services), place_(std::move(place)) {}

TaskJob::~TaskJob() = default;
TaskJob::TaskJob(TaskJob&&) noexcept = default;

TaskJob::Progress TaskJob::next() {
  switch (state_.phase) {
    case TaskPhase::Training: return train();
    case TaskPhase::Bundled: return publish();
    case TaskPhase::Published: return complete();
  }
  throw Error(ErrorKind::Internal, "task " + state_.task_id + " in no known phase");
}

bool TaskJob::run() {
  for (;;) {
    switch (next()) {
      case Progress::Advanced:
      case Progress::Held: continue;
      case Progress::Waiting: return false;
      case Progress::Done: return true;
    }
  }
}

// ---- training ----

std::unique_ptr<TrainingJob> TaskJob::open_training(const Task& task, Progress& handled) {
  // A step stuck past its time limit cannot be interrupted. The job has already recorded why
  // in the bundle folder, so the restarted agent fails the task with that reason instead of
  // resuming it; tell the market now too (in case no one restarts us), then end the process:
  // the other slots resume from their last checkpoints after the restart.
  const StuckStepHandler on_stuck_step = [market = &services_.market, task_id = state_.task_id,
                                          lease_id = state_.lease_id](const Error& reason) {
    try {
      market->fail_task(task_id, lease_id, reason.what(), net::Fault::Task);
    } catch (const std::exception& error) {
      log_warn("agent", "task={} could not report the stuck step now ({}); it is reported after the restart", task_id,
               error.what());
    }
    end_process_for_stuck_step(reason);
  };
  for (bool resume = resume_ && std::filesystem::exists(state_.bundle_dir());; resume = false) {
    try {
      auto job = std::make_unique<TrainingJob>(task,
                                               train::TrainerOptions{.device = place_.device,
                                                                     .threads = settings_.threads,
                                                                     .shards = state_.shards,
                                                                     .max_step_seconds = settings_.ceilings.max_step_seconds},
                                               &services_.key, state_.bundle_dir(), resume, on_stuck_step);
      check_loaded_task(task, job->trainer().total_steps(), state_bytes(job->trainer()), settings_.ceilings);
      return job;
    } catch (const Error& error) {
      const Stage stage = resume ? Stage::Resuming : Stage::Preparing;
      if (remedy_for(stage, error, services_.stop) != Remedy::RestartBundle) {
        handled = respond(stage, error);
        return nullptr;
      }
      log_warn("agent", "task={} cannot resume ({}); training from step 0", state_.task_id, error.what());
      remove_confined(state_.dir, state_.bundle_dir());
    }
  }
}

TaskJob::Progress TaskJob::train() {
  if (services_.controls.holds(place_.device))
    if (const std::optional<Progress> ended = hold()) return *ended;
  services_.status.set_activity(place_.index, "training", state_.task_id);
  const bool resuming = resume_ && std::filesystem::exists(state_.bundle_dir());
  Task task;
  try {
    task = parse_task(state_.task, "/");
    if (task_sha256(task) != state_.task_sha256)
      throw Error(ErrorKind::Input, "the market's task hashes to " + task_sha256(task) + ", not to the lease's " +
                                        state_.task_sha256);
    check_declared_task(task, settings_.ceilings);
    services_.cache.resolve(task);
  } catch (const Error& error) {
    return respond(Stage::Preparing, error);
  }
  Progress handled = Progress::Waiting;
  std::unique_ptr<TrainingJob> job = open_training(task, handled);
  if (!job) return handled;

  const std::int64_t start_step = job->start_step();
  const std::int64_t total_steps = job->trainer().total_steps();
  log_info("agent", "task={} training steps {}..{} on {}{}", state_.task_id, start_step + 1, total_steps, place_.device,
           resuming ? " (resumed)" : "");

  std::atomic<std::int64_t> step{start_step};
  std::atomic<float> loss{0.0f};
  std::atomic<bool> abandon{false};       // cancelled by the submitter, or the lease is gone
  std::atomic<bool> past_ceiling{false};  // ran longer than this rig allows a task
  std::atomic<bool> done{false};
  std::atomic<bool> at_checkpoint{false};         // the last step wrote one
  std::atomic<bool> stopped_for_operator{false};  // held (a pause, a disabled device, a low disk, idle_only)
  std::exception_ptr failure;
  TrainingRun run;
  const auto observe_checkpoint_writes = [&] {
    for (const double seconds : job->take_checkpoint_write_seconds()) services_.status.observe_checkpoint_write(seconds);
  };
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) {
    step = record.step;
    loss = record.loss;
    at_checkpoint = record.step == next_checkpoint_step(record.step - 1, task.checkpoint_every, total_steps);
    services_.status.count_step(place_.index, record.step, static_cast<std::int64_t>(record.indices.size()));
  };
  // Between steps: while the steward finds the GPU too hot, the training waits (this thread's
  // caller goes on heartbeating, so the lease holds), then goes on with the next step: no work is lost.
  const auto cool_down = [&] {
    if (place_.steward == nullptr) return;
    bool waited = false;
    for (std::string why = place_.steward->check();
         !why.empty() && !(services_.stop || abandon || past_ceiling || services_.controls.idle_hold_since(place_.device));
         why = place_.steward->check()) {
      services_.status.set_activity(place_.index, "cooling: " + why, state_.task_id);
      waited = true;
      services_.controls.wait(std::chrono::seconds(1), services_.stop);
    }
    if (waited) services_.status.set_activity(place_.index, "training", state_.task_id);
  };
  // idle_only must free the GPU within stop_within_seconds of its hold: at the next checkpoint
  // when one comes by then, else at once, giving up the steps since the last one (a resume
  // retrains them from the journaled checkpoint).
  const auto idle_stop_within = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(settings_.idle_only.stop_within_seconds));
  hooks.should_stop = [&] {
    cool_down();
    if (at_checkpoint && services_.controls.holds(place_.device)) stopped_for_operator = true;
    if (const std::optional<Clock::time_point> idle_since = services_.controls.idle_hold_since(place_.device);
        idle_since && Clock::now() - *idle_since >= idle_stop_within)
      stopped_for_operator = true;
    return services_.stop.load() || abandon.load() || past_ceiling.load() || stopped_for_operator.load();
  };
  const auto ceiling = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(settings_.ceilings.max_wall_seconds));
  std::thread worker([&] {
    try {
      run = job->run(std::move(hooks));
    } catch (...) {
      failure = std::current_exception();
    }
    done = true;
  });

  std::set<std::int64_t> committed;
  const std::chrono::milliseconds interval = heartbeat_interval();
  // A heartbeat goes out when the lease needs renewing, and also soon after each checkpoint
  // lands: the sooner a hash is committed, the less time a forger has to rewrite history.
  auto next_beat = Clock::now();
  auto last_beat = Clock::now();
  bool market_answered = true;  // while it does not, only the lease interval paces heartbeats
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (done || abandon) continue;
    const auto now = Clock::now();
    if (now > ceiling) past_ceiling = true;
    const std::vector<CheckpointCommitment> written = job->written_checkpoints();
    observe_checkpoint_writes();
    const bool uncommitted = !written.empty() && !committed.contains(written.back().step);
    if (now < next_beat && !(market_answered && uncommitted && now - last_beat >= kMinCommitInterval)) continue;
    last_beat = now;
    next_beat = now + interval;
    services_.status.set_progress(place_.index, step, total_steps);
    market_answered = heartbeat(written, committed, step, total_steps, loss, abandon);
  }
  worker.join();
  observe_checkpoint_writes();

  if (failure) {
    job.reset();  // its writer done with the bundle folder, and its memory freed, before the remedy
    try {
      std::rethrow_exception(failure);
    } catch (const Error& error) {
      return respond(Stage::Training, error);
    } catch (const std::exception& error) {
      return respond(Stage::Training, Error(ErrorKind::Internal, std::string("training failed: ") + error.what()));
    }
  }
  if (abandon) return forget("abandoned");
  if (past_ceiling)
    return fail(Error(ErrorKind::Capacity, fmt::format("ran past this rig's ceiling of {:.1f} h per task "
                                                       "(limits.max_task_hours) at step {} of {}",
                                                       settings_.ceilings.max_wall_seconds / 3600.0, run.last_step,
                                                       run.total_steps)));
  if (!run.finished && stopped_for_operator) {
    // Where training resumes: the last journaled checkpoint, the step it stopped at unless idle_only cut it short.
    const std::vector<CheckpointCommitment> written = job->written_checkpoints();
    const std::int64_t resume_step = written.empty() ? start_step : std::max(start_step, written.back().step);
    if (resume_step == run.last_step)
      log_info("agent", "task={} stopped at checkpoint step {} of {} while held ({})", state_.task_id, run.last_step,
               run.total_steps, services_.controls.state_of(place_.device));
    else
      log_info("agent", "task={} stopped at step {} of {} while held ({}), within idle_only.stop_within_seconds; "
               "steps {}..{} are retrained from checkpoint step {}", state_.task_id, run.last_step, run.total_steps,
               services_.controls.state_of(place_.device), resume_step + 1, run.last_step, resume_step);
    held_step_ = resume_step;
    held_total_steps_ = run.total_steps;
    held_loss_ = loss;
    resume_ = true;  // the bundle holds this lease's checkpoints now
    return Progress::Held;
  }
  if (!run.finished) {
    log_info("agent", "task={} stopped at step {} of {}; the lease is kept and training resumes from the last "
             "checkpoint when the agent starts again", state_.task_id, run.last_step, run.total_steps);
    return Progress::Waiting;
  }
  const BundleListing listing = proof::read_bundle_listing(state_.bundle_dir());
  state_.manifest_sha256 = listing.manifest.sha256;
  state_.manifest_signature = listing.signature_hex;
  state_.phase = TaskPhase::Bundled;
  state_.save();
  log_info("agent", "task={} trained {} steps in {:.1f} s (test accuracy {:.2f}%); bundle {} checkpoints, manifest {}",
           state_.task_id, run.last_step - run.first_step, run.seconds, run.outcome.test_accuracy * 100.0,
           run.manifest->checkpoints.size(), state_.manifest_sha256.substr(0, 16));
  return Progress::Advanced;
}

std::chrono::milliseconds TaskJob::heartbeat_interval() const {
  return std::chrono::milliseconds(static_cast<std::int64_t>(
      1000 * std::min(settings_.heartbeat_seconds, std::max<double>(1.0, state_.lease_seconds / 3.0))));
}

std::optional<TaskJob::Progress> TaskJob::hold() {
  const auto release_after = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(settings_.pause_release_seconds));
  if (services_.controls.idle_hold_since(place_.device))
    log_info("agent", "task={} held ({}): the lease is kept; the task goes back to the market after "
             "{:.0f} s held (pause.release_after_seconds)", state_.task_id, services_.controls.state_of(place_.device),
             settings_.pause_release_seconds);
  else if (services_.controls.held_since(place_.device))
    log_info("agent", "task={} held for the operator ({}): the lease is kept; the task goes back to the market after "
             "{:.0f} s held (pause.release_after_seconds)", state_.task_id, services_.controls.state_of(place_.device),
             settings_.pause_release_seconds);
  else  // the disk hold: the rig's own, with no deadline, so the lease is kept for as long as it lasts
    log_info("agent", "task={} held ({}): the lease is kept until the disk has room again",
             state_.task_id, services_.controls.state_of(place_.device));
  std::set<std::int64_t> committed;  // the training job committed its checkpoints; completion sends them all again
  std::atomic<bool> abandon{false};
  Clock::time_point beat_due = Clock::now();
  while (services_.controls.holds(place_.device)) {
    if (services_.stop) return Progress::Waiting;
    const Clock::time_point now = Clock::now();
    std::optional<Clock::time_point> release_at;
    if (const std::optional<Clock::time_point> since = services_.controls.held_since(place_.device)) {
      const Clock::duration left = *since + release_after - now;
      if (left <= Clock::duration::zero()) {
        const std::string why = fmt::format("held for {:.0f} s (pause.release_after_seconds)",
                                            settings_.pause_release_seconds);
        try {
          services_.market.release_task(state_.task_id, state_.lease_id, why);
        } catch (const Error& error) {
          log_warn("agent", "task={} could not be given back ({}); the lease will expire instead", state_.task_id,
                   error.what());
        }
        return forget("given back to the market after being " + why);
      }
      release_at = *since + release_after;
    }
    if (now >= beat_due) {
      services_.status.set_activity(place_.index, "held", state_.task_id);
      heartbeat({}, committed, held_step_, held_total_steps_, held_loss_, abandon);
      if (abandon) return forget("abandoned while held");
      beat_due = now + heartbeat_interval();
    }
    std::chrono::milliseconds next_wake = std::chrono::ceil<std::chrono::milliseconds>(beat_due - now);
    if (release_at) next_wake = std::min(next_wake, std::chrono::ceil<std::chrono::milliseconds>(*release_at - now));
    services_.controls.wait(next_wake, services_.stop);  // the end of a hold (a control, the steward's reading) wakes it
  }
  log_info("agent", "task={} may go on: training resumes from its last checkpoint", state_.task_id);
  return std::nullopt;
}

bool TaskJob::heartbeat(const std::vector<CheckpointCommitment>& written, std::set<std::int64_t>& committed,
                        std::int64_t step, std::int64_t total, float loss, std::atomic<bool>& abandon) {
  net::Heartbeat beat;
  beat.lease_id = state_.lease_id;
  beat.step = step;
  beat.total_steps = total;
  if (step > 0) beat.loss = loss;
  for (const CheckpointCommitment& checkpoint : written)
    if (!committed.contains(checkpoint.step)) beat.checkpoints.push_back(checkpoint);
  try {
    const net::HeartbeatReply reply = services_.market.heartbeat(state_.task_id, beat);
    services_.status.set_lease_expiry(place_.index, reply.expires_at);
    for (const auto& commitment : beat.checkpoints) {
      committed.insert(commitment.step);
      log_info("agent", "task={} checkpoint step={} committed sha256={}", state_.task_id, commitment.step,
               commitment.sha256.substr(0, 16));
    }
    if (reply.cancel) {
      log_info("agent", "task={} cancelled by the market: {}", state_.task_id, reply.reason);
      abandon = true;
    }
    return true;
  } catch (const Error& error) {
    if (remedy_for(Stage::Heartbeat, error, services_.stop) == Remedy::DropTask) {
      log_warn("agent", "task={} lease lost: {}", state_.task_id, error.what());
      abandon = true;
      return true;
    }
    log_warn("agent", "task={} heartbeat failed, training goes on: {}", state_.task_id, error.what());
    services_.status.count_heartbeat_failure();
    services_.status.record_error(fmt::format("task {}: heartbeat failed: {}", state_.task_id, error.what()));
    return false;
  }
}

// ---- delivery ----

TaskJob::Progress TaskJob::publish() {
  services_.status.set_activity(place_.index, "publishing", state_.task_id);
  try {
    const std::lock_guard lock(services_.publish_mutex);
    const auto started = Clock::now();
    const BundleListing listing = proof::read_bundle_listing(state_.bundle_dir());
    state_.bundle_address = services_.store.publish(listing, state_.task_id + "-" + state_.manifest_sha256.substr(0, 16));
    std::uint64_t bytes = listing.manifest.size;
    for (const FileEntry& file : listing.files) bytes += file.size;
    services_.status.observe_publish(std::chrono::duration<double>(Clock::now() - started).count(), bytes);
    state_.phase = TaskPhase::Published;
    state_.save();
    log_info("agent", "task={} published {} in {:.1f} s", state_.task_id, state_.bundle_address,
             std::chrono::duration<double>(Clock::now() - started).count());
    return Progress::Advanced;
  } catch (const Error& error) {
    return respond(Stage::Delivering, error);
  }
}

TaskJob::Progress TaskJob::complete() {
  services_.status.set_activity(place_.index, "completing", state_.task_id);
  try {
    // The commitments again, all of them: the market keeps the first copy of each, and a
    // heartbeat lost while training must not leave one out.
    net::Heartbeat beat;
    beat.lease_id = state_.lease_id;
    for (const proof::CheckpointEntry& entry : proof::read_manifest(state_.bundle_dir()).checkpoints) {
      beat.checkpoints.push_back(entry.commitment());
      beat.step = beat.total_steps = entry.step;
    }
    if (const net::HeartbeatReply reply = services_.market.heartbeat(state_.task_id, beat); reply.cancel)
      return forget("cancelled before completion: " + reply.reason);
    log_info("agent", "task={} all {} checkpoints committed (steps 0..{})", state_.task_id, beat.checkpoints.size(),
             beat.step);
    services_.market.complete_task(state_.task_id, net::Completion{state_.lease_id, state_.bundle_address,
                                                                   state_.manifest_sha256, state_.manifest_signature});
    services_.status.count_task_completed();
    return forget("completed (bundle " + state_.bundle_address + ")");
  } catch (const Error& error) {
    return respond(Stage::Delivering, error);
  }
}

// ---- endings ----

TaskJob::Progress TaskJob::respond(Stage stage, const std::exception& error) {
  switch (remedy_for(stage, error, services_.stop)) {
    case Remedy::Later:
      if (state_.phase != TaskPhase::Training) {
        log_warn("agent", "task={} spooled in phase {}: {}", state_.task_id, phase_name(state_.phase), error.what());
        services_.status.record_error(fmt::format("task {} spooled in phase {}: {}", state_.task_id,
                                                  phase_name(state_.phase), error.what()));
      }
      return Progress::Waiting;
    case Remedy::DropTask:
      return forget(std::string("refused by the market: ") + error.what());
    case Remedy::FailTask:
      if (const auto* failure = dynamic_cast<const Error*>(&error)) return fail(*failure);
      return fail(Error(ErrorKind::Internal, error.what()));
    case Remedy::StopAgent:
      if (const auto* bug = dynamic_cast<const Error*>(&error)) throw *bug;
      throw Error(ErrorKind::Internal, error.what());
    case Remedy::SplitBatch:
      return split_batch(dynamic_cast<const Error&>(error));
    case Remedy::RestartBundle:
    case Remedy::RejectBundle:
    case Remedy::SkipJob: break;
  }
  throw Error(ErrorKind::Internal, std::string("no remedy for a task's error: ") + error.what());
}

TaskJob::Progress TaskJob::split_batch(const Error& out_of_memory) {
  const std::int64_t batch_size = parse_task(state_.task, "/").training.batch_size;
  const int shards = state_.shards > 0 ? state_.shards : static_cast<int>(parse_device_list(place_.device).size());
  std::int64_t more = 2 * static_cast<std::int64_t>(shards);
  while (more <= batch_size && batch_size % more != 0) ++more;
  if (more > batch_size)
    return fail(Error(ErrorKind::OutOfMemory, fmt::format("{} (even with each batch of {} in {} shards; no more shards "
                                                          "divide it)", out_of_memory.what(), batch_size, shards)));
  log_warn("agent", "task={} ran out of memory with {} shard(s) per step ({}); training again from step 0 with {}",
           state_.task_id, shards, out_of_memory.what(), more);
  services_.status.record_error(fmt::format("task {}: out of memory with {} shard(s) per step; now {}", state_.task_id,
                                            shards, more));
  remove_confined(state_.dir, state_.bundle_dir());
  state_.shards = static_cast<int>(more);
  state_.save();
  return Progress::Advanced;
}

TaskJob::Progress TaskJob::fail(const Error& failure) {
  const net::Fault fault = fault_of(failure);
  log_error("agent", "task={} failed ({} fault): {}", state_.task_id, net::fault_name(fault), failure.what());
  services_.status.count_task_failed(net::fault_name(fault));
  services_.status.record_error(fmt::format("task {} failed ({} fault): {}", state_.task_id, net::fault_name(fault),
                                            failure.what()));
  if (fault != net::Fault::Task) {
    const int in_a_row = services_.status.record_worker_fault("task " + state_.task_id + ": " + failure.what());
    if (in_a_row == services_.max_worker_faults)
      log_error("agent", "{} tasks failed in a row by no fault of theirs: claiming nothing more until this rig is "
                "fixed and the agent gets SIGHUP or a restart (limits.max_worker_faults)", in_a_row);
  }
  try {
    services_.market.fail_task(state_.task_id, state_.lease_id, failure.what(), fault);
  } catch (const Error& error) {
    log_warn("agent", "task={} could not report the failure ({}); the lease will expire instead", state_.task_id,
             error.what());
  }
  return forget(fault != net::Fault::Task ? "returned to the market" : "failed");
}

TaskJob::Progress TaskJob::forget(std::string_view why) {
  const std::filesystem::path tasks_dir = state_.dir.parent_path();
  try {
    remove_confined(tasks_dir, state_.dir);
    log_info("agent", "task={} {}; removed its work folder", state_.task_id, why);
  } catch (const Error& error) {
    log_error("agent", "task={} {}; its work folder stays: {}", state_.task_id, why, error.what());
  }
  return Progress::Done;
}

}  // namespace solver::agent::detail
