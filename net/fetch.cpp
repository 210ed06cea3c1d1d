// The content-addressed cache behind net/fetch.h. Layout: <cache>/<sha256> for complete files,
// <cache>/<sha256>.partial while downloading. A file's modification time is its last use.
#include "net/fetch.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/http.h"

namespace solver::net {
namespace {

constexpr std::string_view kFileScheme = "file://";

std::string scheme_of(const std::string& location) {
  const auto end = location.find("://");
  return end == std::string::npos ? "" : location.substr(0, end);
}

void download_https(const UrlPolicy& policy, const std::string& url, const std::filesystem::path& dest,
                    std::uint64_t max_bytes) {
  HttpRequest request{.url = url, .response_file = dest, .policy = &policy, .max_response_bytes = max_bytes};
  request.timeout = std::chrono::milliseconds(0);  // large files: the stall timeout bounds a hung server instead
  throw_unless_success(perform(request), "GET " + url);
}

}  // namespace

FileCache::FileCache(FetchOptions options) : options_(std::move(options)) {
  std::error_code error;
  std::filesystem::create_directories(options_.cache_dir, error);
  if (error) throw Error(ErrorKind::Io, "cannot create cache folder " + options_.cache_dir.string() + ": " + error.message());
}

std::filesystem::path FileCache::fetch(const FileRef& file, std::string_view what) {
  const std::lock_guard lock(mutex_);
  return fetch_locked(file, what);
}

std::filesystem::path FileCache::fetch_locked(const FileRef& file, std::string_view what) {
  check_location(options_.policy, file.location, what);
  const std::string scheme = scheme_of(file.location);
  if (scheme.empty() || scheme == "file") {
    FileRef local = file;
    if (scheme == "file") local.location = file.location.substr(kFileScheme.size());
    return checked_local_file(local, what);
  }
  const std::filesystem::path cached = options_.cache_dir / file.sha256;
  if (std::filesystem::is_regular_file(cached)) {
    std::filesystem::last_write_time(cached, std::filesystem::file_time_type::clock::now());
    return cached;
  }
  return download(file, what);
}

std::filesystem::path FileCache::download(const FileRef& file, std::string_view what) {
  const std::string scheme = scheme_of(file.location);
  Downloader downloader;
  if (scheme == "https" || scheme == "http") {
    downloader = [this](const std::string& url, const std::filesystem::path& dest, std::uint64_t max_bytes) {
      download_https(options_.policy, url, dest, max_bytes);
    };
  } else if (scheme == "ipfs") {
    downloader = options_.ipfs;
  } else {
    downloader = options_.s3;  // check_location let no other scheme through
  }
  if (!downloader)
    throw Error(ErrorKind::Config, std::string(what) + ": " + file.location + " needs an " + scheme +
                                       " store in the agent config (\"storage\") to be fetched");

  if (!file.size)
    throw Error(ErrorKind::Input, std::string(what) + ": " + file.location + " declares no size; a remote file must");
  if (*file.size > options_.max_cache_bytes)
    throw Error(ErrorKind::Capacity, fmt::format("{}: {} is {:.1f} GB, more than this rig's whole input cache ({:.1f} GB, "
                                                 "limits.cache_gb)",
                                                 what, file.location, *file.size / 1e9, options_.max_cache_bytes / 1e9));
  const std::filesystem::path partial = options_.cache_dir / (file.sha256 + ".partial");
  const auto started = std::chrono::steady_clock::now();
  try {
    with_retries(options_.retry, "fetching " + file.location, [&] { downloader(file.location, partial, *file.size); });
    const std::uint64_t size = std::filesystem::file_size(partial);
    if (size != *file.size)
      throw Error(ErrorKind::Input, fmt::format("{}: {} served {} bytes, the task says {}", what, file.location, size, *file.size));
    const std::string actual = sha256_file_hex(partial);
    if (actual != file.sha256)
      throw Error(ErrorKind::Input, std::string(what) + ": " + file.location + " has sha256 " + actual +
                                        ", the task says " + file.sha256);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw;
  }
  const std::filesystem::path cached = options_.cache_dir / file.sha256;
  std::filesystem::rename(partial, cached);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  log_info("fetch", "fetched {} ({:.1f} MB in {:.1f} s)", file.location, std::filesystem::file_size(cached) / 1e6, seconds);
  return cached;
}

void FileCache::set_policy(UrlPolicy policy) {
  const std::lock_guard lock(mutex_);
  options_.policy = std::move(policy);
}

void FileCache::resolve(Task& task) {
  const std::lock_guard lock(mutex_);
  std::set<std::string> keep;
  for (auto& [file, what] : task_files(task)) {
    file->local_copy = fetch_locked(*file, what);
    keep.insert(file->sha256);
  }
  evict(keep);
}

void FileCache::evict(const std::set<std::string>& keep) {
  struct Entry {
    std::filesystem::path path;
    std::uint64_t size;
    std::filesystem::file_time_type used;
  };
  std::vector<Entry> entries;
  std::uint64_t total = 0;
  for (const auto& item : std::filesystem::directory_iterator(options_.cache_dir)) {
    if (!item.is_regular_file()) continue;
    entries.push_back({item.path(), item.file_size(), item.last_write_time()});
    total += entries.back().size;
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.used < b.used; });
  const auto recent = std::filesystem::file_time_type::clock::now() - options_.eviction_grace;
  for (const Entry& entry : entries) {
    if (total <= options_.max_cache_bytes) break;
    if (keep.contains(entry.path.filename().string()) || entry.used > recent) continue;
    std::filesystem::remove(entry.path);
    total -= entry.size;
    log_info("fetch", "cache over {:.1f} GB: removed {} ({:.1f} MB, least recently used)", options_.max_cache_bytes / 1e9,
             entry.path.filename().string(), entry.size / 1e6);
  }
}

}  // namespace solver::net
