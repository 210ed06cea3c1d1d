// The market front's request reader on bytes alone: what it accepts, where it says a request
// ends, and what it refuses before buffering it.
#include <catch2/catch.hpp>

#include "market/detail/http_request.h"

using namespace solver::market::detail;
using Progress = RequestReader::Progress;

namespace {

constexpr RequestLimits kLimits{1024, 4096};

// Feeds `bytes` in pieces of `piece` bytes; returns the last progress and leaves what was not consumed in `rest`.
Progress feed(RequestReader& reader, std::string_view bytes, std::size_t piece, std::string& rest) {
  Progress progress = Progress::NeedMore;
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    rest.append(bytes.substr(at, piece));
    do progress = reader.read(rest);
    while (progress == Progress::HeadDone);
    if (progress != Progress::NeedMore) break;
  }
  return progress;
}

HttpRefusal refusal_for(std::string_view bytes) {
  RequestReader reader(kLimits);
  std::string rest;
  REQUIRE(feed(reader, bytes, bytes.size(), rest) == Progress::Refused);
  return reader.refusal();
}

}  // namespace

TEST_CASE("a request read one byte at a time is the request read whole", "[market]") {
  const std::string bytes =
      "POST /v1/tasks/0123456789abcdef/heartbeat?x=1&after=a%2Fb+c HTTP/1.1\r\nHost: m\r\nX-Solver-Key:  abc \r\n"
      "Content-Length: 5\r\n\r\nhello";
  for (const std::size_t piece : {std::size_t{1}, bytes.size()}) {
    RequestReader reader(kLimits);
    std::string rest;
    REQUIRE(feed(reader, bytes, piece, rest) == Progress::Complete);
    const Request request = reader.take();
    CHECK(request.method == "POST");
    CHECK(request.target == "/v1/tasks/0123456789abcdef/heartbeat?x=1&after=a%2Fb+c");
    CHECK(request.path == "/v1/tasks/0123456789abcdef/heartbeat");
    CHECK(request.query_parameter("after") == "a/b c");
    CHECK_FALSE(request.query_parameter("missing"));
    CHECK(request.header("X-Solver-Key") == "abc");
    CHECK(request.body == "hello");
    CHECK(request.keep_alive);
    CHECK(rest.empty());
  }
}

TEST_CASE("a chunked body is decoded, its extensions and trailers dropped, and what follows is kept", "[market]") {
  const std::string chunked =
      "POST /v1/workers HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\n";
  for (const std::size_t piece : {std::size_t{1}, std::size_t{3}}) {
    RequestReader reader(kLimits);
    std::string rest;
    REQUIRE(feed(reader, chunked, piece, rest) == Progress::Complete);
    CHECK(reader.take().body == "hello!");
  }

  RequestReader reader(kLimits);
  std::string rest = chunked + "GET /v1/health HTTP/1.0\r\n\r\n";
  CHECK(reader.read(rest) == Progress::HeadDone);
  REQUIRE(reader.read(rest) == Progress::Complete);
  CHECK(reader.take().body == "hello!");
  CHECK(reader.read(rest) == Progress::HeadDone);
  REQUIRE(reader.read(rest) == Progress::Complete);
  const Request second = reader.take();
  CHECK(second.path == "/v1/health");
  CHECK_FALSE(second.keep_alive);  // HTTP/1.0 without keep-alive
  CHECK(rest.empty());
}

TEST_CASE("sizes over the limits are refused from what is claimed, before anything is buffered", "[market]") {
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n").status == 413);
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Length: 99999999999999999\r\n\r\n").status == 413);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n").status == 413);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + std::string(0x800, 'x') + "\r\n801\r\n").status == 413);
  CHECK(refusal_for("GET / HTTP/1.1\r\nX: " + std::string(2000, 'x')).status == 431);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " + std::string(2000, 'x')).status == 431);
}

TEST_CASE("compressed bodies and ambiguous framing are refused", "[market]") {
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n").status == 415);
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Encoding: deflate\r\n\r\n").status == 415);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status == 415);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n").status == 400);
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").status == 400);
  CHECK(refusal_for("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n").status == 400);
  CHECK(refusal_for("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n").status == 400);
  CHECK(refusal_for("GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n").status == 400);
  CHECK(refusal_for("GET http://elsewhere/ HTTP/1.1\r\n\r\n").status == 400);
  CHECK(refusal_for("GET / HTTP/2.0\r\n\r\n").status == 400);
  CHECK(refusal_for("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n").status == 400);
  CHECK(refusal_for("POST / HTTP/1.1\r\nExpect: something\r\n\r\n").status == 417);
}
