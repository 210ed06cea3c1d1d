#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace solver {
namespace {

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return Error(ErrorKind::Io, what + " " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

void fsync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open folder", folder);
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) throw io_error("cannot fsync folder", folder);
}

void copy_file_durably(const std::filesystem::path& from, const std::filesystem::path& to) {
  const std::filesystem::path temp = to.string() + ".tmp";
  std::error_code error;
  std::filesystem::copy_file(from, temp, std::filesystem::copy_options::overwrite_existing, error);
  if (error) throw Error(ErrorKind::Io, "cannot copy " + from.string() + " to " + temp.string() + ": " + error.message());
  const int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open", temp);
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) throw io_error("cannot fsync", temp);
  if (::rename(temp.c_str(), to.c_str()) != 0) throw io_error("cannot rename into place", to);
  fsync_folder(to.parent_path());
}

void write_file_durably(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::filesystem::path temp = path.string() + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot create", temp);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      throw io_error("cannot write", temp);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    throw io_error("cannot fsync", temp);
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) throw io_error("cannot rename into place", path);
  fsync_folder(path.parent_path());
}

void write_file_durably(const std::filesystem::path& path, std::string_view text) {
  write_file_durably(path, std::as_bytes(std::span(text.data(), text.size())));
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open " + path.string() + ": " + std::strerror(errno));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::Io, "read error in " + path.string());
  return contents.str();
}

}  // namespace solver
