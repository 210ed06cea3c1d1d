// `solver keygen`: a new Ed25519 solver key, written with mode 0600.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "agent/exit_status.h"
#include "cli/command.h"
#include "cli/common.h"
#include "common/keys.h"

namespace solver::cli {
namespace {

int keygen_command(const std::optional<std::filesystem::path>& key_file) {
  const std::filesystem::path path = key_file.value_or(default_key_path());
  const SigningKey key = SigningKey::generate();
  key.save(path);
  std::printf("wrote %s (mode 0600)\npublic key: %s\nBack this file up: it is this solver's identity on the market.\n",
              path.c_str(), key.public_key_hex().c_str());
  return agent::kExitOk;
}

}  // namespace

Command add_keygen_command(CLI::App& parent) {
  auto key_file = std::make_shared<std::optional<std::filesystem::path>>();
  CLI::App* command = parent.add_subcommand("keygen", "Create the solver's Ed25519 key (mode 0600)");
  command->add_option("--key", *key_file, "Where to write it (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
  return {command, [key_file] { return keygen_command(*key_file); }};
}

}  // namespace solver::cli
