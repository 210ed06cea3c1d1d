// The agent's side of systemd's notify protocol (sd_notify(3)), for a unit with Type=notify and
// WatchdogSec=: READY=1 once the agent has registered and its slots run; STATUS= with the
// status board's summary whenever it changes (at most once a second); WATCHDOG=1 every half of
// WATCHDOG_USEC, but only while every slot shows signs of life (StatusBoard::silent_slot), so
// systemd restarts an agent whose work loop hung; STOPPING=1 as soon as the agent is told to stop.
// Without NOTIFY_SOCKET (not run by systemd) every call does nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "agent/detail/status_board.h"

namespace solver::agent::detail {

class ServiceManager {
 public:
  ServiceManager(const StatusBoard& board, const std::atomic<bool>& stop);
  ~ServiceManager();  // STOPPING=1 if not sent yet
  ServiceManager(const ServiceManager&) = delete;
  ServiceManager& operator=(const ServiceManager&) = delete;

  // Before READY=1: what the agent waits for (e.g. "registering with <market>").
  void set_status(const std::string& status);
  // READY=1, then the status and watchdog thread runs until the destructor.
  void ready();

 private:
  void notify(const std::string& state);
  void watch();

  const StatusBoard& board_;
  const std::atomic<bool>& stop_;
  bool enabled_ = false;                        // NOTIFY_SOCKET is set
  std::chrono::microseconds watchdog_{0};       // 0: no watchdog asked for
  std::mutex mutex_;
  std::condition_variable wake_;
  bool ending_ = false;                         // guarded by mutex_
  bool stopping_sent_ = false;                  // only the thread (or the destructor once it is joined) touches it
  std::thread thread_;
};

}  // namespace solver::agent::detail
