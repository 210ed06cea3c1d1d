// AsyncWriter: FIFO order, failures that cannot be missed, a queue bound that blocks the
// submitter (observed with a job held on a latch), and a destructor that finishes the queue.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "checkpoint/async_writer.h"
#include "common/error.h"

using solver::checkpoint::AsyncWriter;
using namespace std::chrono_literals;

namespace {

// A gate a job can wait on, opened by the test thread.
class Gate {
 public:
  void open() { opened_.set_value(); }
  void pass() const { gate_.wait(); }

 private:
  std::promise<void> opened_;
  std::shared_future<void> gate_ = opened_.get_future().share();
};

}  // namespace

TEST_CASE("Jobs run one at a time in submission order", "[checkpoint]") {
  std::mutex mutex;
  std::vector<int> order;
  std::atomic<int> running{0};
  std::atomic<int> most_running{0};
  AsyncWriter writer(3);
  for (int i = 0; i < 20; ++i) {
    writer.submit([&, i] {
      most_running = std::max(most_running.load(), ++running);
      std::this_thread::sleep_for(100us);
      {
        std::lock_guard lock(mutex);
        order.push_back(i);
      }
      --running;
    });
  }
  writer.wait();
  std::vector<int> expected(20);
  for (int i = 0; i < 20; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(order == expected);
  CHECK(most_running == 1);
}

TEST_CASE("A failed job's error is rethrown by wait() and by every later submit()", "[checkpoint]") {
  AsyncWriter writer(3);
  Gate gate;
  std::atomic<int> ran{0};
  // The gate holds the worker until all three jobs are queued, so none is refused early.
  writer.submit([&] {
    gate.pass();
    ++ran;
  });
  writer.submit([] { throw solver::Error(solver::ErrorKind::Io, "cannot fsync ckpt-000200.safetensors"); });
  writer.submit([&] { ++ran; });
  gate.open();
  CHECK_THROWS_WITH(writer.wait(), "cannot fsync ckpt-000200.safetensors");
  CHECK(ran == 2);  // jobs already queued still ran
  CHECK_THROWS_WITH(writer.submit([&] { ++ran; }), "cannot fsync ckpt-000200.safetensors");
  CHECK_THROWS_AS(writer.wait(), solver::Error);
  CHECK(ran == 2);  // the refused job never ran
}

TEST_CASE("Only the first failure is reported", "[checkpoint]") {
  AsyncWriter writer;
  Gate gate;
  writer.submit([&] {
    gate.pass();  // lets the second job be queued before the first fails
    throw std::runtime_error("first");
  });
  writer.submit([] { throw std::runtime_error("second"); });
  gate.open();
  CHECK_THROWS_WITH(writer.wait(), "first");
}

TEST_CASE("submit() blocks while the queue is full and resumes when a job starts", "[checkpoint]") {
  Gate gate;
  std::atomic<bool> first_started{false};
  AsyncWriter writer(1);
  writer.submit([&] {
    first_started = true;
    gate.pass();
  });
  while (!first_started) std::this_thread::sleep_for(1ms);
  writer.submit([] {});  // fills the one queue slot while the first job holds the worker

  std::atomic<bool> third_queued{false};
  std::thread submitter([&] {
    writer.submit([] {});
    third_queued = true;
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(third_queued);  // still blocked: one job waits and max_pending is 1
  gate.open();
  submitter.join();
  CHECK(third_queued);
  writer.wait();
}

TEST_CASE("The destructor runs every queued job before returning", "[checkpoint]") {
  std::atomic<int> ran{0};
  {
    AsyncWriter writer(8);
    for (int i = 0; i < 8; ++i)
      writer.submit([&] {
        std::this_thread::sleep_for(2ms);
        ++ran;
      });
  }
  CHECK(ran == 8);
}

TEST_CASE("A writer with no queue slots is a configuration error", "[checkpoint]") {
  CHECK_THROWS_WITH(AsyncWriter(0), Catch::Contains("max_pending must be at least 1"));
}
