#include "agent/control_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"

namespace solver::agent {
namespace {

// A reply is a few hundred bytes; anything much longer is not the agent's.
constexpr std::size_t kMaxReplyBytes = 65536;

}  // namespace

std::filesystem::path control_socket_path(const std::filesystem::path& work_dir) { return work_dir / "control.sock"; }

nlohmann::json send_control_request(const std::filesystem::path& work_dir, const nlohmann::json& request) {
  const std::filesystem::path path = control_socket_path(work_dir);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof address.sun_path)
    throw Error(ErrorKind::Config, "the control socket path " + path.string() + " is too long for a unix socket");
  std::memcpy(address.sun_path, path.c_str(), path.native().size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(ErrorKind::Io, std::string("cannot create a unix socket: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const timeval timeout{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    if (errno == EACCES)
      throw Error(ErrorKind::Config, "cannot open the agent's control socket " + path.string() +
                                         ": permission denied (run as the agent's user, e.g. sudo -u solver)");
    throw Error(ErrorKind::Network, "cannot reach the agent's control socket " + path.string() + ": " + std::strerror(errno));
  }
  const std::string line = request.dump() + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
    throw Error(ErrorKind::Network, "cannot send to the agent's control socket " + path.string() + ": " + std::strerror(errno));
  std::string reply;
  char buffer[4096];
  while (reply.find('\n') == std::string::npos) {
    const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got <= 0)
      throw Error(ErrorKind::Network, "the agent's control socket " + path.string() + " gave no reply" +
                                          (got < 0 ? std::string(": ") + std::strerror(errno) : std::string()));
    reply.append(buffer, static_cast<std::size_t>(got));
    if (reply.size() > kMaxReplyBytes)
      throw Error(ErrorKind::Network, "the agent's control socket " + path.string() + " replied with more than 64 KiB");
  }
  try {
    return nlohmann::json::parse(reply.substr(0, reply.find('\n')));
  } catch (const nlohmann::json::exception& error) {
    throw Error(ErrorKind::Network, "the agent's control socket " + path.string() + " replied with no JSON: " + error.what());
  }
}

}  // namespace solver::agent
