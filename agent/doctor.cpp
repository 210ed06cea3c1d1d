#include "agent/doctor.h"

#include <fmt/format.h>

#include <cmath>
#include <ctime>
#include <map>
#include <set>

#include "agent/control_client.h"
#include "agent/daemon.h"
#include "agent/detail/gpu_steward.h"
#include "agent/detail/rig.h"
#include "agent/stores.h"
#include "common/device.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/keys.h"
#include "common/version.h"
#include "hardware/host_benchmark.h"
#include "hardware/nvml.h"
#include "kernels/distance.h"
#include "kernels/stress.h"
#include "net/http.h"
#include "net/market_client.h"
#include "net/market_protocol.h"
#include "train/benchmark.h"

namespace solver::agent {
namespace {

// Clock offsets beyond these make signed requests and lease times unreliable.
constexpr double kWarnClockOffsetSeconds = 5.0;
constexpr double kFailClockOffsetSeconds = 60.0;
constexpr int kHotGpuCelsius = 85;
constexpr double kSlowDiskGbPerSecond = 0.05;  // 50 MB/s: a 1 GB checkpoint every few steps would stall training
// NVML's clock-throttle bits that mean the GPU is held back by heat or power, not by idling.
constexpr std::uint64_t kThermalOrPowerThrottle = 0x4 /*SW power cap*/ | 0x8 /*HW slowdown*/ | 0x20 /*SW thermal*/ |
                                                  0x40 /*HW thermal*/ | 0x80 /*HW power brake*/;

struct Checks {
  DoctorReport report;
  void add(std::string area, std::string name, CheckStatus status, std::string detail, std::string fix = "") {
    report.checks.push_back({std::move(area), std::move(name), status, std::move(detail), std::move(fix)});
  }
  // Marks the rows from `first` on as device `device`'s own, quarantined as `reason` when they fail.
  void belongs_to(std::size_t first, const std::string& device, const std::string& reason) {
    for (std::size_t i = first; i < report.checks.size(); ++i) {
      report.checks[i].device = device;
      report.checks[i].quarantine_reason = reason;
    }
  }
  // Runs `check`, which adds its own rows; an exception it lets out is one FAIL row.
  template <typename F>
  void run(const std::string& area, const std::string& name, const std::string& fix, F&& check) {
    try {
      check();
    } catch (const std::exception& error) {
      add(area, name, CheckStatus::Fail, error.what(), fix);
    }
  }
};

std::set<std::string> configured_devices(const AgentConfig& config) {
  std::set<std::string> names;
  for (const std::string& list : config.devices)
    for (const Device& device : parse_device_list(list)) names.insert(device.name());
  return names;
}

void check_gpus(const AgentConfig& config, Checks& checks) {
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory();
  const int needed = cuda_devices_needed(config);
  if (inventory.unavailable_reason.empty())
    checks.add("gpu", "nvidia driver", CheckStatus::Ok,
               fmt::format("driver {} (CUDA {}), {} GPU(s)", inventory.driver_version, inventory.cuda_driver_version,
                           inventory.gpus.size()));
  else
    checks.add("gpu", "nvidia driver", needed > 0 ? CheckStatus::Fail : CheckStatus::Ok, inventory.unavailable_reason,
               needed > 0 ? "install the NVIDIA driver, or set \"devices\": [\"cpu\"] in the agent config" : "");

  const int usable = train::torch_cuda_device_count();
  const std::string found = fmt::format("LibTorch can use {} CUDA device(s){}", usable,
                                        usable == 0 ? " (no GPU, no driver, or a CPU-only LibTorch build)" : "");
  if (needed > usable)
    checks.add("gpu", "libtorch cuda", CheckStatus::Fail,
               fmt::format("config.devices {} need {} CUDA device(s), but {}", fmt::join(config.devices, ","), needed, found),
               "fix \"devices\" in the agent config, or build solver against a CUDA LibTorch (docs/gpu.md)");
  else
    checks.add("gpu", "libtorch cuda", CheckStatus::Ok, found);
  const int runtime = kernels::cuda_device_count();
  if (static_cast<int>(inventory.gpus.size()) > runtime)
    checks.add("gpu", "cuda runtime", CheckStatus::Warn,
               fmt::format("NVML sees {} GPU(s), the CUDA runtime {}", inventory.gpus.size(), runtime),
               "a driver older than this build's CUDA runtime, or CUDA_VISIBLE_DEVICES hides some: update the driver");
  if (needed > usable) return;  // the self-tests below would only repeat it

  for (const std::string& name : configured_devices(config)) {
    const Device device = parse_device(name);
    const std::size_t self_test_row = checks.report.checks.size();
    checks.run("gpu", "self-test " + name, "the device computes nothing: check `nvidia-smi` and the kernel log (Xid errors)", [&] {
      const train::MatmulResult matmul = train::measure_matmul({name, "fp32", 256, 1, 0});
      checks.add("gpu", "self-test " + name, CheckStatus::Ok, fmt::format("a 256x256 matmul at {:.1f} GFLOP/s", matmul.gflops));
    });
    checks.belongs_to(self_test_row, name, "self_test");
    if (!device.is_cuda()) continue;
    const std::size_t twin_row = checks.report.checks.size();
    checks.run("gpu", "kernel twin " + name, "do not let this GPU take work: it computes wrong (heat, power, clocks or a fault)", [&] {
      const kernels::StressResult stress = kernels::run_stress_cuda(device.index, 0.5);
      const CheckStatus status = stress.mismatched_values == 0 ? CheckStatus::Ok : CheckStatus::Fail;
      checks.add("gpu", "kernel twin " + name, status,
                 fmt::format("FMA kernel: {} of {} values differ from the CPU twin", stress.mismatched_values,
                             stress.checked_values),
                 status == CheckStatus::Ok ? "" : "do not let this GPU take work: it computes wrong under load");
    });
    checks.belongs_to(twin_row, name, "kernel_twin");
    const hardware::GpuInfo* gpu = hardware::gpu_of_cuda_device(inventory, device.index);
    if (gpu == nullptr) continue;
    for (Check& check : gpu_health_checks(name, *gpu)) {
      check.device = name;  // quarantined by the steward's first reading, which names the fault
      checks.report.checks.push_back(std::move(check));
    }
  }
}

void check_disks(const AgentConfig& config, bool measure_disk, Checks& checks) {
  for (const auto& [dir, field] : {std::pair{config.work_dir / "tasks", "work_dir"}, std::pair{config.cache_dir, "cache_dir"}}) {
    checks.run("disk", field, fmt::format("make {} writable by the agent's user, or change config.{}", dir.string(), field), [&] {
      try {
        std::filesystem::create_directories(dir);
        const std::filesystem::path probe = dir / ".write-probe";
        write_file_durably(probe, "solver");
        std::filesystem::remove(probe);
      } catch (const std::exception& error) {
        throw Error(ErrorKind::Config, fmt::format("config.{}: cannot write in {}: {}", field, dir.string(), error.what()));
      }
      checks.add("disk", field, CheckStatus::Ok, "writable: " + dir.string());
    });
  }
  std::error_code error;
  if (const std::uint64_t free_bytes = std::filesystem::space(config.work_dir, error).available; !error) {
    const bool enough = free_bytes >= config.min_free_disk_bytes;
    checks.add("disk", "free space", enough ? CheckStatus::Ok : CheckStatus::Fail,
               fmt::format("{:.1f} GB free under {} (limits.min_free_disk_gb is {:.1f})", free_bytes / 1e9,
                           config.work_dir.string(), config.min_free_disk_bytes / 1e9),
               enough ? "" : "free space on that disk, or lower limits.min_free_disk_gb");
  }
  if (!measure_disk) return;
  checks.run("disk", "write rate", "check the disk under the work dir (a failing or network disk?)", [&] {
    const hardware::DiskWrite write = hardware::measure_disk_write({config.work_dir, std::size_t{64} << 20});
    const bool fast = write.gb_per_s >= kSlowDiskGbPerSecond;
    checks.add("disk", "write rate", fast ? CheckStatus::Ok : CheckStatus::Warn,
               fmt::format("{:.0f} MB/s written and fsynced in {}", write.gb_per_s * 1000, config.work_dir.string()),
               fast ? "" : "a slow disk makes checkpoints stall training: put work_dir on a local SSD");
  });
}

// The market's Date header against this machine's clock, in seconds (positive: we are ahead).
std::optional<double> clock_offset(const net::HttpResponse& reply) {
  const std::optional<std::string> date = reply.header("date");
  if (!date) return std::nullopt;
  std::tm parsed{};
  if (::strptime(date->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &parsed) == nullptr) return std::nullopt;
  return std::difftime(std::time(nullptr), ::timegm(&parsed));
}

// The devices the agent working in config.work_dir has quarantined, each a FAIL until cleared;
// none, and no row, when no agent runs there.
std::map<std::string, std::string> check_running_agent_quarantine(const AgentConfig& config, Checks& checks) {
  std::map<std::string, std::string> quarantined;
  if (!agent_running_in(config.work_dir)) return quarantined;
  checks.run("gpu", "quarantine", "the running agent does not answer on its control socket: see its log", [&] {
    const nlohmann::json reply = send_control_request(config.work_dir, {{"command", "status"}});
    const nlohmann::json devices = reply.value("quarantined", nlohmann::json::object());
    for (const auto& [device, why] : devices.items())
      quarantined[device] = why.is_string() ? why.get<std::string>() : why.dump();
    if (quarantined.empty())
      checks.add("gpu", "quarantine", CheckStatus::Ok, "the running agent has quarantined no device");
    for (const auto& [device, why] : quarantined)
      checks.add("gpu", "quarantine " + device, CheckStatus::Fail, "the running agent quarantined it: " + why,
                 fmt::format("fix the GPU, then `solver agent clear {}`", device));
  });
  return quarantined;
}

void check_identity_and_network(const AgentConfig& config, const std::filesystem::path& key_file, Checks& checks) {
  // Registration below sends them too, so that the market does not forget them.
  const std::map<std::string, std::string> quarantined = check_running_agent_quarantine(config, checks);
  std::optional<SigningKey> key;
  if (!std::filesystem::exists(key_file)) {
    checks.add("identity", "key", CheckStatus::Warn, "no key at " + key_file.string(),
               "the agent creates it at its first start (or run `solver keygen --key " + key_file.string() +
                   "`); back it up: it is this rig's identity");
  } else {
    checks.run("identity", "key", "make it the agent user's own, mode 0600: chmod 600 " + key_file.string(), [&] {
      key = SigningKey::load(key_file);
      checks.add("identity", "key", CheckStatus::Ok, key_file.string() + " (public " + key->public_key_hex().substr(0, 16) + "…)");
    });
  }

  bool reachable = false;
  std::string health;  // the market's health reply
  checks.run("network", "market", "check config.market and that the market is up and reachable from here", [&] {
    net::HttpRequest request;
    request.url = config.market_url + "/v1/health";
    request.timeout = std::chrono::seconds(10);
    const net::HttpResponse reply = net::perform(request);
    net::throw_unless_success(reply, "market health " + request.url);
    reachable = true;
    health = reply.body;
    checks.add("network", "market", CheckStatus::Ok, config.market_url + " answers");
    const std::optional<double> offset = clock_offset(reply);
    if (!offset) {
      checks.add("network", "clock", CheckStatus::Warn, "the market's reply has no Date header to compare with", "");
      return;
    }
    const double off = std::fabs(*offset);
    const CheckStatus status = off > kFailClockOffsetSeconds ? CheckStatus::Fail
                               : off > kWarnClockOffsetSeconds ? CheckStatus::Warn
                                                               : CheckStatus::Ok;
    checks.add("network", "clock", status, fmt::format("{:+.0f} s against the market's clock", *offset),
               status == CheckStatus::Ok ? "" : "run an NTP client (systemd-timesyncd or chrony)");
  });
  if (reachable) {
    checks.run("network", "version", "the market advertises a malformed minimum agent version: tell its operator", [&] {
      const std::optional<Version> minimum =
          net::parse_min_agent_version(parse_json_document(health, "market health reply"), "market health reply");
      const Version mine = Version::parse(solver_version(), "solver_version");
      const std::string accepts = minimum ? minimum->text() + " or newer" : "any version";
      if (minimum && mine < *minimum)
        checks.add("network", "version", CheckStatus::Fail,
                   fmt::format("this agent is {}; the market accepts {}: it claims nothing", mine.text(), accepts),
                   fmt::format("upgrade solver to {} or newer", minimum->text()));
      else
        checks.add("network", "version", CheckStatus::Ok, fmt::format("this agent is {}; the market accepts {}", mine.text(), accepts));
    });
  }
  if (reachable && key) {
    checks.run("network", "registration", "read the market's reason above; it may hold back this key", [&] {
      net::MarketClient market(net::MarketClientOptions{config.market_url}, *key);
      std::string bench_note;
      market.register_worker(detail::worker_profile(config, quarantined, bench_note));
      checks.add("network", "registration", CheckStatus::Ok, "accepted as " + config.name + ", " + bench_note);
    });
  }
  checks.run("network", "store", "check config.storage and that the store is up and writable with these credentials", [&] {
    const std::filesystem::path scratch = config.work_dir / ".doctor";
    std::filesystem::create_directories(scratch);
    struct Cleanup {
      std::filesystem::path dir;
      ~Cleanup() {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
      }
    } cleanup{scratch};
    checks.add("network", "store", CheckStatus::Ok, config.storage.kind + ": " + make_store(config.storage)->probe(scratch));
  });
}

}  // namespace

std::vector<Check> gpu_health_checks(const std::string& device, const hardware::GpuInfo& gpu) {
  std::vector<Check> rows;
  std::vector<std::string> concerns;
  if (gpu.temperature_c && *gpu.temperature_c >= kHotGpuCelsius) concerns.push_back(fmt::format("{} °C", *gpu.temperature_c));
  if (gpu.throttle_reasons && (*gpu.throttle_reasons & kThermalOrPowerThrottle) != 0)
    concerns.push_back(fmt::format("clocks throttled for heat or power (reasons 0x{:x})", *gpu.throttle_reasons));
  std::string detail = fmt::format("{} {}: {:.1f} of {:.1f} GB free", gpu.name, gpu.uuid, gpu.memory_free_bytes.value_or(0) / 1e9,
                                   gpu.memory_total_bytes.value_or(0) / 1e9);
  if (gpu.temperature_c) detail += fmt::format(", {} °C", *gpu.temperature_c);
  if (gpu.power_draw_watts) detail += fmt::format(", drawing {:.0f} W", *gpu.power_draw_watts);
  if (!concerns.empty()) detail += fmt::format("; {}", fmt::join(concerns, "; "));
  rows.push_back({"gpu", "health " + device, concerns.empty() ? CheckStatus::Ok : CheckStatus::Warn, detail,
                  concerns.empty() ? "" : "improve the rig's cooling or power before it trains for days"});

  const std::string ecc = "ecc " + device;
  if (gpu.ecc_uncorrected_errors.value_or(0) > 0)
    rows.push_back({"gpu", ecc, CheckStatus::Fail,
                    fmt::format("{} uncorrected ECC error(s) in {}'s memory since the driver loaded", *gpu.ecc_uncorrected_errors,
                                gpu.uuid),
                    "reset the GPU or reboot; if it recurs the memory is failing — take this GPU out of devices"});
  else if (!gpu.ecc_enabled)
    rows.push_back({"gpu", ecc, CheckStatus::Ok, "not supported (NVML reports no ECC mode for this GPU)", ""});
  else if (!*gpu.ecc_enabled)
    rows.push_back({"gpu", ecc, CheckStatus::Warn, "ECC off: a flipped memory bit would go unnoticed and corrupt training",
                    fmt::format("turn ECC on: sudo nvidia-smi -i {} -e 1, then reboot", gpu.index)});
  else
    rows.push_back({"gpu", ecc, CheckStatus::Ok,
                    gpu.ecc_uncorrected_errors ? "on, no uncorrected errors since the driver loaded"
                                               : "on (NVML did not report its error count)",
                    ""});
  // The same faults that make the agent's GPU steward quarantine the device.
  const std::string memory = "memory " + device;
  if (const auto [reason, fault] = detail::memory_fault(device, gpu); !fault.empty())
    rows.push_back({"gpu", memory, CheckStatus::Fail, fault,
                    reason == "row_remap_failed" ? "the GPU needs repair or replacing: take it out of devices"
                                                 : fmt::format("reset the GPU (sudo nvidia-smi -r -i {}, with nothing running on it) or reboot",
                                                               gpu.index)});
  else if (gpu.memory_repair_pending)
    rows.push_back({"gpu", memory, CheckStatus::Ok, "no failing memory waiting for a GPU reset", ""});
  return rows;
}

std::string_view check_status_name(CheckStatus status) {
  switch (status) {
    case CheckStatus::Ok: return "OK";
    case CheckStatus::Warn: return "WARN";
    case CheckStatus::Fail: return "FAIL";
  }
  return "?";
}

bool DoctorReport::passed() const {
  return std::none_of(checks.begin(), checks.end(), [](const Check& check) { return check.status == CheckStatus::Fail; });
}

nlohmann::json DoctorReport::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const Check& check : checks)
    rows.push_back({{"area", check.area},
                    {"check", check.name},
                    {"status", check_status_name(check.status)},
                    {"detail", check.detail},
                    {"fix", check.fix}});
  return {{"passed", passed()}, {"checks", rows}};
}

DoctorReport check_rig(const AgentConfig& configured, bool measure_disk) {
  const AgentConfig config = with_visible_devices(configured, train::torch_cuda_device_count());
  Checks checks;
  check_gpus(config, checks);
  check_disks(config, measure_disk, checks);
  return checks.report;
}

DoctorReport run_doctor(const AgentConfig& configured, const std::filesystem::path& key_file) {
  const AgentConfig config = with_visible_devices(configured, train::torch_cuda_device_count());
  Checks checks;
  checks.report = check_rig(config, true);
  check_identity_and_network(config, key_file, checks);
  return checks.report;
}

std::vector<Check> check_rig_can_work(const AgentConfig& config) {
  std::vector<std::string> failures;
  std::vector<Check> device_failures;
  bool gpu = false;
  for (Check& check : check_rig(config, false).checks) {
    if (check.status != CheckStatus::Fail) continue;
    if (!check.device.empty()) {
      if (!check.quarantine_reason.empty()) device_failures.push_back(std::move(check));
      continue;
    }
    failures.push_back(check.detail + (check.fix.empty() ? "" : " (" + check.fix + ")"));
    gpu = gpu || check.area == "gpu";
  }
  if (!failures.empty())
    throw Error(gpu ? ErrorKind::Cuda : ErrorKind::Config,
                fmt::format("this rig cannot work: {}", fmt::join(failures, "; ")));
  return device_failures;
}

}  // namespace solver::agent
