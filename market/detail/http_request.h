// Reading one HTTP/1.1 request from bytes as they arrive, for the market's front (http_server.h).
// Every size is bounded by the bytes a client has actually sent, never by what it claims: a
// Content-Length or chunk size over the body limit is refused before anything is buffered, a
// chunked body is counted as it streams, and compressed bodies are refused outright (415), so
// no request can make the market hold more than the head and body limits. Strict where leniency
// would let two parsers disagree about where a request ends (both Content-Length and
// Transfer-Encoding, differing Content-Lengths, folded or control-character headers: 400).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace solver::market::detail {

struct Request {
  std::string method;
  std::string target;  // exactly as on the request line: what a signature covers
  std::string path;    // the target's path, percent-decoded
  std::string query;   // after '?', as sent
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, values trimmed
  std::string body;    // decoded from chunks when it came chunked
  bool keep_alive = true;
  std::string remote_address;  // the client's IP, for logs; set by the server

  // The first header of that name (in any case), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const;
  // The first query parameter of that name, percent-decoded ('+' is a space), or nullopt.
  std::optional<std::string> query_parameter(std::string_view name) const;
};

// Why a request was turned down before any handler saw it; the server answers with it and closes.
struct HttpRefusal {
  int status = 400;
  std::string code;     // the JSON error code: bad_request, head_too_large, body_too_large, ...
  std::string message;  // a sentence for the client
};

struct RequestLimits {
  std::size_t max_head_bytes = 16 << 10;  // request line and headers, and separately the trailers
  std::size_t max_body_bytes = 1 << 20;   // after removing chunk framing
};

// Parses requests one at a time from a connection's input. Not thread-safe; one per connection.
class RequestReader {
 public:
  enum class Progress {
    NeedMore,  // everything given is consumed or waits for more bytes
    HeadDone,  // the head was just read and accepted; call read() again for the body
    Complete,  // take() the request
    Refused,   // refusal() says why; the connection cannot continue
  };

  explicit RequestReader(RequestLimits limits);

  // Consumes bytes from the front of `input`. Bytes after a complete request (a pipelined next
  // one) stay in `input`. Head bytes stay there until the head is complete.
  Progress read(std::string& input);

  bool started() const { return state_ != State::Head || head_scanned_ > 0; }
  bool head_done() const { return state_ != State::Head; }
  bool expects_continue() const { return expects_continue_; }
  std::size_t body_bytes() const { return request_.body.size(); }
  const HttpRefusal& refusal() const { return refusal_; }

  // The complete request; the reader starts over for the next one.
  Request take();

 private:
  enum class State { Head, Body, ChunkSize, ChunkData, ChunkEnd, Trailers, Complete, Refused };

  Progress refuse(int status, std::string code, std::string message);
  Progress read_head(std::string& input);
  Progress parse_head(std::string_view head);
  Progress read_chunked(std::string& input);

  RequestLimits limits_;
  State state_ = State::Head;
  Request request_;
  std::size_t head_scanned_ = 0;     // bytes of the input already searched for the head's end
  std::uint64_t body_remaining_ = 0;  // of a Content-Length body, or of the current chunk
  std::size_t trailer_bytes_ = 0;
  bool expects_continue_ = false;
  HttpRefusal refusal_;
};

}  // namespace solver::market::detail
