// The directory store. Copies go file by file with fsync, into a temporary sibling folder that
// is renamed into place last: a crash mid-publish leaves only a temporary folder, removed by the
// next publish of the same bundle.
#include "net/store.h"

#include "common/bundle_files.h"
#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "net/market_protocol.h"

namespace solver::net {
namespace {

// Copies the bundle's files (hidden files such as upload records stay behind), fsyncing each.
// A symlink or special file in the bundle stops the copy: copied, it would carry whatever it
// points at on this machine into the store, or out of a store into the verifier's bundle.
void copy_bundle(const std::vector<BundleFile>& files, const std::filesystem::path& to) {
  std::error_code error;
  std::filesystem::create_directories(to, error);
  if (error) throw Error(ErrorKind::Io, "cannot create " + to.string() + ": " + error.message());
  for (const BundleFile& file : files) {
    const std::filesystem::path target = to / file.relative;
    std::filesystem::create_directories(target.parent_path(), error);
    if (error) throw Error(ErrorKind::Io, "cannot create " + target.parent_path().string() + ": " + error.message());
    copy_file_durably(file.path, target);
  }
}

}  // namespace

DirectoryStore::DirectoryStore(std::filesystem::path root) : root_(std::filesystem::absolute(std::move(root))) {}

std::string DirectoryStore::publish(const BundleListing& bundle, const std::string& bundle_name) {
  const std::vector<BundleFile> files = list_finished_bundle(bundle.dir);
  require_plain_bundle_name(bundle_name);
  const std::filesystem::path target = root_ / bundle_name;
  if (std::filesystem::exists(target / kManifestFile)) {
    if (sha256_file_hex(target / kManifestFile) != bundle.manifest.sha256)
      throw Error(ErrorKind::Input, "store " + root_.string() + " already holds a different bundle named " + bundle_name);
    return target.string();  // published before: nothing to do
  }
  const std::filesystem::path staging = root_ / ("." + bundle_name + ".partial");
  std::error_code error;
  std::filesystem::remove_all(staging, error);
  copy_bundle(files, staging);
  std::filesystem::rename(staging, target, error);
  if (error) throw Error(ErrorKind::Io, "cannot move " + staging.string() + " to " + target.string() + ": " + error.message());
  fsync_folder(root_);
  return target.string();
}

void DirectoryStore::fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) {
  const std::filesystem::path source(address);
  if (!source.is_absolute()) throw Error(ErrorKind::Input, "bundle address " + address + " is not an absolute folder path");
  const std::vector<BundleFile> files = list_finished_bundle(source);
  std::uint64_t total = 0;
  for (const BundleFile& file : files) total += file.size;
  if (total > max_bytes)
    throw Error(ErrorKind::Input, "bundle " + address + " holds " + std::to_string(total) + " bytes, more than the " +
                                      std::to_string(max_bytes) + " allowed");
  copy_bundle(files, dest_dir);
}

std::string probe_content() { return "solver store probe " + random_nonce() + "\n"; }

std::string DirectoryStore::probe(const std::filesystem::path&) {
  const std::filesystem::path path = root_ / (".solver-probe-" + random_nonce());
  const std::string content = probe_content();
  std::filesystem::create_directories(root_);
  write_file_durably(path, content);
  const std::string back = read_file(path);
  std::filesystem::remove(path);
  if (back != content) throw Error(ErrorKind::Io, path.string() + " read back other bytes than were written");
  return "wrote, read back and removed a file in " + root_.string();
}

}  // namespace solver::net
