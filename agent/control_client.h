// The client side of a running agent's control socket (docs/agent.md, "Controls"): what
// `solver agent drain|pause|resume|disable|enable|clear` sends.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>

namespace solver::agent {

// <work_dir>/control.sock, where the agent working in `work_dir` listens.
std::filesystem::path control_socket_path(const std::filesystem::path& work_dir);

// Sends one request ({"command": "pause"}) to the agent working in `work_dir` and returns its
// reply ({"ok": true, ...} or {"ok": false, "error": ...}). Throws Error(Network) when the socket
// cannot be reached or gives no reply within 30 s, Error(Config) when it refuses this user.
nlohmann::json send_control_request(const std::filesystem::path& work_dir, const nlohmann::json& request);

}  // namespace solver::agent
