// The step watchdog (train/detail/step_watchdog.h). Invariant: the handler runs without the lock
// held, so a handler that takes long (or never returns: it may end the process) cannot block a
// step from starting or finishing its watch.
#include "train/detail/step_watchdog.h"

#include <fmt/format.h>

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
  {
    const std::lock_guard lock(watchdog_.mutex_);
    if (watchdog_.generation_ == generation_) watchdog_.watching_ = false;
  }
  watchdog_.changed_.notify_all();
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
  const Clock::time_point started = Clock::now();
  std::uint64_t generation = 0;
  {
    const std::lock_guard lock(mutex_);
    generation = ++generation_;
    watching_ = true;
    deadline_ = started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limit_seconds));
    overrun_message_ = fmt::format("{} ran past its time limit of {} s and is still running", what, limit_seconds);
  }
  changed_.notify_all();
  return Watch(*this, generation, started, limit_seconds, std::move(what));
}

void StepWatchdog::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (!watching_) {
      changed_.wait(lock);
      continue;
    }
    const std::uint64_t generation = generation_;
    if (changed_.wait_until(lock, deadline_, [&] { return stopping_ || !watching_ || generation_ != generation; }))
      continue;
    watching_ = false;  // reported once
    const Error overrun(ErrorKind::Budget, overrun_message_);
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
