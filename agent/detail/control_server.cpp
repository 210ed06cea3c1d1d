#include "agent/detail/control_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"

namespace solver::agent::detail {
namespace {

using Clock = std::chrono::steady_clock;

struct Connection {
  int fd = -1;
  std::string pending;  // bytes of the request line read so far
  Clock::time_point last_heard = Clock::now();
};

nlohmann::json error_reply(const std::string& what) { return {{"ok", false}, {"error", what}}; }

// Sends a reply line without waiting: a client that does not read its replies loses its connection.
bool send_line(int fd, const nlohmann::json& reply) {
  const std::string line = reply.dump() + "\n";
  return ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
}

// Sends a last reply and closes.
void refuse(int fd, const std::string& why) {
  send_line(fd, error_reply(why));
  ::close(fd);
}

bool peer_is_owner(int fd) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return false;
  return peer.uid == ::geteuid() || peer.uid == 0;
}

}  // namespace

ControlServer::ControlServer(std::filesystem::path path, Handler handler)
    : path_(std::move(path)), handler_(std::move(handler)) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.native().size() >= sizeof address.sun_path)
    throw Error(ErrorKind::Config, "config.work_dir: the control socket " + path_.string() + " is longer than " +
                                       std::to_string(sizeof address.sun_path - 1) +
                                       " bytes, the most a unix socket's path may be: choose a shorter work_dir");
  std::memcpy(address.sun_path, path_.c_str(), path_.native().size());
  struct stat existing {};
  if (::lstat(path_.c_str(), &existing) == 0) {
    if (S_ISDIR(existing.st_mode))
      throw Error(ErrorKind::Config, "config.work_dir: a folder is in the way of the control socket " + path_.string());
    ::unlink(path_.c_str());  // left by an agent that died; the work dir's lock says none runs
  }
  const auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    if (listener_ >= 0) ::close(listener_);
    throw Error(ErrorKind::Config, "config.work_dir: cannot " + std::string(what) + " the control socket " +
                                       path_.string() + ": " + reason);
  };
  listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener_ < 0) fail("create");
  // The socket file takes the socket's mode when it is bound: owner only from the first instant,
  // whatever the umask. chmod again before listen() in case the file system ignored it; no one
  // can connect before listen().
  if (::fchmod(listener_, 0600) != 0) fail("restrict");
  if (::bind(listener_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) fail("bind");
  if (::chmod(path_.c_str(), 0600) != 0 || ::listen(listener_, kMaxConnections) != 0) {
    ::unlink(path_.c_str());
    fail("listen on");
  }
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_ < 0) {
    ::unlink(path_.c_str());
    fail("make a wake-up fd for");
  }
  thread_ = std::thread([this] { serve(); });
  log_info("agent", "control socket {} (solver agent drain|pause|resume|disable|enable)", path_.string());
}

ControlServer::~ControlServer() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(wake_, &one, sizeof one);
  thread_.join();
  ::close(wake_);
  ::close(listener_);
  ::unlink(path_.c_str());
}

void ControlServer::serve() {
  std::vector<Connection> connections;
  for (;;) {
    std::vector<pollfd> watched{{.fd = wake_, .events = POLLIN, .revents = 0}, {.fd = listener_, .events = POLLIN, .revents = 0}};
    for (const Connection& connection : connections) watched.push_back({.fd = connection.fd, .events = POLLIN, .revents = 0});
    if (::poll(watched.data(), watched.size(), 1000) < 0 && errno != EINTR) {
      log_error("agent", "control socket: poll failed ({}); no longer serving", std::strerror(errno));
      break;
    }
    if (watched[0].revents != 0) break;
    const auto now = Clock::now();
    // Each connection's turn; `watched[i + 2]` is connections[i] as it was polled.
    std::vector<Connection> kept;
    for (std::size_t i = 0; i < connections.size(); ++i) {
      Connection& connection = connections[i];
      bool open = true;
      if (watched[i + 2].revents != 0) {
        char buffer[kMaxRequestBytes + 1];
        const ssize_t got = ::recv(connection.fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) open = false;
        if (got > 0) {
          connection.pending.append(buffer, static_cast<std::size_t>(got));
          connection.last_heard = now;
        }
        for (std::size_t end; open && (end = connection.pending.find('\n')) != std::string::npos;) {
          const std::string line = connection.pending.substr(0, end);
          connection.pending.erase(0, end + 1);
          if (line.size() > kMaxRequestBytes) {
            send_line(connection.fd, error_reply("request longer than " + std::to_string(kMaxRequestBytes) + " bytes"));
            open = false;
            break;
          }
          nlohmann::json reply;
          try {
            reply = handler_(nlohmann::json::parse(line));
          } catch (const nlohmann::json::exception&) {
            reply = error_reply("not a JSON request: send one JSON object a line, e.g. {\"command\": \"status\"}");
          } catch (const Error& error) {
            reply = error_reply(error.what());
          }
          open = send_line(connection.fd, reply);
        }
        if (open && connection.pending.size() > kMaxRequestBytes) {
          refuse(connection.fd, "request longer than " + std::to_string(kMaxRequestBytes) + " bytes");
          continue;
        }
      }
      if (open && now - connection.last_heard > kIdleTimeout) open = false;
      if (open)
        kept.push_back(std::move(connection));
      else
        ::close(connection.fd);
    }
    connections = std::move(kept);
    if (watched[1].revents != 0) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        if (!peer_is_owner(fd))
          refuse(fd, "only the agent's own user (or root) may control it");
        else if (connections.size() >= static_cast<std::size_t>(kMaxConnections))
          refuse(fd, "too many control connections at once (" + std::to_string(kMaxConnections) + "); try again");
        else
          connections.push_back(Connection{.fd = fd});
      }
    }
  }
  for (const Connection& connection : connections) ::close(connection.fd);
}

}  // namespace solver::agent::detail
