// A bounded fan-out for S3's uploads and downloads: parts of one file, or many small files.
#pragma once

#include <cstddef>
#include <functional>

namespace solver::net::detail {

// Runs work(0..count-1) on up to `threads` threads (the caller's among them). After the first
// failure no new item starts; the error rethrown is a non-retryable one when any item had one
// (it decides what the caller does next), else the first.
void for_each_in_parallel(std::size_t count, int threads, const std::function<void(std::size_t)>& work);

}  // namespace solver::net::detail
