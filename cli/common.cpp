#include "cli/common.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>

#include "common/error.h"
#include "common/log.h"

namespace solver::cli {

Task parse_embedded_default_task() {
  try {
    return parse_task(nlohmann::json::parse(embedded_default_task()), std::filesystem::current_path());
  } catch (const nlohmann::json::exception& error) {
    throw Error(ErrorKind::Internal, std::string("the embedded default task is not valid JSON: ") + error.what());
  }
}

std::optional<std::filesystem::path> key_from_environment() {
  if (const char* key = std::getenv("SOLVER_KEY"); key != nullptr && *key != '\0') return key;
  return std::nullopt;
}

std::filesystem::path default_key_path() {
  if (const auto key = key_from_environment()) return *key;
  if (const char* config = std::getenv("XDG_CONFIG_HOME"); config != nullptr && *config != '\0')
    return std::filesystem::path(config) / "solver" / "solver.key";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : ".") / ".config" / "solver" / "solver.key";
}

SigningKey load_or_create_key(const std::filesystem::path& path, std::string_view role) {
  if (std::filesystem::exists(path)) return SigningKey::load(path);
  SigningKey key = SigningKey::generate();
  key.save(path);
  log_warn("keys", "created a new {} key at {} (public {}); back it up: it is this rig's identity", role, path.string(),
           key.public_key_hex());
  return key;
}

}  // namespace solver::cli
