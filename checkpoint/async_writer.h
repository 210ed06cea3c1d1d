// A background worker that runs checkpoint jobs (encode, write, fsync, hash) off the
// training thread, in submission order. The queue is bounded: submit() blocks while
// `max_pending` jobs wait, so a slow disk slows training instead of filling memory.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace solver::checkpoint {

class AsyncWriter {
 public:
  explicit AsyncWriter(std::size_t max_pending = 2);
  ~AsyncWriter();  // waits for queued jobs; swallows their errors (call wait() to see them)
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;

  // Queues a job. Blocks while the queue is full. If an earlier job failed, rethrows its
  // error here instead of queueing (the run must stop: a checkpoint is missing).
  void submit(std::function<void()> job);
  // Blocks until every queued job has run; rethrows the first job error, if any.
  void wait();

 private:
  void run();
  void rethrow_failure();  // needs mutex_ held

  std::size_t max_pending_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::thread worker_;
};

}  // namespace solver::checkpoint
