// The journal of an unfinished bundle, journal.jsonl (docs/bundle-format.md, "Crashes and
// resume"): a header line naming the run, then one line per checkpoint, appended and fsynced once
// the checkpoint's files are durable. A checkpoint costs one short line however long the run is.
// Invariant: lines are only ever appended, each after the files it lists are on disk, so every
// complete line is true; the one line a crash can tear is the last, and resume() cuts it away.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/records.h"
#include "proof/manifest.h"

namespace solver::proof::detail {

// The run a journal belongs to (its header line): only that run may resume from it.
struct JournalRun {
  std::string task_sha256;
  RuntimeInfo runtime;
  std::int64_t train_samples = 0;
  std::int64_t total_steps = 0;
};

// The manifest's checkpoints and segments so far, as the journal recorded them.
struct Journaled {
  std::vector<CheckpointEntry> checkpoints;  // 0, then increasing steps, each chained to the one before
  std::vector<SegmentEntry> segments;        // one per checkpoint after the first
  double train_seconds = 0.0;                // the training time up to the last checkpoint, over every run
};

// The journal file of one bundle folder. Not thread-safe: the bundle writer uses it from one
// thread at a time (its writer thread while checkpoint jobs run, the training thread otherwise).
class Journal {
 public:
  static constexpr std::string_view kFile = "journal.jsonl";
  static constexpr std::string_view kSchema = "solver.pol-journal/2";
  // What solvers before the line-per-checkpoint journal rewrote whole at every checkpoint:
  // {"schema", "manifest": the manifest so far}. resume() reads it once and rewrites it as kFile.
  static constexpr std::string_view kV1File = "journal.json";
  static constexpr std::string_view kV1Schema = "solver.pol-journal/1";

  explicit Journal(std::filesystem::path bundle_dir) : dir_(std::move(bundle_dir)) {}

  // Whether the folder holds a journal of either version: a run that has not finished.
  bool exists() const;
  // Starts the journal: its header line, written atomically, so a journal always has one.
  // Blocks until durable. Throws Error(Io).
  void create(const JournalRun& run) const;
  // Appends the line of one checkpoint whose files are durable, with the segment it closes
  // (none at step 0) and the training time up to it, over every run of the bundle (so a resumed
  // bundle's train_seconds counts them all). Blocks until durable. Throws Error(Io).
  void append(const CheckpointEntry& checkpoint, const std::optional<SegmentEntry>& segment, double train_seconds) const;
  // Reads the journal back for `run`. A torn last line (a crash mid-append) is not journaled:
  // it is dropped and the file rewritten without it; a version-1 journal is rewritten as a
  // version-2 one. Throws Error(Input) naming the file (and line) when the journal is damaged
  // or belongs to another run, Error(Io) when it cannot be read or rewritten.
  Journaled resume(const JournalRun& run) const;
  // Deletes the journal once the manifest is written. Blocks until durable. Throws Error(Io).
  void remove() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace solver::proof::detail
