// A cpp-httplib server on 127.0.0.1 on an ephemeral port, serving on a background thread while it
// lives: the fake HTTP servers of the tests are routes on one of these.
#pragma once

#include <httplib.h>

#include <chrono>
#include <string>
#include <thread>

namespace solver::test {

class LocalHttpServer {
 public:
  // Returns once the server accepts connections. Routes may be added afterwards: httplib looks
  // them up per request.
  LocalHttpServer() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LocalHttpServer() {
    server_.stop();
    thread_.join();
  }
  LocalHttpServer(const LocalHttpServer&) = delete;
  LocalHttpServer& operator=(const LocalHttpServer&) = delete;

  httplib::Server& routes() { return server_; }
  int port() const { return port_; }
  std::string url(const std::string& path = "") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace solver::test
