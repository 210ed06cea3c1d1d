// The agent's control socket, <work_dir>/control.sock: a unix stream socket for the agent's own
// user only (mode 0600, and each peer's uid checked: the agent's or root's), one JSON request a
// line in, one JSON reply a line out. `solver agent drain|pause|resume|disable|enable` speaks to
// it (agent/control_client.h). A client may be broken or flooding: the server runs on a thread
// of its own, reads no line longer than kMaxRequestBytes, serves at most kMaxConnections at once
// and closes a connection silent for kIdleTimeout or that does not read its replies, so nothing
// a client does reaches the agent's work loop.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <thread>

namespace solver::agent::detail {

class ControlServer {
 public:
  // Answers one request; an Error it throws becomes {"ok": false, "error": what}.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  static constexpr std::size_t kMaxRequestBytes = 4096;
  static constexpr int kMaxConnections = 8;
  static constexpr std::chrono::seconds kIdleTimeout{10};

  // Removes what lies at `path` (a socket left by an agent that died: the caller holds the work
  // dir's lock, so no live agent serves it), then binds and listens. Throws Error(Config) when
  // it cannot (a path too long for a unix socket, a folder in the way).
  ControlServer(std::filesystem::path path, Handler handler);
  ~ControlServer();  // stops serving and removes the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  void serve();

  const std::filesystem::path path_;
  const Handler handler_;
  int listener_ = -1;
  int wake_ = -1;  // an eventfd: the destructor ends serve()'s poll at once
  std::thread thread_;
};

}  // namespace solver::agent::detail
