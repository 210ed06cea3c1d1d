// Shared pieces of the end-to-end tests: small real tasks on Fashion-MNIST, and running the
// real `solver` binary.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/test_support.h"

namespace solver::test {

// A task that trains in a few seconds on 2 cores: real data, few steps.
nlohmann::json small_task(const std::string& id, int steps, int checkpoint_every,
                          const nlohmann::json& model = {{"kind", "mlp"}, {"hidden", {32}}});

// Writes `task` to dir/<name>.json and returns the path.
std::filesystem::path write_task(const std::filesystem::path& dir, const std::string& name, const nlohmann::json& task);

// Runs `solver` with the arguments.
CommandResult run_solver(const std::vector<std::string>& arguments);

// Creates a key with `solver keygen` in dir and returns its path.
std::filesystem::path make_key(const std::filesystem::path& dir);

nlohmann::json read_json(const std::filesystem::path& path);

}  // namespace solver::test
