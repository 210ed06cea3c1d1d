// A bundle's vocabulary below proof/ and net/ (docs/bundle-format.md): the names of the files
// that finish it, a file as its manifest lists it, the listing a store publishes, and the one way
// to reach a file of a bundle that someone else made: the verifier, profile, dispute and the
// stores that publish or copy bundles all go through here.
// A bundle file must be a regular file inside the bundle folder, reached without a symlink:
// a symlink would let a bundle name any file on the verifier's machine, which would then be
// hashed, sized or parsed as the bundle's own (and its hash and size printed in the verdict).
// Symlinks are looked at, never followed: nothing about a target is read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace solver {

// The signature is written first, the manifest last: a bundle with both is finished.
inline constexpr std::string_view kManifestFile = "manifest.json";
inline constexpr std::string_view kSignatureFile = "manifest.sig";

// Caps on the files of a bundle read whole, checked before reading (docs/bundle-format.md,
// "Size caps"), so that a bundle cannot make its reader parse gigabytes of JSON.
// manifest.json: a checkpoint takes about 550 bytes of it (its entry: chain and file hash 64
// each, path, size, step and four update distances, ~360 bytes; its segment's entry ~190), so
// 32 MiB holds some 60,000 checkpoints: six times a run of a million steps checkpointed every
// 100 steps, where every checkpoint is a file of the whole training state. Parsed, a manifest
// takes about 8 times its size in memory (a 20 MB one of 100,000 entries: 170 MB), so the cap
// also bounds what parsing one costs to about 300 MB.
inline constexpr std::uint64_t kMaxManifestBytes = std::uint64_t{32} << 20;
// manifest.sig: 128 hex digits and a newline.
inline constexpr std::uint64_t kMaxSignatureBytes = 512;

// A file as a manifest lists it (checkpoints, segments, the TorchScript module).
struct FileEntry {
  std::string path;  // relative to the bundle folder, '/'-separated
  std::uint64_t size = 0;
  std::string sha256;
};

// A finished bundle as its manifest describes it, handed to the stores so that publishing
// hashes and parses nothing again (proof::read_bundle_listing makes one).
struct BundleListing {
  std::filesystem::path dir;
  std::vector<FileEntry> files;  // every file the manifest lists
  FileEntry manifest;            // manifest.json itself; its sha256 names the bundle to the market
  std::string signature_hex;     // manifest.sig, as read_bundle_signature reads it
};

// A file of a bundle on disk.
struct BundleFile {
  std::string relative;  // as named in the bundle, '/'-separated
  std::filesystem::path path;
  std::uint64_t size = 0;
};

// The file `relative` names inside `bundle_dir`, once proven that `relative` is a plain relative
// path (is_plain_relative_path), that no folder on the way below `bundle_dir` and not the file
// itself is a symlink, and that the file is a regular file. Throws Error(Input) naming `relative`:
// "<relative>: missing", "<relative>: is a symlink (bundle files must be regular files inside
// the bundle)", "<relative>: is not a regular file (...)"; Error(Io) when it cannot be looked at.
BundleFile bundle_file(const std::filesystem::path& bundle_dir, std::string_view relative);

// The bytes of bundle_file(bundle_dir, relative), refused unread when the file holds more than
// `max_bytes`: Error(Input) "<relative>: <size> bytes, more than the <max_bytes> a <what> may hold".
std::string read_bundle_file(const std::filesystem::path& bundle_dir, std::string_view relative, std::uint64_t max_bytes,
                             std::string_view what);

// The signature in manifest.sig (at most kMaxSignatureBytes), trailing whitespace removed.
// Throws as read_bundle_file does.
std::string read_bundle_signature(const std::filesystem::path& bundle_dir);

// Every file of the bundle, in path order, each checked as bundle_file checks it, skipping
// hidden entries (a name starting with '.', and everything under such a folder: upload
// records, temporary files). Throws as bundle_file does on a symlink or a special file anywhere.
std::vector<BundleFile> list_bundle_files(const std::filesystem::path& bundle_dir);

// list_bundle_files of a finished bundle: one with manifest.json and manifest.sig (regular
// files). Throws Error(Input) "<bundle_dir> is not a finished bundle: manifest.sig: missing"
// otherwise, or as list_bundle_files does.
std::vector<BundleFile> list_finished_bundle(const std::filesystem::path& bundle_dir);

// A name a store may give a bundle: one plain path component, not hidden. Throws
// Error(Internal) "bundle name \"<name>\" is not a plain folder name" otherwise (the agent and
// `solver publish` make the names).
void require_plain_bundle_name(std::string_view name);

}  // namespace solver
