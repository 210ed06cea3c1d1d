// AsyncWriter: one worker thread draining a bounded FIFO of jobs. Invariant: jobs run one at
// a time in submission order, and the first failure is kept until the writer dies, so no
// later submit() or wait() can miss it (a missing checkpoint must stop the run).
#include "checkpoint/async_writer.h"

#include <string>

#include "common/error.h"

namespace solver::checkpoint {

AsyncWriter::AsyncWriter(std::size_t max_pending) : max_pending_(max_pending) {
  if (max_pending_ == 0)
    throw Error(ErrorKind::Config, "checkpoint writer: max_pending must be at least 1, got 0 (0 would block every submit)");
  worker_ = std::thread([this] { run(); });
}

AsyncWriter::~AsyncWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void AsyncWriter::submit(std::function<void()> job) {
  std::unique_lock lock(mutex_);
  rethrow_failure();
  changed_.wait(lock, [this] { return queue_.size() < max_pending_ || failure_; });
  rethrow_failure();
  queue_.push_back(std::move(job));
  changed_.notify_all();
}

void AsyncWriter::wait() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && !busy_; });
  rethrow_failure();
}

void AsyncWriter::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) return;  // stopping, and every queued job has run
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    changed_.notify_all();  // a slot is free for a blocked submit()
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error && !failure_) failure_ = error;
    busy_ = false;
    changed_.notify_all();
  }
}

void AsyncWriter::rethrow_failure() {
  if (failure_) std::rethrow_exception(failure_);
}

}  // namespace solver::checkpoint
