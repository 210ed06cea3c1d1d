// What several `solver` commands share: the solver key's default place, loading or creating it,
// and the task trained when none is given.
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>

#include "common/keys.h"
#include "common/task.h"

namespace solver::cli {

// The task `solver run` trains when given none: configs/tasks/fashion-mnist-mlp.json,
// embedded at build time.
std::string_view embedded_default_task();
// The embedded default task, parsed (its paths are absolute). Throws Error(Internal) if the
// build embedded an invalid one.
Task parse_embedded_default_task();

// $SOLVER_KEY when set and not empty. For the agent and the doctor it replaces the config's key,
// and --key replaces it (flag > environment > config file > default).
std::optional<std::filesystem::path> key_from_environment();
// The solver key when no flag names one: $SOLVER_KEY, else $XDG_CONFIG_HOME (or ~/.config)/solver/solver.key.
std::filesystem::path default_key_path();
// The key at `path`, or a new one saved there (with a warning to back it up) when none exists.
// `role` names it in that warning ("solver", "local verifier").
SigningKey load_or_create_key(const std::filesystem::path& path, std::string_view role);

}  // namespace solver::cli
