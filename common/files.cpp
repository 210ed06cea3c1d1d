#include "common/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"

namespace solver {
namespace {

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return Error(ErrorKind::Io, what + " " + path.string() + ": " + std::strerror(errno));
}

// Writes all of `bytes` to `fd` (none: only syncs it), fsyncs it, and closes it either way.
// Throws Error(Io) naming `path`, with the reason errno gave before the close.
void write_all_and_close(int fd, std::span<const std::byte> bytes, const std::filesystem::path& path) {
  const auto fail = [&](const std::string& what) {
    const Error error = io_error(what, path);
    ::close(fd);
    throw error;
  };
  for (std::size_t written = 0; written < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write");
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot fsync");
  ::close(fd);
}

}  // namespace

void fsync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open folder", folder);
  write_all_and_close(fd, {}, folder);
}

void copy_file_durably(const std::filesystem::path& from, const std::filesystem::path& to) {
  const std::filesystem::path temp = to.string() + ".tmp";
  std::error_code error;
  std::filesystem::copy_file(from, temp, std::filesystem::copy_options::overwrite_existing, error);
  if (error) throw Error(ErrorKind::Io, "cannot copy " + from.string() + " to " + temp.string() + ": " + error.message());
  const int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open", temp);
  write_all_and_close(fd, {}, temp);
  if (::rename(temp.c_str(), to.c_str()) != 0) throw io_error("cannot rename into place", to);
  fsync_folder(to.parent_path());
}

void write_file_durably(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::filesystem::path temp = path.string() + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot create", temp);
  write_all_and_close(fd, bytes, temp);
  if (::rename(temp.c_str(), path.c_str()) != 0) throw io_error("cannot rename into place", path);
  fsync_folder(path.parent_path());
}

void append_file_durably(const std::filesystem::path& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open for appending", path);
  write_all_and_close(fd, std::as_bytes(std::span(text.data(), text.size())), path);
}

void write_file_durably(const std::filesystem::path& path, std::string_view text) {
  write_file_durably(path, std::as_bytes(std::span(text.data(), text.size())));
}

std::string read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open", path);
  const auto fail = [&](const std::string& what) {
    const Error error = io_error(what, path);
    ::close(fd);
    throw error;
  };
  // One buffer of the file's size, read into directly: verify reads every checkpoint of a
  // bundle, and a string stream's doubling and final copy tripled the bytes moved. The size is
  // a hint only: the loop reads to the end of whatever the file holds by then.
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail("cannot stat");
  std::string contents(static_cast<std::size_t>(std::max<off_t>(info.st_size, 0)) + 1, '\0');
  std::size_t length = 0;
  while (true) {
    if (length == contents.size()) contents.resize(contents.size() * 2);
    const ssize_t n = ::read(fd, contents.data() + length, contents.size() - length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read error in");
    if (n == 0) break;
    length += static_cast<std::size_t>(n);
  }
  ::close(fd);
  contents.resize(length);
  return contents;
}

void require_private_file(const std::filesystem::path& path, std::string_view what) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) throw io_error("cannot read", path);
  if ((info.st_mode & 077) == 0) return;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
  throw Error(ErrorKind::Config, std::string(what) + " " + path.string() + " is readable by others (mode " + mode +
                                     "): run chmod 600 " + path.string());
}

bool is_plain_relative_path(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

std::filesystem::path confined_path(const std::filesystem::path& root, const std::filesystem::path& relative) {
  if (!is_plain_relative_path(relative.native()))
    throw Error(ErrorKind::Input, "refusing the path \"" + relative.string() + "\" under " + root.string() +
                                      ": it is not a plain relative path");
  std::error_code error;
  const std::filesystem::path real_root = std::filesystem::weakly_canonical(std::filesystem::absolute(root), error);
  if (error) throw Error(ErrorKind::Io, "cannot resolve " + root.string() + ": " + error.message());
  const std::filesystem::path path = root / relative;
  const std::filesystem::path real = std::filesystem::weakly_canonical(std::filesystem::absolute(path), error);
  if (error) throw Error(ErrorKind::Io, "cannot resolve " + path.string() + ": " + error.message());
  // Strictly under: every component of the root, then at least one more.
  auto [root_end, real_at] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
  if (root_end != real_root.end() || real_at == real.end())
    throw Error(ErrorKind::Input, "refusing " + path.string() + ": it resolves to " + real.string() +
                                      ", outside " + real_root.string() + " (a symlink on the way?)");
  return path;
}

void remove_confined(const std::filesystem::path& root, const std::filesystem::path& path) {
  const std::filesystem::path confined = confined_path(root, path.lexically_normal().lexically_relative(root.lexically_normal()));
  std::error_code error;
  std::filesystem::remove_all(confined, error);
  if (error) throw Error(ErrorKind::Io, "cannot remove " + confined.string() + ": " + error.message());
}

}  // namespace solver
