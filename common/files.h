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

// Copies a file the same way (temp file, fsync, rename, fsync folder), streaming it.
void copy_file_durably(const std::filesystem::path& from, const std::filesystem::path& to);

// Makes renames and removals in a folder durable: without it a crash can undo them.
void fsync_folder(const std::filesystem::path& folder);

// Reads a whole file. Throws Error(Io) naming the path when it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);

}  // namespace solver
