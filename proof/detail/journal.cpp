// Journal: one writer path (create the header line, then append a line per checkpoint) and one
// reader path (parse the lines, drop a torn last one, check each against the one before).
// Invariant: parse() accepts a checkpoint line only if it follows the line before exactly (the
// next step, the segment in between, the chain link recomputed), so what it returns is always a
// prefix of the manifest a finished run would write.
#include "proof/detail/journal.h"

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/task.h"
#include "proof/detail/bundle_paths.h"

namespace solver::proof::detail {
namespace {

using nlohmann::json;

std::string header_line(const JournalRun& run) {
  return canonical_json({{"schema", Journal::kSchema},
                         {"task_sha256", run.task_sha256},
                         {"runtime", runtime_to_json(run.runtime)},
                         {"train_samples", run.train_samples},
                         {"total_steps", run.total_steps}}) +
         "\n";
}

// The checkpoint's manifest entry, with the manifest entry of the segment it closes as "segment"
// and the training time it took to get there, over every run that trained the bundle.
std::string checkpoint_line(const CheckpointEntry& checkpoint, const std::optional<SegmentEntry>& segment,
                            double train_seconds) {
  json line = {{"step", checkpoint.step},
               {"file", file_entry_to_json(checkpoint.file)},
               {"chain", checkpoint.chain},
               {"train_seconds", train_seconds}};
  if (checkpoint.update) line["update"] = distance_to_json(*checkpoint.update);
  if (segment)
    line["segment"] = {{"first_step", segment->first_step}, {"last_step", segment->last_step}, {"file", file_entry_to_json(segment->file)}};
  return canonical_json(line) + "\n";
}

// The writer names every file by its steps (bundle_paths.h), so a line naming another path is damaged.
FileEntry read_file_entry(ObjectReader& reader, std::string_view key, const std::string& expected_path) {
  FileEntry file = file_entry_from_json(reader.raw(key), reader.field(key));
  if (file.path != expected_path)
    ObjectReader::fail(reader.field(key) + ".path", "expected \"" + expected_path + "\", got \"" + file.path + "\"");
  return file;
}

// What the header line says about the run that began the journal.
struct Header {
  std::string task_sha256;
  json runtime;  // as the manifest writes it (runtime_to_json)
  std::int64_t train_samples = 0;
  std::int64_t total_steps = 0;
};

Header read_header(const json& line) {
  ObjectReader reader(line, "header");
  const std::string schema = reader.string("schema");
  if (schema != Journal::kSchema)
    ObjectReader::fail(reader.field("schema"), "expected \"" + std::string(Journal::kSchema) + "\", got \"" + schema + "\"");
  Header header;
  header.task_sha256 = reader.sha256("task_sha256");
  header.runtime = reader.raw("runtime");
  header.train_samples = reader.non_negative("train_samples");
  header.total_steps = reader.non_negative("total_steps");
  reader.finish();
  return header;
}

void check_run(const Header& header, const JournalRun& run, const std::string& where) {
  if (header.task_sha256 != run.task_sha256)
    throw Error(ErrorKind::Input, where + " belongs to task " + header.task_sha256 + ", not to this task " +
                                      run.task_sha256 + "; choose another --out");
  // Compared as the manifest will record it: the manifest claims this run's runtime for every
  // segment, the journaled ones included.
  const json runtime = runtime_to_json(run.runtime);
  if (header.runtime != runtime || header.train_samples != run.train_samples || header.total_steps != run.total_steps)
    throw Error(ErrorKind::Input, where + " was written by runtime " + header.runtime.dump() + " with " +
                                      std::to_string(header.train_samples) + " samples and " +
                                      std::to_string(header.total_steps) + " steps; this run is runtime " +
                                      runtime.dump() + " with " + std::to_string(run.train_samples) + " samples and " +
                                      std::to_string(run.total_steps) +
                                      " steps: a bundle replays bitwise only if every segment ran on the same runtime");
}

// Reads one checkpoint line into `journaled`, after checking it follows the last one there:
// checkpoint 0 first, then each later checkpoint with its update, the segment since the one
// before, and the chain link recomputed from both.
void read_checkpoint_line(const json& line, const JournalRun& run, Journaled& journaled) {
  ObjectReader reader(line, "checkpoint");
  CheckpointEntry checkpoint;
  checkpoint.step = reader.non_negative("step");
  checkpoint.file = read_file_entry(reader, "file", checkpoint_path(checkpoint.step));
  checkpoint.chain = reader.sha256("chain");
  if (reader.has("update")) checkpoint.update = distance_from_json(reader.raw("update"), reader.field("update"));
  const double train_seconds = reader.number("train_seconds");
  if (train_seconds < 0.0) ObjectReader::fail(reader.field("train_seconds"), "expected a non-negative number of seconds");
  std::optional<SegmentEntry> segment;
  if (reader.has("segment")) {
    ObjectReader item = reader.object("segment");
    SegmentEntry entry;
    entry.first_step = item.non_negative("first_step");
    entry.last_step = item.non_negative("last_step");
    entry.file = read_file_entry(item, "file", segment_path(entry.first_step, entry.last_step));
    item.finish();
    segment = std::move(entry);
  }
  reader.finish();

  const std::string got = "step " + std::to_string(checkpoint.step) +
                          (segment ? ", segment " + std::to_string(segment->first_step) + "-" + std::to_string(segment->last_step)
                                   : ", no segment") +
                          (checkpoint.update ? ", an update" : ", no update");
  const CheckpointEntry* previous = journaled.checkpoints.empty() ? nullptr : &journaled.checkpoints.back();
  if (!previous && (checkpoint.step != 0 || segment || checkpoint.update))
    ObjectReader::fail("checkpoint", "expected step 0 with no segment and no update first, got " + got);
  if (previous && !(checkpoint.step > previous->step && checkpoint.step <= run.total_steps && checkpoint.update &&
                    segment && segment->first_step == previous->step + 1 && segment->last_step == checkpoint.step))
    ObjectReader::fail("checkpoint", "expected the checkpoint after step " + std::to_string(previous->step) + " (of " +
                                         std::to_string(run.total_steps) + ") with an update and the segment from step " +
                                         std::to_string(previous->step + 1) + " to it, got " + got);
  const std::string expected_chain = chain_link(previous ? previous->chain : run.task_sha256, checkpoint.step,
                                                checkpoint.file.sha256, segment ? segment->file.sha256 : "");
  if (checkpoint.chain != expected_chain)
    ObjectReader::fail(reader.field("chain"), "expected " + expected_chain + " (linked from the line before by this line's hashes), got " +
                                                  checkpoint.chain);
  journaled.checkpoints.push_back(std::move(checkpoint));
  if (segment) journaled.segments.push_back(std::move(*segment));
  journaled.train_seconds = train_seconds;
}

// Reads the journal `text` of `run` (`where` names it in errors). `kept` receives the lines
// that count: all of them but a torn last one, each with its newline.
Journaled parse(std::string_view text, const JournalRun& run, const std::string& where, std::string& kept) {
  Journaled journaled;
  std::size_t begin = 0;
  for (int number = 1; begin < text.size(); ++number) {
    const std::size_t newline = text.find('\n', begin);
    const std::string_view line = text.substr(begin, newline == std::string_view::npos ? std::string_view::npos : newline - begin);
    begin = newline == std::string_view::npos ? text.size() : newline + 1;
    // Only the last append can be torn: its line lacks the newline, or holds zeros where its
    // bytes had not reached the disk when the file grew (not JSON). It was never journaled. The
    // header cannot be torn: it was written atomically.
    if (number > 1 && begin == text.size() && (newline == std::string_view::npos || !json::accept(line))) break;
    const std::string location = where + " line " + std::to_string(number);
    const json parsed = parse_json_document(line, location);
    std::optional<Header> header;
    try {
      if (number == 1)
        header = read_header(parsed);
      else
        read_checkpoint_line(parsed, run, journaled);
    } catch (const Error& error) {
      throw error.with_context(location);
    }
    if (header) check_run(*header, run, where);  // not damage: the journal of another run
    kept.append(line).push_back('\n');
  }
  if (kept.empty()) throw Error(ErrorKind::Input, where + " is empty: expected its header line");
  return journaled;
}

// A version-1 journal's manifest so far, as the lines a version-2 journal of that run would hold.
std::string lines_of_v1_journal(const std::filesystem::path& path) {
  const json parsed = parse_json_document(read_file(path), path.string());
  try {
    ObjectReader reader(parsed, "journal");
    const std::string schema = reader.string("schema");
    if (schema != Journal::kV1Schema)
      ObjectReader::fail(reader.field("schema"), "expected \"" + std::string(Journal::kV1Schema) + "\", got \"" + schema + "\"");
    const Manifest manifest = manifest_from_json(reader.raw("manifest"));
    reader.finish();
    const std::size_t checkpoints = manifest.checkpoints.size();
    if (manifest.segments.size() != (checkpoints == 0 ? 0 : checkpoints - 1))
      ObjectReader::fail(reader.field("manifest"), "lists " + std::to_string(checkpoints) + " checkpoints but " +
                                                       std::to_string(manifest.segments.size()) + " segments");
    std::string lines =
        header_line(JournalRun{manifest.task_sha256, manifest.runtime, manifest.train_samples, manifest.total_steps});
    for (std::size_t i = 0; i < checkpoints; ++i)
      lines += checkpoint_line(manifest.checkpoints[i],
                               i == 0 ? std::nullopt : std::optional<SegmentEntry>(manifest.segments[i - 1]),
                               0.0);  // a version-1 journal did not record it
    return lines;
  } catch (const Error& error) {
    throw error.with_context(path.string());
  }
}

}  // namespace

bool Journal::exists() const { return std::filesystem::exists(dir_ / kFile) || std::filesystem::exists(dir_ / kV1File); }

void Journal::create(const JournalRun& run) const { write_file_durably(dir_ / kFile, header_line(run)); }

void Journal::append(const CheckpointEntry& checkpoint, const std::optional<SegmentEntry>& segment,
                     double train_seconds) const {
  append_file_durably(dir_ / kFile, checkpoint_line(checkpoint, segment, train_seconds));
}

Journaled Journal::resume(const JournalRun& run) const {
  const std::filesystem::path path = dir_ / kFile;
  const std::filesystem::path v1_path = dir_ / kV1File;
  const bool upgrading = !std::filesystem::exists(path);
  const std::string text = upgrading ? lines_of_v1_journal(v1_path) : read_file(path);
  const std::string where = upgrading ? v1_path.string() + " (read as " + std::string(kFile) + ")" : path.string();
  std::string kept;
  Journaled journaled = parse(text, run, where, kept);
  if (upgrading || kept != text) {
    if (upgrading)
      log_info("proof", "resume: rewriting {} (a {} journal) as {}", v1_path.string(), kV1Schema, kFile);
    else
      log_info("proof", "resume: dropping the torn last line of {} (a checkpoint whose journaling a crash cut short)",
               path.string());
    write_file_durably(path, kept);
  }
  // Once rewritten (even by a resume that crashed right after), the version-1 journal is a stale copy.
  std::error_code error;
  if (std::filesystem::remove(v1_path, error)) fsync_folder(dir_);
  if (error) throw Error(ErrorKind::Io, "cannot remove " + v1_path.string() + ": " + error.message());
  return journaled;
}

void Journal::remove() const {
  const std::filesystem::path path = dir_ / kFile;
  std::error_code error;
  std::filesystem::remove(path, error);
  if (error) throw Error(ErrorKind::Io, "cannot remove " + path.string() + ": " + error.message());
  fsync_folder(dir_);
}

}  // namespace solver::proof::detail
