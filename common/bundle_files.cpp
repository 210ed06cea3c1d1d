#include "common/bundle_files.h"

#include <algorithm>
#include <cctype>
#include <iterator>

#include "common/error.h"
#include "common/files.h"

namespace solver {
namespace {

constexpr std::string_view kRule = "bundle files must be regular files inside the bundle";

std::string kind_of(std::filesystem::file_type type) {
  switch (type) {
    case std::filesystem::file_type::directory: return "a folder";
    case std::filesystem::file_type::fifo: return "a pipe";
    case std::filesystem::file_type::socket: return "a socket";
    case std::filesystem::file_type::block:
    case std::filesystem::file_type::character: return "a device";
    default: return "not a file";
  }
}

}  // namespace

BundleFile bundle_file(const std::filesystem::path& bundle_dir, std::string_view relative) {
  const std::string name(relative);
  if (!is_plain_relative_path(relative))
    throw Error(ErrorKind::Input, "\"" + name + "\": not a plain relative path (" + std::string(kRule) + ")");
  // Component by component with lstat: a symlinked folder on the way leads out as surely as a
  // symlinked file, and following either would read the target.
  const std::filesystem::path parts(name);
  std::filesystem::path path = bundle_dir;
  std::string walked;
  for (auto part = parts.begin(); part != parts.end(); ++part) {
    path /= *part;
    if (!walked.empty()) walked += '/';
    walked += part->string();
    const bool last = std::next(part) == parts.end();
    std::error_code error;
    const std::filesystem::file_status status = std::filesystem::symlink_status(path, error);
    if (status.type() == std::filesystem::file_type::not_found) throw Error(ErrorKind::Input, name + ": missing");
    if (error) throw Error(ErrorKind::Io, "cannot look at " + path.string() + ": " + error.message());
    if (std::filesystem::is_symlink(status))
      throw Error(ErrorKind::Input, name + ": " + (last ? "" : walked + " ") + "is a symlink (" + std::string(kRule) + ")");
    if (!last && !std::filesystem::is_directory(status))
      throw Error(ErrorKind::Input, name + ": missing (" + walked + " is not a folder)");
    if (last && !std::filesystem::is_regular_file(status))
      throw Error(ErrorKind::Input,
                  name + ": is not a regular file (" + kind_of(status.type()) + "; " + std::string(kRule) + ")");
  }
  std::error_code error;
  const std::uintmax_t size = std::filesystem::file_size(path, error);
  if (error) throw Error(ErrorKind::Io, "cannot read the size of " + path.string() + ": " + error.message());
  return {name, path, size};
}

std::string read_bundle_file(const std::filesystem::path& bundle_dir, std::string_view relative, std::uint64_t max_bytes,
                             std::string_view what) {
  const BundleFile file = bundle_file(bundle_dir, relative);
  if (file.size > max_bytes)
    throw Error(ErrorKind::Input, file.relative + ": " + std::to_string(file.size) + " bytes, more than the " +
                                      std::to_string(max_bytes) + " a " + std::string(what) + " may hold");
  return read_file(file.path);
}

std::string read_bundle_signature(const std::filesystem::path& bundle_dir) {
  std::string signature = read_bundle_file(bundle_dir, kSignatureFile, kMaxSignatureBytes, "signature");
  while (!signature.empty() && std::isspace(static_cast<unsigned char>(signature.back()))) signature.pop_back();
  return signature;
}

std::vector<BundleFile> list_bundle_files(const std::filesystem::path& bundle_dir) {
  std::vector<BundleFile> files;
  std::error_code error;
  // The iterator does not descend through symlinked folders; bundle_file refuses them.
  for (std::filesystem::recursive_directory_iterator entry(bundle_dir, error), end; !error && entry != end;
       entry.increment(error)) {
    if (entry->path().filename().string().starts_with(".")) {
      entry.disable_recursion_pending();
      continue;
    }
    const std::filesystem::file_status status = entry->symlink_status(error);
    if (error) break;
    if (std::filesystem::is_directory(status)) continue;
    files.push_back(bundle_file(bundle_dir, entry->path().lexically_relative(bundle_dir).generic_string()));
  }
  if (error) throw Error(ErrorKind::Io, "cannot list " + bundle_dir.string() + ": " + error.message());
  std::ranges::sort(files, {}, &BundleFile::relative);
  return files;
}

std::vector<BundleFile> list_finished_bundle(const std::filesystem::path& bundle_dir) {
  try {
    bundle_file(bundle_dir, kManifestFile);
    bundle_file(bundle_dir, kSignatureFile);
    return list_bundle_files(bundle_dir);
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw error.with_context(bundle_dir.string() + " is not a finished bundle");
  }
}

void require_plain_bundle_name(std::string_view name) {
  if (!is_plain_relative_path(name) || name.find('/') != std::string_view::npos || name.starts_with('.'))
    throw Error(ErrorKind::Internal, "bundle name \"" + std::string(name) + "\" is not a plain folder name");
}

}  // namespace solver
