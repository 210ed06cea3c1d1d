// The service manager's end of systemd's notify protocol, for the tests that run `solver agent`
// as systemd would.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace solver::test {

// The service manager's end of NOTIFY_SOCKET: each datagram is one or more "NAME=value" lines.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path), fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof address.sun_path);
    std::strcpy(address.sun_path, path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  }
  ~NotifySocket() { ::close(fd_); }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  std::string env() const { return "NOTIFY_SOCKET=" + path_.string(); }

  // Reads datagrams until a line satisfies `wanted` (returned) or `timeout_seconds` pass; every
  // line read is kept in lines().
  template <typename Predicate>
  std::optional<std::string> wait_for(Predicate wanted, double timeout_seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
    for (auto now = Clock::now(); now < deadline; now = Clock::now()) {
      pollfd ready{.fd = fd_, .events = POLLIN, .revents = 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
      if (::poll(&ready, 1, static_cast<int>(left) + 1) <= 0) continue;
      char buffer[4096];
      const ssize_t size = ::recv(fd_, buffer, sizeof buffer, 0);
      if (size <= 0) continue;
      std::istringstream datagram(std::string(buffer, static_cast<std::size_t>(size)));
      std::optional<std::string> found;
      for (std::string line; std::getline(datagram, line);) {
        lines_.push_back(line);
        if (!found && wanted(line)) found = line;
      }
      if (found) return found;
    }
    return std::nullopt;
  }
  std::optional<std::string> wait_for_line(const std::string& line, double timeout_seconds) {
    return wait_for([&](const std::string& got) { return got == line; }, timeout_seconds);
  }
  const std::vector<std::string>& lines() const { return lines_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::filesystem::path path_;
  int fd_;
  std::vector<std::string> lines_;
};

}  // namespace solver::test
