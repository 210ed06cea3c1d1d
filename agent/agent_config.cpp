#include "agent/agent_config.h"

#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "proof/profile.h"

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

// Each entry a device list (common/device.h): one slot, training data parallel when it names
// several. Checked here so that a typo fails at startup, not at the first claimed task.
void check_device_entries(ObjectReader& reader, const std::vector<std::string>& entries) {
  for (const std::string& entry : entries) {
    try {
      parse_device_list(entry);
    } catch (const Error& error) {
      ObjectReader::fail(reader.field("devices"), error.what());
    }
  }
}

// A number of `unit` within [0, max]: anything larger is a typo, and would overflow the conversion.
double bounded_number(ObjectReader& reader, std::string_view key, double fallback, double max, std::string_view unit) {
  const double value = reader.number_or(key, fallback);
  if (!(value >= 0.0 && value <= max))
    ObjectReader::fail(reader.field(key), fmt::format("expected 0 to {:g} {}, got {:g}", max, unit, value));
  return value;
}

// Polling and heartbeat intervals: positive, and at most a day.
double positive_seconds(ObjectReader& reader, std::string_view key, double fallback) {
  const double value = bounded_number(reader, key, fallback, 86400.0, "seconds");
  if (value <= 0.0) ObjectReader::fail(reader.field(key), "expected a positive number of seconds");
  return value;
}

std::uint64_t gigabytes(ObjectReader& reader, std::string_view key, std::uint64_t fallback_bytes) {
  return static_cast<std::uint64_t>(bounded_number(reader, key, static_cast<double>(fallback_bytes) / 1e9, 1e6, "GB") * 1e9);
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

// "HH:MM-HH:MM" (hours 00-23, minutes 00-59), the two ends different.
HourWindow parse_hour_window(const nlohmann::json& item, const std::string& field) {
  const std::string expected = "expected \"HH:MM-HH:MM\" in local time, e.g. \"22:00-08:00\", got ";
  if (!item.is_string()) ObjectReader::fail(field, expected + ObjectReader::shown(item));
  const std::string text = item.get<std::string>();
  const auto minute_at = [&](std::size_t at) {
    const auto digit = [&](std::size_t i) { return text[at + i] - '0'; };
    for (const std::size_t i : {0u, 1u, 3u, 4u})
      if (text[at + i] < '0' || text[at + i] > '9') ObjectReader::fail(field, expected + "\"" + text + "\"");
    const int hours = 10 * digit(0) + digit(1);
    const int minutes = 10 * digit(3) + digit(4);
    if (text[at + 2] != ':' || hours > 23 || minutes > 59) ObjectReader::fail(field, expected + "\"" + text + "\"");
    return 60 * hours + minutes;
  };
  if (text.size() != 11 || text[5] != '-') ObjectReader::fail(field, expected + "\"" + text + "\"");
  const HourWindow window{minute_at(0), minute_at(6)};
  if (window.start_minute == window.end_minute)
    ObjectReader::fail(field, "\"" + text + "\" starts where it ends; leave idle_only.hours out to allow every hour");
  return window;
}

}  // namespace

bool HourWindow::contains(int minute_of_day) const {
  if (start_minute < end_minute) return minute_of_day >= start_minute && minute_of_day < end_minute;
  return minute_of_day >= start_minute || minute_of_day < end_minute;  // across midnight
}

bool IdleOnly::inside_hours(int minute_of_day) const {
  return hours.empty() || std::ranges::any_of(hours, [&](const HourWindow& window) { return window.contains(minute_of_day); });
}

bool AgentConfig::has_role(const std::string& role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

AgentConfig with_visible_devices(AgentConfig config, int cuda_device_count) {
  if (config.devices.empty()) {
    for (int i = 0; i < cuda_device_count; ++i) config.devices.push_back("cuda:" + std::to_string(i));
    if (config.devices.empty()) config.devices.push_back("cpu");
  }
  if (config.tasks_at_once == 0) config.tasks_at_once = static_cast<int>(config.devices.size());
  return config;
}

int cuda_devices_needed(const AgentConfig& config) {
  int needed = 0;
  for (const std::string& entry : config.devices)
    for (const Device& device : parse_device_list(entry))
      if (device.is_cuda()) needed = std::max(needed, device.index + 1);
  return needed;
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
    config.threads = static_cast<int>(bounded_number(reader, "threads", config.threads, 256, "threads"));
    if (reader.has("roles")) config.roles = strings(reader, "roles", {"solve", "verify"});
    config.downloads.allow_local_files = reader.boolean_or("allow_local_files", false);
    config.downloads.allow_http = reader.boolean_or("allow_http", false);
    config.downloads.allow_private_addresses = reader.boolean_or("allow_private_addresses", false);
    if (reader.has("allow_networks"))
      for (const nlohmann::json& cidr : reader.array("allow_networks")) {
        if (!cidr.is_string())
          ObjectReader::fail("config.allow_networks", "expected networks in CIDR form, got " + ObjectReader::shown(cidr));
        config.downloads.allowed_networks.push_back(net::IpNetwork::parse(cidr.get<std::string>(), "config.allow_networks"));
      }
    if (reader.has("storage")) config.storage = parse_storage(reader.raw("storage"), base_dir);
    if (reader.has("limits")) {
      ObjectReader limits = reader.object("limits");
      config.max_cache_bytes = gigabytes(limits, "cache_gb", config.max_cache_bytes);
      config.min_free_disk_bytes = gigabytes(limits, "min_free_disk_gb", config.min_free_disk_bytes);
      config.max_host_memory_bytes = gigabytes(limits, "max_host_memory_gb", config.max_host_memory_bytes);
      if (const std::int64_t keep = limits.integer_or("keep_bundles", config.keep_bundles); keep < 0 || keep > 1000000)
        ObjectReader::fail("config.limits.keep_bundles", "expected 0 to 1000000 bundles, got " + std::to_string(keep));
      else
        config.keep_bundles = static_cast<int>(keep);
      config.bundle_max_age_seconds = 86400.0 * bounded_number(limits, "bundle_max_age_days",
                                                               config.bundle_max_age_seconds / 86400.0, 36600, "days");
      TaskCeilings& ceilings = config.ceilings;
      ceilings.max_steps = static_cast<std::int64_t>(
          bounded_number(limits, "max_task_steps", static_cast<double>(ceilings.max_steps), 1e15, "steps"));
      ceilings.max_wall_seconds = 3600.0 * bounded_number(limits, "max_task_hours", ceilings.max_wall_seconds / 3600.0,
                                                          24.0 * 366, "hours");
      ceilings.max_disk_bytes = gigabytes(limits, "max_task_disk_gb", ceilings.max_disk_bytes);
      ceilings.max_step_seconds = bounded_number(limits, "max_step_seconds", ceilings.max_step_seconds, 1e6, "seconds");
      if (ceilings.max_step_seconds <= 0.0) ObjectReader::fail("config.limits.max_step_seconds", "expected a positive number");
      config.max_worker_faults = static_cast<int>(
          bounded_number(limits, "max_worker_faults", config.max_worker_faults, 1000, "failures"));
      if (config.max_worker_faults < 1) ObjectReader::fail("config.limits.max_worker_faults", "expected at least 1");
      ceilings.max_memory_mb = static_cast<std::int64_t>(
          bounded_number(limits, "max_task_memory_mb", static_cast<double>(ceilings.max_memory_mb), 1e9, "MB"));
      if (limits.has("tasks_at_once")) {
        const std::int64_t slots = limits.integer_or("tasks_at_once", 1);
        if (slots < 1 || slots > 64) ObjectReader::fail("config.limits.tasks_at_once", "expected 1 to 64, got " + std::to_string(slots));
        config.tasks_at_once = static_cast<int>(slots);
      }
      limits.finish();
    }
    if (reader.has("metrics")) {
      ObjectReader metrics = reader.object("metrics");
      const std::int64_t port = metrics.integer_or("port", 0);
      if (port < 0 || port > 65535) ObjectReader::fail("config.metrics.port", "expected 0 (off) to 65535, got " + std::to_string(port));
      config.metrics_port = static_cast<int>(port);
      metrics.finish();
    }
    config.heartbeat_seconds = positive_seconds(reader, "heartbeat_seconds", config.heartbeat_seconds);
    if (reader.has("pause")) {
      ObjectReader pause = reader.object("pause");
      config.pause_release_seconds =
          bounded_number(pause, "release_after_seconds", config.pause_release_seconds, 7 * 24 * 3600.0, "seconds");
      pause.finish();
    }
    if (reader.has("thermal")) {
      ObjectReader thermal = reader.object("thermal");
      ThermalLimits& limits = config.thermal;
      limits.max_celsius = bounded_number(thermal, "max_celsius", limits.max_celsius, 150.0, "°C");
      limits.resume_celsius = bounded_number(thermal, "resume_celsius", limits.resume_celsius, 150.0, "°C");
      limits.max_throttled_seconds =
          positive_seconds(thermal, "max_throttled_seconds", limits.max_throttled_seconds);
      thermal.finish();
      if (limits.resume_celsius >= limits.max_celsius)
        ObjectReader::fail("config.thermal.resume_celsius",
                           fmt::format("must be below max_celsius ({:g}), got {:g}", limits.max_celsius,
                                       limits.resume_celsius));
    }
    if (reader.has("idle_only")) {
      ObjectReader idle = reader.object("idle_only");
      config.idle_only.enabled = idle.boolean_or("enabled", config.idle_only.enabled);
      config.idle_only.stop_within_seconds =
          bounded_number(idle, "stop_within_seconds", config.idle_only.stop_within_seconds, 3600.0, "seconds");
      if (idle.has("hours")) {
        const nlohmann::json& hours = idle.array("hours");
        for (std::size_t i = 0; i < hours.size(); ++i)
          config.idle_only.hours.push_back(parse_hour_window(hours[i], "config.idle_only.hours[" + std::to_string(i) + "]"));
      }
      idle.finish();
    }
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
      config.verify.q = static_cast<int>(bounded_number(verify, "q", config.verify.q, 1e6, "segments"));
      config.verify.random_count = static_cast<int>(bounded_number(verify, "random", config.verify.random_count, 1e6, "segments"));
      if (verify.has("delta"))
        ObjectReader::fail("config.verify.delta", "no longer read: a fixed threshold is one a forger can rely on; list "
                                                  "`solver profile` outputs in verify.profiles instead (docs/profiling.md)");
      if (verify.has("profiles")) {
        const nlohmann::json& profiles = verify.array("profiles");
        for (std::size_t i = 0; i < profiles.size(); ++i) {
          if (!profiles[i].is_string())
            ObjectReader::fail("config.verify.profiles[" + std::to_string(i) + "]", "expected the path of a profile file");
          config.verify.coverages.push_back(proof::read_profile(profiles[i].get<std::string>()));
        }
      }
      if (verify.has("catch_probability")) {
        if (verify.has("random"))
          ObjectReader::fail("config.verify", "give either random or catch_probability, not both");
        config.verify.catch_probability = verify.number_or("catch_probability", 0.0);
        if (!(*config.verify.catch_probability > 0.0 && *config.verify.catch_probability <= 1.0))
          ObjectReader::fail("config.verify.catch_probability",
                             fmt::format("expected above 0 and at most 1, got {:g}", *config.verify.catch_probability));
      }
      config.verify.faked_fraction = verify.number_or("faked_fraction", config.verify.faked_fraction);
      if (!(config.verify.faked_fraction > 0.0 && config.verify.faked_fraction <= 1.0))
        ObjectReader::fail("config.verify.faked_fraction",
                           fmt::format("expected above 0 and at most 1, got {:g}", config.verify.faked_fraction));
      verify.finish();
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

std::optional<std::string> market_url_from_environment() {
  const char* url = std::getenv("SOLVER_MARKET");
  if (url == nullptr || *url == '\0') return std::nullopt;
  return url;
}

AgentConfig load_agent_config(const std::filesystem::path& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& error) {
    throw Error(ErrorKind::Config, std::string("cannot read the agent config: ") + error.what());
  }
  AgentConfig config;
  try {
    config = parse_agent_config(text, std::filesystem::absolute(path).parent_path());
  } catch (const Error& error) {
    throw error.with_context(path.string());
  }
  // Refused like a key readable by others: the secret would be as good as published.
  if (config.storage.settings.is_object() && config.storage.settings.contains("secret_access_key"))
    require_private_file(path, "agent config (it holds storage.secret_access_key)");
  return config;
}

}  // namespace solver::agent
