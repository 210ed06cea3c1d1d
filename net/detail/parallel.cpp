#include "net/detail/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"

namespace solver::net::detail {

void for_each_in_parallel(std::size_t count, int threads, const std::function<void(std::size_t)>& work) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::exception_ptr first_error;
  bool first_is_final = false;
  const auto worker = [&] {
    for (std::size_t item; !failed && (item = next++) < count;) {
      try {
        work(item);
      } catch (...) {
        bool final = true;
        try {
          throw;
        } catch (const Error& error) {
          final = !error.retryable();
        } catch (...) {
        }
        const std::lock_guard lock(mutex);
        if (!first_error || (final && !first_is_final)) {
          first_error = std::current_exception();
          first_is_final = final;
        }
        failed = true;
      }
    }
  };
  const std::size_t thread_count = std::min<std::size_t>(static_cast<std::size_t>(std::max(threads, 1)), count);
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < thread_count; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& thread : pool) thread.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace solver::net::detail
