#include "agent/detail/service_manager.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>
#include <optional>

#include "common/log.h"

namespace solver::agent::detail {
namespace {

// STATUS= is re-sent no more often than this, and stop requests are noticed within it.
constexpr std::chrono::milliseconds kTick{1000};

}  // namespace

ServiceManager::ServiceManager(const StatusBoard& board, const std::atomic<bool>& stop) : board_(board), stop_(stop) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  if (!enabled_) return;
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
  log_info("agent", "systemd notify socket found{}",
           watchdog_.count() > 0 ? fmt::format("; watchdog every {:.1f} s", watchdog_.count() / 1e6) : "");
}

ServiceManager::~ServiceManager() {
  if (thread_.joinable()) {
    {
      const std::lock_guard lock(mutex_);
      ending_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  if (enabled_ && !stopping_sent_) notify("STOPPING=1");
}

void ServiceManager::set_status(const std::string& status) {
  if (enabled_) notify("STATUS=" + escape_log_text(status));
}

void ServiceManager::ready() {
  if (!enabled_) return;
  notify("READY=1\nSTATUS=" + board_.summary());
  thread_ = std::thread([this] { watch(); });
}

void ServiceManager::notify(const std::string& state) {
  if (const int result = sd_notify(0, state.c_str()); result < 0)
    log_warn("agent", "cannot tell systemd {}: error {}", state.substr(0, state.find('=')), -result);
}

void ServiceManager::watch() {
  using Clock = std::chrono::steady_clock;
  const auto ping_every = std::chrono::duration_cast<Clock::duration>(watchdog_ / 2);
  auto next_ping = Clock::now();
  std::string last_status;
  std::optional<std::string> last_silent;
  std::unique_lock lock(mutex_);
  while (!ending_) {
    lock.unlock();
    if (stop_ && !stopping_sent_) {
      notify("STOPPING=1");
      stopping_sent_ = true;
    }
    if (std::string status = board_.summary(); status != last_status) {
      notify("STATUS=" + status);
      last_status = std::move(status);
    }
    if (watchdog_.count() > 0 && Clock::now() >= next_ping) {
      const std::optional<std::string> silent = board_.silent_slot();
      if (!silent) notify("WATCHDOG=1");
      // Logged once a hang begins, so the journal says why systemd is about to restart the agent.
      else if (silent != last_silent)
        log_error("agent", "{}: no longer telling systemd's watchdog the agent is alive", *silent);
      last_silent = silent;
      next_ping = Clock::now() + ping_every;
    }
    const auto wait = watchdog_.count() > 0 ? std::min<Clock::duration>(kTick, ping_every) : Clock::duration(kTick);
    lock.lock();
    wake_.wait_for(lock, wait, [this] { return ending_; });
  }
}

}  // namespace solver::agent::detail
