// A time limit on each step (and on each other single pass of the model: its trial forward pass,
// a traced step, an evaluation batch). LibTorch cannot interrupt a call in flight, so the limit is
// kept two ways: a watchdog thread reports a step still running past its limit (its handler can
// end the process), and a step that ends past its limit throws Error(Budget).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"

namespace solver::train::detail {

class StepWatchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // Times one activity from watch() until finish() or destruction.
  class [[nodiscard]] Watch {
   public:
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    // Stops timing; the first call counts (what follows, say checkpoint hooks, is not the
    // activity's time).
    void stop();
    // Stops timing if still running, then throws Error(Budget) when the activity took longer
    // than the limit: "step 12 ran past its time limit of 60 s: it took 61.20 s".
    void finish();

   private:
    friend class StepWatchdog;
    Watch(StepWatchdog& watchdog, std::uint64_t generation, Clock::time_point started, double limit_seconds,
          std::string what);

    StepWatchdog& watchdog_;
    std::uint64_t generation_;
    Clock::time_point started_;
    double limit_seconds_;
    std::string what_;
    std::optional<Clock::time_point> stopped_;
  };

  // `limit_seconds` > 0. `on_overrun` runs on the watchdog's thread, once per watched activity
  // still running past the limit, with Error(Budget): "step 12 ran past its time limit of 60 s
  // and is still running". Empty: the overrun is logged. Starts the thread.
  StepWatchdog(double limit_seconds, std::function<void(const Error&)> on_overrun);
  // Stops the thread; waits for a handler in progress.
  ~StepWatchdog();
  StepWatchdog(const StepWatchdog&) = delete;
  StepWatchdog& operator=(const StepWatchdog&) = delete;

  double limit_seconds() const { return limit_seconds_; }

  // Starts timing `what` ("step 12") against limit_seconds(), or against `limit_seconds` for an
  // activity bigger than a step; one activity at a time, from one thread.
  Watch watch(std::string what);
  Watch watch(std::string what, double limit_seconds);

 private:
  void run();

  const double limit_seconds_;
  const std::function<void(const Error&)> on_overrun_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t generation_ = 0;  // of the current watch; a new watch or a stop moves it on
  bool watching_ = false;
  Clock::time_point deadline_;  // of the current watch: its start, its limit and a grace
  std::string watched_;         // of the current watch: "step 12"
  double watched_limit_ = 0.0;  // of the current watch
  // When the watchdog thread wakes next (max: not until notified). A watch notifies it only when
  // its deadline comes sooner, so a step costs no wake-up of the thread.
  Clock::time_point sleeping_until_ = Clock::time_point::max();
  bool stopping_ = false;
  std::thread thread_;  // last: it starts once the members above exist
};

}  // namespace solver::train::detail
