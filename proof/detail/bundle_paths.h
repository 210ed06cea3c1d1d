// Where each file of a bundle lives, relative to the bundle folder ('/'-separated), and how
// large it may be. The writer names files with these and the verifier insists on them, so a
// manifest cannot point the verifier at a file other than the one its step implies.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>

#include "common/bundle_files.h"
#include "common/task.h"

namespace solver::proof::detail {

// manifest.json and manifest.sig: common/bundle_files.h.
inline constexpr std::string_view kModelFile = "model.pt";  // TorchScript tasks: the module, copied in

// A segment file as encode_segment writes it (canonical JSON, no whitespace): per step, each
// index at most 10 digits and a comma, the step number, the loss and lr (at most 24 characters
// each as shortest round-trip doubles) and the field names, under 128 bytes; 256 bytes around
// the steps. A file above this is refused unread (docs/bundle-format.md, "Size caps"; the
// manifest's and signature's caps are in common/bundle_files.h). In double: no overflow.
inline std::uint64_t max_segment_bytes(std::int64_t steps, std::int64_t batch_size) {
  const double bound = 256.0 + static_cast<double>(steps) * (128.0 + 11.0 * static_cast<double>(batch_size));
  return bound < 1.8e19 ? static_cast<std::uint64_t>(bound) : std::numeric_limits<std::uint64_t>::max();
}

inline std::string checkpoint_path(std::int64_t step) {
  return "ckpt/step_" + std::to_string(step) + ".safetensors";
}
inline std::string segment_path(std::int64_t first_step, std::int64_t last_step) {
  return "segments/steps_" + std::to_string(first_step) + "-" + std::to_string(last_step) + ".json";
}

// The bundle's task as a replay runs it: a TorchScript module is the bundle's own copy (a
// regular file in the bundle: bundle_file throws Error(Input) otherwise).
inline Task with_bundled_model(Task task, const std::filesystem::path& bundle_dir) {
  if (task.model.kind == ModelKind::TorchScript) {
    task.model.file.location = std::filesystem::absolute(bundle_file(bundle_dir, kModelFile).path).string();
    task.model.file.local_copy.clear();
  }
  return task;
}

}  // namespace solver::proof::detail
