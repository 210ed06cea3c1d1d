// Durable file writes: a finished file is either absent or complete, never torn, even if
// the machine loses power mid-write (temp file in the same folder, fsync, rename, fsync folder).
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace solver {

// Writes `bytes` to `path` atomically and durably. Blocks until on disk. Throws Error(Io).
void write_file_durably(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_durably(const std::filesystem::path& path, std::string_view text);

// Appends `text` to an existing file and fsyncs it: a crash leaves the file as it was plus at
// most a torn end (for append-only logs such as a bundle's journal). Throws Error(Io).
void append_file_durably(const std::filesystem::path& path, std::string_view text);

// Copies a file the same way (temp file, fsync, rename, fsync folder), streaming it.
void copy_file_durably(const std::filesystem::path& from, const std::filesystem::path& to);

// Makes renames and removals in a folder durable: without it a crash can undo them.
void fsync_folder(const std::filesystem::path& folder);

// Reads a whole file. Throws Error(Io) naming the path when it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);

// Throws Error(Config) "<what> <path> is readable by others (mode 0644): run chmod 600 <path>"
// when the file's group or others may read or write it: for files that hold secrets.
void require_private_file(const std::filesystem::path& path, std::string_view what);

// Paths built from what strangers send (a market's task and job ids, a bundle's file names, an
// S3 key) must stay inside the folder they were meant for; every path the agent writes or
// removes on their behalf goes through these.

// Whether `path` is a plain relative path: not empty, not absolute, no empty, "." or ".."
// component, no NUL. Lexical only; confined_path also looks at the disk.
bool is_plain_relative_path(std::string_view path);

// root / relative, once proven to lie inside root: `relative` is a plain relative path, and the
// result, with every symlink that exists on its way resolved, is still strictly under root's own
// resolved path (a symlink planted inside root cannot lead out of it). Throws Error(Input)
// naming both paths otherwise.
std::filesystem::path confined_path(const std::filesystem::path& root, const std::filesystem::path& relative);

// Removes `path` (a file or a whole folder) after proving with confined_path that it lies under
// `root`. Throws Error(Input) when it does not, Error(Io) when the removal fails.
void remove_confined(const std::filesystem::path& root, const std::filesystem::path& path);

}  // namespace solver
