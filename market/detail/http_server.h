// The market's HTTP/1.1 front: accepts connections, reads each request whole under the client
// limits (market/server.h, ClientLimits), and only then hands it to a worker thread.
//
// Why not cpp-httplib, which the market used before (Debian 12 has 0.11.4): httplib gives each
// accepted socket to a thread of its pool, which then blocks reading the request. Its read
// timeout restarts with every byte, so a client sending a header byte every few seconds holds a
// thread for as long as it likes, and eight such clients stop the market; idle sockets queue
// behind them without a cap, chunked bodies are read without a limit, and gzip bodies are
// inflated before any handler could refuse them. Nothing in its API sits between accept() and
// the worker, where a deadline on a whole head or a cap on connections per client would go.
// A gate in front of httplib would have to parse requests to bound them, leaving two parsers
// that could disagree about where a request ends. So here one thread multiplexes every socket
// with epoll and owns every deadline and buffer, and a worker sees only a complete, bounded
// request and never touches a socket: a slow or idle client costs a few hundred bytes, never a thread.
//
// When connections hit a cap, the oldest one still waiting for its request (or lingering after a
// refusal) is closed to make room: an honest request arrives within milliseconds of connecting,
// so under a flood of idle or slow sockets it is never the oldest, and the flood cannot lock it out.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "market/detail/http_request.h"
#include "market/server.h"

namespace solver::market::detail {

struct Response {
  int status = 200;
  std::string body;  // JSON; empty for 204
  std::optional<int> retry_after_seconds;
};

// {"error": code, "message": message}; bytes of the message that are not UTF-8 are replaced.
Response error_response(int status, std::string_view code, std::string_view message);

// Runs on the worker threads, several at once; must not throw (an exception becomes a 500).
using RequestHandler = std::function<Response(const Request&)>;

class HttpServer {
 public:
  HttpServer(ClientLimits limits, RequestHandler handler);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (0: any free port), starts the I/O thread and the workers, and returns the
  // bound port; connections are accepted from then on. Throws Error(Network) when it cannot bind.
  int start(const std::string& host, int port);
  // Closes every connection and waits for the threads; requests in flight get no reply. Safe to
  // call twice, or without start().
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace solver::market::detail
