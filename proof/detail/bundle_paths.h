// Where each file of a bundle lives, relative to the bundle folder ('/'-separated). The writer
// names files with these and the verifier insists on them, so a manifest cannot point the
// verifier at a file other than the one its step implies.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/task.h"

namespace solver::proof::detail {

inline constexpr std::string_view kManifestFile = "manifest.json";
inline constexpr std::string_view kSignatureFile = "manifest.sig";
inline constexpr std::string_view kModelFile = "model.pt";  // TorchScript tasks: the module, copied in

inline std::string checkpoint_path(std::int64_t step) {
  return "ckpt/step_" + std::to_string(step) + ".safetensors";
}
inline std::string segment_path(std::int64_t first_step, std::int64_t last_step) {
  return "segments/steps_" + std::to_string(first_step) + "-" + std::to_string(last_step) + ".json";
}

// The bundle's task as a replay runs it: a TorchScript module is the bundle's own copy.
inline Task with_bundled_model(Task task, const std::filesystem::path& bundle_dir) {
  if (task.model.kind == "torchscript") {
    task.model.file.location = std::filesystem::absolute(bundle_dir / kModelFile).string();
    task.model.file.local_copy.clear();
  }
  return task;
}

}  // namespace solver::proof::detail
