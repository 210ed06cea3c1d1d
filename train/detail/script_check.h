// Checks a submitter's TorchScript model before any of it runs: what torch::jit::load would run
// while loading, then every operator forward can reach against the allowlist
// (train/detail/script_allowlist.h). Invariant: models.cpp calls check_script_archive before
// torch::jit::load and check_script_module before the first forward pass, for training and for
// every replay alike (all of them build their model through build_model).
#pragma once

#include <filesystem>

namespace torch::jit {
struct Module;
}

namespace solver::train::detail {

// Throws Error(Input) when the archive's code defines __setstate__, which torch::jit::load runs
// while unpickling the module (so before check_script_module could see it). Lets c10::Error
// through for a file that is not a TorchScript archive.
void check_script_archive(const std::filesystem::path& path);

// Walks forward and every method and function it calls (nested blocks included) and throws
// Error(Input) at the first node that may not run, naming it and where: "model.file: operator
// aten::from_file is not allowed (in forward, model.py:12)". Refused: operators off the
// allowlist, loops without a bounded trip count, recursion, calls whose target is chosen at run
// time, methods that are not TorchScript (custom classes), and devices other than the cpu
// named as constants. Also throws Error(Input) when the module has no forward method.
void check_script_module(const torch::jit::Module& module);

}  // namespace solver::train::detail
