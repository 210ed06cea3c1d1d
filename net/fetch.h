// Task inputs (datasets, TorchScript models) fetched by URL into a cache keyed by content:
// a file is stored under its sha256, downloaded to a temporary name, checked against the hash
// the task states, and only then renamed into place, so the cache never holds a wrong byte.
// The cache has a size cap; the least recently used files not needed by the current task go first.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "common/task.h"
#include "net/retry.h"
#include "net/url_policy.h"

namespace solver::net {

// Downloads `url` to `dest` (overwriting it), cut off with Error(Input) where it passes
// `max_bytes`. Throws Error(Network) when it cannot.
using Downloader = std::function<void(const std::string& url, const std::filesystem::path& dest, std::uint64_t max_bytes)>;

struct FetchOptions {
  std::filesystem::path cache_dir;
  std::uint64_t max_cache_bytes = 50ull << 30;
  // Where a task's locations may point: local files, plain http and private addresses only
  // where the config allows (net/url_policy.h).
  UrlPolicy policy;
  RetryPolicy retry;
  // Files used this recently are never evicted: another task slot may be about to load them.
  std::chrono::seconds eviction_grace{600};
  Downloader ipfs;  // ipfs:// URLs; unset: refused with a message saying to configure IPFS
  Downloader s3;    // s3:// URLs; unset: refused likewise
};

// Thread-safe: concurrent fetches are serialised.
class FileCache {
 public:
  explicit FileCache(FetchOptions options);

  // A local file whose content has the size and sha256 that `file` states. A download stops at
  // the declared size and leaves nothing behind when it fails. Throws Error(Input) for a refused
  // location, a file larger than declared or a hash mismatch (the task's fault), Error(Capacity)
  // for a file larger than the whole cache, Error(Network) when the download fails for good.
  std::filesystem::path fetch(const FileRef& file, std::string_view what);
  // Fetches every file the task names and sets their local_copy; evicts after, never a file
  // this task uses.
  void resolve(Task& task);
  // Replaces the download policy (a reloaded config) for fetches from now on.
  void set_policy(UrlPolicy policy);

 private:
  std::filesystem::path fetch_locked(const FileRef& file, std::string_view what);
  std::filesystem::path download(const FileRef& file, std::string_view what);
  void evict(const std::set<std::string>& keep);

  FetchOptions options_;
  std::mutex mutex_;  // one fetch at a time: task slots share the cache
};

}  // namespace solver::net
