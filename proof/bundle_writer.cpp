// BundleWriter: checkpoints, segments, the hash chain and the journal, written off the
// training thread by one checkpoint::AsyncWriter.
// Invariants: the journal only ever lists files that are completely and durably on disk (a
// checkpoint's line is appended after them), so after a crash everything it does not list is
// debris to delete; it never skips a checkpoint (once one fails, the jobs behind it refuse to
// run); the training thread touches `manifest` and `previous_parameters` only before the first
// job is queued (resume_point) or after the queue drained (finish), so the writer thread owns
// them in between and no lock is needed.
#include "proof/bundle_writer.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "checkpoint/async_writer.h"
#include "common/data_order.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/keys.h"
#include "proof/detail/bundle_paths.h"
#include "proof/detail/journal.h"
#include "proof/parameters.h"

namespace solver::proof {
namespace {

using detail::checkpoint_path;
using detail::Journal;
using detail::kModelFile;
using detail::segment_path;

std::vector<checkpoint::Tensor> take_parameters(checkpoint::Checkpoint& state) {
  std::vector<checkpoint::Tensor> parameters;
  for (checkpoint::Tensor& tensor : state.tensors)
    if (is_parameter(tensor)) parameters.push_back(std::move(tensor));
  return parameters;
}

// The identity of a bundle: everything in the manifest but checkpoints, segments and outcome.
Manifest bundle_header(const Task& task, const SigningKey& key, const BundlePlan& plan) {
  Manifest manifest;
  manifest.task = task_to_json(task);
  manifest.task_sha256 = sha256_hex(canonical_json(manifest.task));
  manifest.solver_public_key = key.public_key_hex();
  // Built-in models are defined by their spec; a TorchScript module by its file (copied later).
  manifest.model_sha256 = task.model.kind == ModelKind::TorchScript ? task.model.file.sha256
                                                           : sha256_hex(canonical_json(manifest.task.at("model")));
  manifest.runtime = plan.runtime;
  manifest.seed = task.seed;
  manifest.data_order_generator = std::string(kDataOrderGenerator);
  manifest.train_samples = plan.train_samples;
  manifest.steps_per_epoch = plan.steps_per_epoch;
  manifest.checkpoint_every = task.checkpoint_every;
  manifest.total_steps = plan.total_steps;
  return manifest;
}

void check_plan(const Task& task, const BundlePlan& plan) {
  // A bundle whose plan disagrees with the task can never verify: refuse it before training.
  if (plan.train_samples < task.training.batch_size || plan.steps_per_epoch != plan.train_samples / task.training.batch_size ||
      plan.total_steps != total_steps(task, plan.train_samples) || plan.total_steps < 1)
    throw Error(ErrorKind::Internal, "bundle plan (" + std::to_string(plan.train_samples) + " samples, " +
                                         std::to_string(plan.steps_per_epoch) + " steps per epoch, " +
                                         std::to_string(plan.total_steps) + " steps) does not follow from task " +
                                         task.id + " with batch size " + std::to_string(task.training.batch_size));
}

}  // namespace

struct BundleWriter::Impl {
  std::filesystem::path dir;
  const SigningKey& key;
  BundlePlan plan;
  Journal journal;

  // Owned by the writer thread while jobs may run (see the file comment).
  Manifest manifest;
  std::vector<checkpoint::Tensor> previous_parameters;

  // Training thread only.
  std::vector<StepRecord> pending_steps;  // recorded since the last checkpoint
  std::int64_t last_recorded_step = 0;
  std::optional<std::int64_t> last_checkpoint_step;
  bool resume_requested = false;
  bool resume_open = false;     // resume_point() may still be called
  bool resume_pending = false;  // a journaled checkpoint exists that resume_point() has not restored
  bool finished = false;

  double earlier_train_seconds = 0.0;  // of the runs before a resume, from the journal

  // Any thread: the journaled checkpoints, for commitments sent while training runs, and how
  // long this run's writes took, from queued to journaled, until take_write_seconds().
  mutable std::mutex written_mutex;
  std::vector<CheckpointCommitment> written;
  std::vector<double> untaken_write_seconds;

  // `queued_at`: when this run queued the checkpoint; none for those found in the journal.
  void note_written(const CheckpointEntry& entry, std::optional<std::chrono::steady_clock::time_point> queued_at) {
    const std::lock_guard lock(written_mutex);
    written.push_back(entry.commitment());
    if (queued_at)
      untaken_write_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - *queued_at).count());
  }

  // Last member: destroyed first, so queued jobs finish while the state they use still exists.
  checkpoint::AsyncWriter writer{2};

  Impl(std::filesystem::path dir_in, const SigningKey& key_in, const BundlePlan& plan_in)
      : dir(std::move(dir_in)), key(key_in), plan(plan_in), journal(dir) {}

  // What the journal's header names: only this run may resume from it.
  detail::JournalRun journal_run() const {
    return detail::JournalRun{manifest.task_sha256, manifest.runtime, manifest.train_samples, manifest.total_steps};
  }

  // Restores the checkpoints and segments so far from the journal, after checking it belongs to this run.
  void read_journal() {
    if (!journal.exists())
      throw Error(ErrorKind::Input,
                  "cannot resume: " + dir.string() + " has no " + std::string(Journal::kFile) + " (" +
                      (std::filesystem::exists(dir / kManifestFile) ? "its bundle is already complete"
                                                                        : "no interrupted run was recorded there") +
                      ")");
    detail::Journaled journaled;
    try {
      journaled = journal.resume(journal_run());
    } catch (const Error& error) {
      throw error.with_context("cannot resume");
    }
    manifest.checkpoints = std::move(journaled.checkpoints);
    manifest.segments = std::move(journaled.segments);
    manifest.chain_root = manifest.checkpoints.empty() ? "" : manifest.checkpoints.back().chain;
    earlier_train_seconds = journaled.train_seconds;
    for (const CheckpointEntry& entry : manifest.checkpoints) note_written(entry, std::nullopt);
    resume_pending = !manifest.checkpoints.empty();
  }

  // Copies the TorchScript module into the bundle, so a verifier needs nothing else to replay.
  void copy_model(const Task& task) {
    if (task.model.kind != ModelKind::TorchScript) return;
    const std::filesystem::path source = checked_local_file(task.model.file, "task.model.file");
    const std::string bytes = read_file(source);
    write_file_durably(dir / kModelFile, bytes);
    manifest.model_file = FileEntry{std::string(kModelFile), bytes.size(), sha256_hex(bytes)};
  }

  // Deletes what a crash left behind: files of checkpoints and segments the journal does not
  // list (written, or half-written, after the last journal update), temp files, and a manifest
  // from a crash inside finish(). Checks that the files the journal lists are still there.
  void remove_unjournaled_files() {
    std::map<std::string, std::uint64_t> journaled;  // path -> size
    for (const CheckpointEntry& entry : manifest.checkpoints) journaled.emplace(entry.file.path, entry.file.size);
    for (const SegmentEntry& entry : manifest.segments) journaled.emplace(entry.file.path, entry.file.size);
    for (const std::string_view folder : {"ckpt", "segments"})
      for (const auto& entry : std::filesystem::directory_iterator(dir / folder)) {
        const std::string relative = std::string(folder) + "/" + entry.path().filename().string();
        if (journaled.contains(relative)) continue;
        log_info("proof", "resume: removing {} (not in the journal: written after the last complete checkpoint)",
                 relative);
        std::filesystem::remove_all(entry.path());
      }
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.ends_with(".tmp") || name == kManifestFile || name == kSignatureFile) {
        log_info("proof", "resume: removing {} (left by an interrupted write)", name);
        std::filesystem::remove(entry.path());
      }
    }
    fsync_folder(dir);
    for (const auto& [relative, expected_size] : journaled) {
      std::error_code error;
      const std::uintmax_t size = std::filesystem::file_size(dir / relative, error);
      if (error)
        throw Error(ErrorKind::Input, "cannot resume: " + (dir / relative).string() + ", listed in the journal, is missing");
      if (size != expected_size)
        throw Error(ErrorKind::Input, "cannot resume: " + (dir / relative).string() + " has " + std::to_string(size) +
                                          " bytes; the journal recorded " + std::to_string(expected_size));
    }
  }

  // Runs on the writer thread: one checkpoint, the segment it closes, the chain, the journal.
  void write_checkpoint(std::int64_t step, checkpoint::Checkpoint& state, const std::vector<StepRecord>& steps,
                        double train_seconds, std::chrono::steady_clock::time_point queued_at) {
    // A job that failed (the run stops on its error) journaled nothing; the jobs queued behind
    // it must not journal theirs, or the journal would skip a checkpoint.
    const std::int64_t first_step = step == 0 ? 0 : steps.front().step;
    const std::int64_t expected_first_step = manifest.checkpoints.empty() ? 0 : manifest.checkpoints.back().step + 1;
    if (first_step != expected_first_step)
      throw Error(ErrorKind::Io, "checkpoint at step " + std::to_string(step) +
                                     " not written: the checkpoint before it failed to be written");
    CheckpointEntry entry;
    entry.step = step;
    const std::string relative = checkpoint_path(step);
    const checkpoint::WrittenFile written = checkpoint::write_safetensors(dir / relative, state);
    entry.file = FileEntry{relative, written.size, written.sha256};

    std::optional<SegmentEntry> segment;
    if (step > 0) {
      try {
        entry.update = parameter_distance(previous_parameters, state.tensors);
      } catch (const Error& error) {
        throw error.with_context("checkpoint at step " + std::to_string(step) + " vs the previous one");
      }
      const std::string text = encode_segment(first_step, step, steps);
      segment = SegmentEntry{first_step, step, FileEntry{segment_path(first_step, step), text.size(), sha256_hex(text)}};
      write_file_durably(dir / segment->file.path, text);
    }
    const std::string& previous_chain = manifest.checkpoints.empty() ? manifest.task_sha256 : manifest.checkpoints.back().chain;
    entry.chain = chain_link(previous_chain, step, entry.file.sha256, segment ? segment->file.sha256 : "");
    journal.append(entry, segment, train_seconds);
    // Journaled: from here on the checkpoint is part of the bundle.
    if (segment) manifest.segments.push_back(std::move(*segment));
    manifest.chain_root = entry.chain;
    manifest.checkpoints.push_back(std::move(entry));
    previous_parameters = take_parameters(state);
    note_written(manifest.checkpoints.back(), queued_at);
    log_debug("proof", "checkpoint step={} written bytes={} sha256={}", step, written.size, written.sha256);
  }
};

BundleWriter::BundleWriter(std::filesystem::path dir, const Task& task, const SigningKey& key, const BundlePlan& plan,
                           bool resume) {
  check_plan(task, plan);
  impl_ = std::make_unique<Impl>(std::move(dir), key, plan);
  Impl& self = *impl_;
  self.manifest = bundle_header(task, key, plan);
  self.resume_requested = resume;
  self.resume_open = resume;
  if (resume) {
    self.read_journal();
  } else if (self.journal.exists() || std::filesystem::exists(self.dir / kManifestFile)) {
    throw Error(ErrorKind::Input, self.dir.string() + " already holds a bundle; pass --resume or choose another --out");
  }
  for (const std::string_view folder : {"ckpt", "segments"}) {
    std::error_code error;
    std::filesystem::create_directories(self.dir / folder, error);
    if (error) throw Error(ErrorKind::Io, "cannot create bundle folder " + (self.dir / folder).string() + ": " + error.message());
  }
  self.copy_model(task);
  // Journaled from the start, so even a crash before checkpoint 0 leaves a folder that
  // --resume accepts and a fresh run refuses.
  if (!resume) self.journal.create(self.journal_run());
}

BundleWriter::~BundleWriter() = default;

std::optional<std::pair<std::int64_t, checkpoint::Checkpoint>> BundleWriter::resume_point() {
  Impl& self = *impl_;
  if (!self.resume_requested) return std::nullopt;
  if (!self.resume_open)
    throw Error(ErrorKind::Internal, "resume_point() may be called once, before the first record_step() or add_checkpoint()");
  self.resume_open = false;
  try {
    self.remove_unjournaled_files();
  } catch (const std::filesystem::filesystem_error& error) {
    throw Error(ErrorKind::Io, std::string("resume: cannot clean up ") + self.dir.string() + ": " + error.what());
  }
  if (self.manifest.checkpoints.empty()) return std::nullopt;

  const CheckpointEntry& last = self.manifest.checkpoints.back();
  const std::filesystem::path path = self.dir / last.file.path;
  const std::string bytes = read_file(path);
  const std::string actual = sha256_hex(bytes);
  if (actual != last.file.sha256)
    throw Error(ErrorKind::Input, "cannot resume: " + path.string() + " has sha256 " + actual + " but the journal recorded " +
                                      last.file.sha256 + " (the file changed after it was written)");
  checkpoint::Checkpoint state =
      checkpoint::decode_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), path.string());
  self.previous_parameters.clear();
  for (const checkpoint::Tensor& tensor : state.tensors)
    if (is_parameter(tensor)) self.previous_parameters.push_back(tensor);
  self.last_checkpoint_step = last.step;
  self.last_recorded_step = last.step;
  self.resume_pending = false;
  log_info("proof", "resume: checkpoint step={} verified sha256={}", last.step, last.file.sha256);
  return std::make_pair(last.step, std::move(state));
}

void BundleWriter::record_step(StepRecord record) {
  Impl& self = *impl_;
  if (self.finished || self.resume_pending)
    throw Error(ErrorKind::Internal, self.finished ? "record_step() after finish()"
                                                   : "record_step() on a resumed bundle before resume_point()");
  if (record.step != self.last_recorded_step + 1 || record.step > self.plan.total_steps)
    throw Error(ErrorKind::Internal, "record_step: expected step " + std::to_string(self.last_recorded_step + 1) +
                                         " (of " + std::to_string(self.plan.total_steps) + "), got " +
                                         std::to_string(record.step));
  self.resume_open = false;
  self.last_recorded_step = record.step;
  self.pending_steps.push_back(std::move(record));
}

void BundleWriter::add_checkpoint(std::int64_t step, checkpoint::Checkpoint state, double train_seconds) {
  Impl& self = *impl_;
  if (self.finished || self.resume_pending)
    throw Error(ErrorKind::Internal, self.finished ? "add_checkpoint() after finish()"
                                                   : "add_checkpoint() on a resumed bundle before resume_point()");
  const bool in_order = self.last_checkpoint_step ? step > *self.last_checkpoint_step : step == 0;
  if (!in_order || step > self.plan.total_steps)
    throw Error(ErrorKind::Internal, "add_checkpoint: step " + std::to_string(step) + " out of order (" +
                                         (self.last_checkpoint_step ? "the last was " + std::to_string(*self.last_checkpoint_step)
                                                                    : std::string("the first must be step 0")) +
                                         ", the run has " + std::to_string(self.plan.total_steps) + " steps)");
  if (self.last_recorded_step != step)
    throw Error(ErrorKind::Internal, "add_checkpoint: step " + std::to_string(step) + " needs every step up to it recorded; the last recorded step is " +
                                         std::to_string(self.last_recorded_step));
  self.resume_open = false;
  self.last_checkpoint_step = step;

  // Shared, so the job is cheap to move through std::function and the tensors are never copied.
  struct Job {
    std::int64_t step;
    checkpoint::Checkpoint state;
    std::vector<StepRecord> steps;
    double train_seconds;
    std::chrono::steady_clock::time_point queued_at;
  };
  auto job = std::make_shared<Job>(
      Job{step, std::move(state), std::move(self.pending_steps), train_seconds, std::chrono::steady_clock::now()});
  self.pending_steps = {};
  self.writer.submit(
      [&self, job] { self.write_checkpoint(job->step, job->state, job->steps, job->train_seconds, job->queued_at); });
}

void BundleWriter::flush() { impl_->writer.wait(); }

double BundleWriter::earlier_train_seconds() const { return impl_->earlier_train_seconds; }

std::vector<CheckpointCommitment> BundleWriter::written_checkpoints() const {
  const std::lock_guard lock(impl_->written_mutex);
  return impl_->written;
}

std::vector<double> BundleWriter::take_write_seconds() {
  const std::lock_guard lock(impl_->written_mutex);
  return std::exchange(impl_->untaken_write_seconds, {});
}

Manifest BundleWriter::finish(const TrainOutcome& outcome) {
  Impl& self = *impl_;
  if (self.finished) throw Error(ErrorKind::Internal, "finish() called twice");
  if (self.resume_pending) throw Error(ErrorKind::Internal, "finish() on a resumed bundle before resume_point()");
  self.writer.wait();
  if (!self.pending_steps.empty())
    throw Error(ErrorKind::Internal, "finish: steps " + std::to_string(self.pending_steps.front().step) + "-" +
                                         std::to_string(self.pending_steps.back().step) +
                                         " were recorded after the last checkpoint; checkpoint them first");
  const std::int64_t last_step = self.manifest.checkpoints.empty() ? -1 : self.manifest.checkpoints.back().step;
  if (last_step != self.plan.total_steps)
    throw Error(ErrorKind::Internal, "finish: the last checkpoint is step " + std::to_string(last_step) +
                                         " but the run has " + std::to_string(self.plan.total_steps) +
                                         " steps; a manifest claims a complete run");
  self.manifest.outcome = outcome;
  write_signed_manifest(self.dir, self.manifest, self.key);
  self.journal.remove();
  self.finished = true;
  log_info("proof", "bundle {} complete: checkpoints={} chain_root={}", self.dir.string(), self.manifest.checkpoints.size(),
           self.manifest.chain_root);
  return self.manifest;
}

}  // namespace solver::proof
