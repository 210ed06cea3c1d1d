// The S3 bundle store: publish uploads what the bucket lacks, the manifest last; fetch
// downloads every object of a bundle.
#include "net/s3_store.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <tuple>
#include <utility>

#include "common/bundle_files.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/market_protocol.h"
#include "net/detail/parallel.h"

namespace solver::net {
namespace {

using detail::for_each_in_parallel;

// A file to upload: where it is, its size and the hash it goes up with (x-amz-meta-sha256).
struct LocalFile {
  std::string relative;
  std::filesystem::path path;
  std::uint64_t size = 0;
  std::string sha256;
};

// Every visible file of the bundle (list_finished_bundle refuses symlinks and special files:
// uploaded, they would carry whatever they point at on this machine to the bucket), with the
// listing's size and hash for the files it names. Only the others are hashed here: the
// signature and any file the manifest does not list. A listed file that is missing or of
// another size means a damaged bundle, which must not be published.
std::vector<LocalFile> local_files(const BundleListing& bundle) {
  std::map<std::string, const FileEntry*> listed;
  for (const FileEntry& file : bundle.files) listed[file.path] = &file;
  listed[std::string(kManifestFile)] = &bundle.manifest;
  std::vector<LocalFile> files;
  for (const BundleFile& file : list_finished_bundle(bundle.dir)) {
    const auto entry = listed.find(file.relative);
    if (entry == listed.end()) {
      files.push_back({file.relative, file.path, file.size, sha256_file_hex(file.path)});
      continue;
    }
    if (entry->second->size != file.size)
      throw Error(ErrorKind::Input, bundle.dir.string() + ": " + file.relative + " has " + std::to_string(file.size) +
                                        " bytes, the manifest says " + std::to_string(entry->second->size));
    files.push_back({file.relative, file.path, file.size, entry->second->sha256});
    listed.erase(entry);
  }
  if (!listed.empty())
    throw Error(ErrorKind::Input, bundle.dir.string() + ": " + listed.begin()->first + ", listed in the manifest, is missing");
  return files;
}

}  // namespace

S3Store::S3Store(S3Config config) : client_(std::move(config)) {}

std::string S3Store::publish(const BundleListing& bundle, const std::string& bundle_name) {
  const std::vector<LocalFile> files = local_files(bundle);
  require_plain_bundle_name(bundle_name);
  const std::string& prefix = client_.config().prefix;
  const std::string bundle_key = prefix.empty() ? bundle_name : prefix + "/" + bundle_name;
  const std::string address = format_s3_address({client_.config().bucket, bundle_key});

  std::map<std::string, const LocalFile*> by_path;
  for (const LocalFile& file : files) by_path[file.relative] = &file;

  std::map<std::string, S3Object> existing;
  for (S3Object& object : client_.list_objects(bundle_key + "/")) existing[object.key] = std::move(object);
  const auto key_of = [&](const LocalFile& file) { return bundle_key + "/" + file.relative; };
  const auto already_there = [&](const LocalFile& file) {
    const auto found = existing.find(key_of(file));
    if (found == existing.end() || found->second.size != file.size) return false;
    const std::optional<S3Object> head = client_.head_object(key_of(file));
    return head && head->size == file.size && head->sha256 == file.sha256;
  };
  if (const auto manifest = by_path.find(std::string(kManifestFile)); existing.contains(key_of(*manifest->second))) {
    const std::optional<S3Object> head = client_.head_object(key_of(*manifest->second));
    if (head && head->sha256 != manifest->second->sha256)
      throw Error(ErrorKind::Input, address + " already holds a different bundle (its manifest.json hashes to " +
                                        (head->sha256.empty() ? "an unrecorded value" : head->sha256) + ")");
  }

  // Small files in parallel, large ones one at a time with their parts in parallel, the
  // signature and then the manifest last.
  std::vector<const LocalFile*> small;
  std::vector<const LocalFile*> large;
  std::vector<const LocalFile*> last;
  for (const LocalFile& file : files) {
    if (file.relative == kManifestFile || file.relative == kSignatureFile) continue;
    (file.size <= s3_part_size(file.size, client_.config()) ? small : large).push_back(&file);
  }
  last = {by_path.at(std::string(kSignatureFile)), by_path.at(std::string(kManifestFile))};
  std::atomic<std::size_t> uploaded{0};
  std::atomic<std::uint64_t> uploaded_bytes{0};
  const auto upload = [&](const LocalFile& file) {
    if (already_there(file)) return;
    client_.upload_file(key_of(file), file.path, file.sha256, bundle.dir);
    ++uploaded;
    uploaded_bytes += file.size;
  };
  for_each_in_parallel(small.size(), client_.config().parallelism, [&](std::size_t i) { upload(*small[i]); });
  for (const LocalFile* file : large) upload(*file);
  for (const LocalFile* file : last) upload(*file);

  // Reported published only once S3 lists every file at its size.
  std::map<std::string, std::uint64_t> listed;
  for (const S3Object& object : client_.list_objects(bundle_key + "/")) listed[object.key] = object.size;
  for (const LocalFile& file : files) {
    const auto found = listed.find(key_of(file));
    if (found == listed.end() || found->second != file.size)
      throw Error(ErrorKind::Network, "after publishing " + address + ", S3 " +
                                          (found == listed.end() ? "does not list " + file.relative
                                                                 : "lists " + file.relative + " with " +
                                                                       std::to_string(found->second) + " bytes instead of " +
                                                                       std::to_string(file.size)),
                  true);
  }
  log_info("net", "published {}: {} of {} files uploaded ({} bytes), the others already there", address, uploaded.load(),
           files.size(), uploaded_bytes.load());
  return address;
}

void S3Store::fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) {
  const S3Address parsed = parse_s3_address(address);
  if (parsed.key.empty()) throw Error(ErrorKind::Input, "S3 address \"" + address + "\" names a bucket, not a bundle");
  S3Client client = parsed.bucket == client_.config().bucket ? client_ : client_.for_bucket(parsed.bucket);
  const std::vector<S3Object> objects = client.list_objects(parsed.key + "/");
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> downloads;  // key, relative path, listed size
  std::uint64_t total = 0;
  for (const S3Object& object : objects) {
    if (!object.key.starts_with(parsed.key + "/"))
      throw Error(ErrorKind::Network, address + ": the listing under it returned the key \"" + object.key + "\"");
    const std::string relative = object.key.substr(parsed.key.size() + 1);
    if (relative.empty() || relative.ends_with('/')) continue;  // folder markers some tools create
    if (!is_plain_relative_path(relative))
      throw Error(ErrorKind::Input, address + ": object key \"" + object.key + "\" would land outside " + dest_dir.string());
    downloads.emplace_back(object.key, relative, object.size);
    total += object.size;
  }
  if (total > max_bytes)
    throw Error(ErrorKind::Input, address + " lists " + std::to_string(total) + " bytes, more than the " +
                                      std::to_string(max_bytes) + " allowed");
  const auto has = [&](std::string_view name) {
    return std::any_of(downloads.begin(), downloads.end(), [&](const auto& item) { return std::get<1>(item) == name; });
  };
  if (!has(kManifestFile) || !has(kSignatureFile))
    throw Error(ErrorKind::Input, address + " holds no whole bundle (" + std::to_string(downloads.size()) +
                                      " objects, manifest.json and manifest.sig not both among them)");
  std::filesystem::create_directories(dest_dir);
  // Each object is cut off at its listed size, so the listing's total bounds the disk used, and
  // refused when its bytes differ from the x-amz-meta-sha256 it was uploaded with. The files'
  // hashes against the manifest are the verifier's to check (proof::verify_bundle).
  for_each_in_parallel(downloads.size(), client.config().parallelism, [&](std::size_t i) {
    const auto& [key, relative, size] = downloads[i];
    client.get_object_to_file(key, confined_path(dest_dir, relative), size);
  });
  log_info("net", "fetched {} into {}: {} files", address, dest_dir.string(), downloads.size());
}

std::string S3Store::probe(const std::filesystem::path& scratch_dir) {
  const std::filesystem::path sent = scratch_dir / "s3-probe";
  const std::filesystem::path received = scratch_dir / "s3-probe.back";
  const std::string content = probe_content();
  write_file_durably(sent, content);
  std::string key = client_.config().prefix;
  if (!key.empty() && !key.ends_with('/')) key += '/';
  key += ".solver-probe-" + random_nonce();
  const std::string address = format_s3_address({client_.config().bucket, key});
  client_.put_object(key, sent, sha256_hex(content));
  client_.get_object_to_file(key, received, content.size());
  client_.delete_object(key);
  if (read_file(received) != content) throw Error(ErrorKind::Network, "S3 gave back other bytes for " + address);
  return "wrote, read back and removed " + address;
}

}  // namespace solver::net
