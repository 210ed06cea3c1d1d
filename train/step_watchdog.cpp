// The step watchdog (train/detail/step_watchdog.h). Invariant: the handler runs without the lock
// held, so a handler that takes long (or never returns: it may end the process) cannot block a
// step from starting or finishing its watch.
#include "train/detail/step_watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace solver::train::detail {

StepWatchdog::Watch::Watch(StepWatchdog& watchdog, std::uint64_t generation, Clock::time_point started,
                           double limit_seconds, std::string what)
    : watchdog_(watchdog), generation_(generation), started_(started), limit_seconds_(limit_seconds), what_(std::move(what)) {}

StepWatchdog::Watch::~Watch() { stop(); }

void StepWatchdog::Watch::stop() {
  if (stopped_) return;
  stopped_ = Clock::now();
  // No wake-up: the watchdog finds the watch over when its deadline comes.
  const std::lock_guard lock(watchdog_.mutex_);
  if (watchdog_.generation_ == generation_) watchdog_.watching_ = false;
}

void StepWatchdog::Watch::finish() {
  stop();
  const double seconds = std::chrono::duration<double>(*stopped_ - started_).count();
  if (seconds > limit_seconds_)
    throw Error(ErrorKind::Budget,
                fmt::format("{} ran past its time limit of {} s: it took {:.2f} s", what_, limit_seconds_, seconds));
}

StepWatchdog::StepWatchdog(double limit_seconds, std::function<void(const Error&)> on_overrun)
    : limit_seconds_(limit_seconds), on_overrun_(std::move(on_overrun)), thread_([this] { run(); }) {}

StepWatchdog::~StepWatchdog() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

StepWatchdog::Watch StepWatchdog::watch(std::string what) { return watch(std::move(what), limit_seconds_); }

StepWatchdog::Watch StepWatchdog::watch(std::string what, double limit_seconds) {
  // At most about 30 years: a step limit times a large evaluation batch must not overflow the clock.
  limit_seconds = std::min(limit_seconds, 1e9);
  // The report waits a grace past the limit: a step that ended just in time, but whose stop()
  // was descheduled for a moment, must not be reported stuck (a step that did end late is
  // caught by finish() anyway).
  const double grace_seconds = std::min(1.0, limit_seconds);
  const Clock::time_point started = Clock::now();
  std::uint64_t generation = 0;
  bool wake = false;
  {
    const std::lock_guard lock(mutex_);
    generation = ++generation_;
    watching_ = true;
    deadline_ = started + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(limit_seconds + grace_seconds));
    watched_ = what;
    watched_limit_ = limit_seconds;
    wake = deadline_ < sleeping_until_;
  }
  if (wake) changed_.notify_all();
  return Watch(*this, generation, started, limit_seconds, std::move(what));
}

void StepWatchdog::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // Sleep until the current watch's deadline, or, between watches, until woken; a watch that
    // started meanwhile with a later deadline is found on waking.
    sleeping_until_ = watching_ ? deadline_ : Clock::time_point::max();
    if (watching_) {
      changed_.wait_until(lock, sleeping_until_);
    } else {
      changed_.wait(lock);
    }
    sleeping_until_ = Clock::time_point::min();  // awake: a new watch needs no wake-up
    if (stopping_ || !watching_ || Clock::now() < deadline_) continue;
    watching_ = false;  // reported once
    const Error overrun(ErrorKind::Budget,
                        fmt::format("{} ran past its time limit of {} s and is still running", watched_, watched_limit_));
    lock.unlock();
    if (on_overrun_) {
      on_overrun_(overrun);
    } else {
      log_error("train", "{}", overrun.what());
    }
    lock.lock();
  }
}

}  // namespace solver::train::detail
