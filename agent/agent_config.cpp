#include "agent/agent_config.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"

namespace solver::agent {
namespace {

std::filesystem::path home_dir() {
  const char* home = std::getenv("HOME");
  return home != nullptr && *home != '\0' ? std::filesystem::path(home) : std::filesystem::current_path();
}

std::filesystem::path xdg_dir(const char* variable, const char* fallback) {
  if (const char* value = std::getenv(variable); value != nullptr && *value != '\0') return value;
  return home_dir() / fallback;
}

std::filesystem::path config_path(const std::string& text, const std::filesystem::path& base_dir) {
  if (text == "~") return home_dir();
  if (text.starts_with("~/")) return home_dir() / text.substr(2);
  return std::filesystem::absolute(base_dir / text).lexically_normal();
}

std::vector<std::string> strings(ObjectReader& reader, std::string_view key, const std::vector<std::string>& allowed) {
  std::vector<std::string> values;
  for (const nlohmann::json& item : reader.array(key)) {
    if (!item.is_string() || item.get<std::string>().empty())
      ObjectReader::fail(reader.field(key), "expected an array of non-empty strings, got " + ObjectReader::shown(item));
    const std::string value = item.get<std::string>();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), value) == allowed.end())
      ObjectReader::fail(reader.field(key), "unknown value \"" + value + "\"");
    values.push_back(value);
  }
  if (values.empty()) ObjectReader::fail(reader.field(key), "expected at least one entry");
  return values;
}

// "cpu", "cuda" or "cuda:N", or a comma list of them: one slot training data parallel over
// several devices. Checked here so that a typo fails at startup, not at the first claimed task.
void check_device_entries(ObjectReader& reader, const std::vector<std::string>& entries) {
  for (const std::string& entry : entries) {
    std::string_view rest = entry;
    while (true) {
      const std::string_view name = rest.substr(0, rest.find(','));
      const std::string_view index = name.starts_with("cuda:") ? name.substr(5) : std::string_view();
      const bool named = name == "cpu" || name == "cuda" ||
                         (!index.empty() && std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; }));
      if (!named)
        ObjectReader::fail(reader.field("devices"), "entry \"" + entry + "\": expected cpu, cuda or cuda:N, or a comma "
                                                    "list of them (one slot over several GPUs), got \"" + std::string(name) + "\"");
      if (name.size() == rest.size()) break;
      rest.remove_prefix(name.size() + 1);
    }
  }
}

double positive_seconds(ObjectReader& reader, std::string_view key, double fallback) {
  const double value = reader.number_or(key, fallback);
  if (value <= 0.0) ObjectReader::fail(reader.field(key), "expected a positive number of seconds");
  return value;
}

std::uint64_t gigabytes(ObjectReader& reader, std::string_view key, std::uint64_t fallback_bytes) {
  const double value = reader.number_or(key, static_cast<double>(fallback_bytes) / 1e9);
  if (value < 0.0) ObjectReader::fail(reader.field(key), "expected a non-negative number of GB");
  return static_cast<std::uint64_t>(value * 1e9);
}

StorageConfig parse_storage(const nlohmann::json& json, const std::filesystem::path& base_dir) {
  ObjectReader reader(json, "config.storage");
  StorageConfig storage;
  storage.kind = reader.string("kind");
  if (storage.kind == "directory") {
    storage.directory = config_path(reader.string("path"), base_dir);
    reader.finish();
  } else if (storage.kind == "ipfs" || storage.kind == "s3") {
    storage.settings = json;  // checked by the store itself when the agent builds it (docs/storage.md)
  } else {
    ObjectReader::fail(reader.field("kind"), "expected \"directory\", \"ipfs\" or \"s3\", got \"" + storage.kind + "\"");
  }
  return storage;
}

}  // namespace

bool AgentConfig::has_role(const std::string& role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

AgentConfig default_agent_config() {
  AgentConfig config;
  char host[256] = {};
  config.name = ::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' ? host : "solver";
  config.work_dir = xdg_dir("XDG_STATE_HOME", ".local/state") / "solver";
  config.cache_dir = xdg_dir("XDG_CACHE_HOME", ".cache") / "solver";
  config.storage.directory = config.work_dir / "published";
  config.bench_file = config.work_dir / "bench.json";
  return config;
}

AgentConfig parse_agent_config(const std::string& text, const std::filesystem::path& base_dir) {
  if (!json_depth_within(text))
    throw Error(ErrorKind::Config, "agent config: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text, nullptr, true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& error) {
    throw Error(ErrorKind::Config, std::string("agent config is not valid JSON: ") + error.what());
  }
  AgentConfig config = default_agent_config();
  try {
    ObjectReader reader(json, "config");
    if (reader.has("market")) config.market_url = reader.string("market");
    if (reader.has("key")) config.key_file = config_path(reader.string("key"), base_dir);
    if (reader.has("name")) config.name = reader.string("name");
    if (reader.has("work_dir")) config.work_dir = config_path(reader.string("work_dir"), base_dir);
    config.storage.directory = config.work_dir / "published";
    if (reader.has("cache_dir")) config.cache_dir = config_path(reader.string("cache_dir"), base_dir);
    config.bench_file = reader.has("bench_file") ? config_path(reader.string("bench_file"), base_dir)
                                                 : config.work_dir / "bench.json";
    if (reader.has("devices")) {
      config.devices = strings(reader, "devices", {});
      check_device_entries(reader, config.devices);
    }
    if (reader.has("threads")) config.threads = static_cast<int>(reader.non_negative("threads"));
    if (reader.has("roles")) config.roles = strings(reader, "roles", {"solve", "verify"});
    config.allow_local_files = reader.boolean_or("allow_local_files", false);
    if (reader.has("storage")) config.storage = parse_storage(reader.raw("storage"), base_dir);
    if (reader.has("limits")) {
      ObjectReader limits = reader.object("limits");
      config.max_cache_bytes = gigabytes(limits, "cache_gb", config.max_cache_bytes);
      config.min_free_disk_bytes = gigabytes(limits, "min_free_disk_gb", config.min_free_disk_bytes);
      config.tasks_at_once = static_cast<int>(limits.integer_or("tasks_at_once", config.tasks_at_once));
      if (config.tasks_at_once < 1 || config.tasks_at_once > 64)
        ObjectReader::fail("config.limits.tasks_at_once", "expected 1 to 64, got " + std::to_string(config.tasks_at_once));
      limits.finish();
    }
    config.heartbeat_seconds = positive_seconds(reader, "heartbeat_seconds", config.heartbeat_seconds);
    if (reader.has("poll")) {
      ObjectReader poll = reader.object("poll");
      config.poll_min_seconds = positive_seconds(poll, "min_seconds", config.poll_min_seconds);
      config.poll_max_seconds = positive_seconds(poll, "max_seconds", config.poll_max_seconds);
      poll.finish();
      if (config.poll_max_seconds < config.poll_min_seconds)
        ObjectReader::fail("config.poll.max_seconds", "must not be below poll.min_seconds");
    }
    if (reader.has("verify")) {
      ObjectReader verify = reader.object("verify");
      config.verify_q = static_cast<int>(verify.integer_or("q", config.verify_q));
      config.verify_random = static_cast<int>(verify.integer_or("random", config.verify_random));
      config.verify_delta = verify.number_or("delta", config.verify_delta);
      verify.finish();
      if (config.verify_q < 0 || config.verify_random < 0 || config.verify_delta <= 0.0)
        ObjectReader::fail("config.verify", "q and random must be non-negative and delta positive");
    }
    reader.finish();
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw Error(ErrorKind::Config, std::string("agent config: ") + error.what());
  }
  return config;
}

void move_work_dir(AgentConfig& config, const std::filesystem::path& work_dir) {
  const std::filesystem::path moved = std::filesystem::absolute(work_dir);
  if (config.bench_file == config.work_dir / "bench.json") config.bench_file = moved / "bench.json";
  if (config.storage.kind == "directory" && config.storage.directory == config.work_dir / "published")
    config.storage.directory = moved / "published";
  config.work_dir = moved;
}

AgentConfig load_agent_config(const std::filesystem::path& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& error) {
    throw Error(ErrorKind::Config, std::string("cannot read the agent config: ") + error.what());
  }
  try {
    return parse_agent_config(text, std::filesystem::absolute(path).parent_path());
  } catch (const Error& error) {
    throw error.with_context(path.string());
  }
}

}  // namespace solver::agent
