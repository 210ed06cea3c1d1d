// net/http.h and net/retry.h against a real HTTP server (cpp-httplib) on 127.0.0.1: bodies and
// files both ways, multipart forms, timeouts on a hung server, and retries with backoff.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "common/sha256.h"
#include "net/http.h"
#include "net/retry.h"
#include "tests/local_http_server.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

using test::LocalHttpServer;

std::string pattern_bytes(std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + i / 7) & 0xFF);
  return bytes;
}

TEST_CASE("http: a GET returns status, lowercased headers and body", "[net]") {
  LocalHttpServer server;
  server.routes().Get("/hello", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("X-Answer", "42");
    res.set_content("hello", "text/plain");
  });
  const HttpResponse response = perform({.url = server.url("/hello")});
  CHECK(response.status == 200);
  CHECK(response.body == "hello");
  CHECK(response.header("x-answer") == "42");
  CHECK_FALSE(response.header("x-missing").has_value());
}

TEST_CASE("http: methods and in-memory bodies arrive as sent", "[net]") {
  LocalHttpServer server;
  const auto echo = [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(req.method + ":" + req.get_header_value("X-Tag") + ":" + req.body, "text/plain");
  };
  server.routes().Post("/echo", echo);
  server.routes().Put("/echo", echo);
  server.routes().Delete("/echo", echo);
  const std::string body = std::string("{\"a\":1}\0tail", 12);
  CHECK(perform({.method = "POST", .url = server.url("/echo"), .headers = {{"X-Tag", "t"}}, .body = body}).body ==
        "POST:t:" + body);
  CHECK(perform({.method = "PUT", .url = server.url("/echo"), .body = "x"}).body == "PUT::x");
  CHECK(perform({.method = "DELETE", .url = server.url("/echo")}).body == "DELETE::");
  CHECK(perform({.method = "POST", .url = server.url("/echo")}).body == "POST::");
}

TEST_CASE("http: a file slice is streamed as the body, byte for byte", "[net]") {
  test::ScratchDir scratch("http-upload");
  const std::string bytes = pattern_bytes(3'000'000);
  test::write_text(scratch / "data.bin", bytes);
  LocalHttpServer server;
  server.routes().Put("/upload", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(sha256_hex(req.body) + " " + std::to_string(req.body.size()), "text/plain");
  });
  const HttpResponse whole = perform({.method = "PUT", .url = server.url("/upload"), .body_file = FileSlice{scratch / "data.bin"}});
  CHECK(whole.body == sha256_hex(bytes) + " 3000000");
  const HttpResponse slice = perform(
      {.method = "PUT", .url = server.url("/upload"), .body_file = FileSlice{scratch / "data.bin", 1'000'001, 777'777}});
  CHECK(slice.body == sha256_hex(bytes.substr(1'000'001, 777'777)) + " 777777");
}

TEST_CASE("http: a response streamed to a file matches what the server sent", "[net]") {
  test::ScratchDir scratch("http-download");
  const std::string bytes = pattern_bytes(5'000'000);
  LocalHttpServer server;
  server.routes().Get("/blob", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(bytes, "application/octet-stream");
  });
  const HttpResponse response = perform({.url = server.url("/blob"), .response_file = scratch / "blob.bin"});
  CHECK(response.status == 200);
  CHECK(response.body.empty());
  CHECK(sha256_file_hex(scratch / "blob.bin") == sha256_hex(bytes));

  // Held in memory, a reply over the cap is refused instead of growing without bound.
  const auto capped = test::error_kind_of([&] { perform({.url = server.url("/blob"), .max_response_bytes = 1000}); });
  CHECK(capped == ErrorKind::Network);
}

TEST_CASE("http: a multipart form carries files and directory entries with their names", "[net]") {
  test::ScratchDir scratch("http-form");
  test::write_text(scratch / "a.bin", pattern_bytes(200'000));
  LocalHttpServer server;
  std::string seen;
  server.routes().Post("/add", [&](const httplib::Request& req, httplib::Response& res) {
    for (const auto& [name, file] : req.files)
      seen += name + "|" + file.filename + "|" + file.content_type + "|" + sha256_hex(file.content) + "\n";
    res.set_content("ok", "text/plain");
  });
  const HttpRequest request{.method = "POST",
                            .url = server.url("/add"),
                            .form = {{.filename = "dir", .content_type = "application/x-directory"},
                                     {.filename = "dir%2Fa.bin",
                                      .content_type = "application/octet-stream",
                                      .file = FileSlice{scratch / "a.bin"}}}};
  CHECK(perform(request).status == 200);
  CHECK(seen.find("file|dir|application/x-directory|" + sha256_hex("")) != std::string::npos);
  CHECK(seen.find("file|dir%2Fa.bin|application/octet-stream|" + sha256_hex(pattern_bytes(200'000))) != std::string::npos);
}

TEST_CASE("http: a refused connection is a retryable network error naming the URL", "[net]") {
  std::string url;
  {
    LocalHttpServer closed;  // bind a port, then free it: nothing listens there afterwards
    url = closed.url("/nothing");
  }
  try {
    perform({.url = url, .connect_timeout = std::chrono::milliseconds(2000)});
    FAIL("expected a network error");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Network);
    CHECK(error.retryable());
    CHECK_THAT(error.what(), Catch::Contains(url));
  }
}

TEST_CASE("http: a hung server costs the timeout, not forever", "[net]") {
  LocalHttpServer server;
  std::atomic<bool> release{false};
  server.routes().Get("/hang", [&](const httplib::Request&, httplib::Response& res) {
    for (int i = 0; i < 100 && !release; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    res.set_content("late", "text/plain");
  });
  const auto started = std::chrono::steady_clock::now();
  const auto kind = test::error_kind_of([&] {
    perform({.url = server.url("/hang"), .timeout = std::chrono::milliseconds(400)});
  });
  release = true;
  CHECK(kind == ErrorKind::Network);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(3));
}

TEST_CASE("http: error statuses are returned, and classified as transient or not", "[net]") {
  LocalHttpServer server;
  server.routes().Get(R"(/status/(\d+))", [](const httplib::Request& req, httplib::Response& res) {
    res.status = std::stoi(req.matches[1]);
    res.set_content("{\"error\":\"because\"}", "application/json");
  });
  const HttpResponse unavailable = perform({.url = server.url("/status/503")});
  CHECK(unavailable.status == 503);
  try {
    throw_unless_success(unavailable, "fetching a thing");
    FAIL("expected an error");
  } catch (const Error& error) {
    CHECK(error.retryable());
    CHECK_THAT(error.what(), Catch::Contains("fetching a thing: HTTP 503") && Catch::Contains("because"));
  }
  try {
    throw_unless_success(perform({.url = server.url("/status/403")}), "x");
    FAIL("expected an error");
  } catch (const Error& error) {
    CHECK_FALSE(error.retryable());
  }
  CHECK_NOTHROW(throw_unless_success(perform({.url = server.url("/status/204")}), "x"));
}

TEST_CASE("http: url_encode keeps only unreserved characters", "[net]") {
  CHECK(url_encode("a b/c~d_e.f-g") == "a%20b%2Fc~d_e.f-g");
  CHECK(url_encode("a b/c", true) == "a%20b/c");
  CHECK(url_encode("\xC3\xA9+=") == "%C3%A9%2B%3D");
}

TEST_CASE("retry: transient failures are retried until success", "[net]") {
  LocalHttpServer server;
  std::atomic<int> calls{0};
  server.routes().Get("/flaky", [&](const httplib::Request&, httplib::Response& res) {
    res.status = ++calls < 3 ? 503 : 200;
    res.set_content("ok", "text/plain");
  });
  const RetryPolicy fast{.max_attempts = 5, .initial_delay = std::chrono::milliseconds(10), .max_delay = std::chrono::milliseconds(20)};
  with_retries(fast, "flaky GET", [&] { throw_unless_success(perform({.url = server.url("/flaky")}), "flaky GET"); });
  CHECK(calls == 3);
}

TEST_CASE("retry: permanent errors fail at once, and exhausted retries say how many", "[net]") {
  const RetryPolicy fast{.max_attempts = 3, .initial_delay = std::chrono::milliseconds(1), .max_delay = std::chrono::milliseconds(2)};
  int calls = 0;
  CHECK_THROWS_WITH(with_retries(fast, "op", [&] { ++calls, throw Error(ErrorKind::Network, "forbidden", false); }),
                    "forbidden");
  CHECK(calls == 1);
  calls = 0;
  CHECK_THROWS_WITH(with_retries(fast, "op", [&] { ++calls, throw Error(ErrorKind::Network, "down", true); }),
                    Catch::Contains("op: gave up after 3 attempts: down"));
  CHECK(calls == 3);
}

TEST_CASE("retry: a stop request ends the wait at once", "[net]") {
  std::atomic<bool> stop{false};
  const RetryPolicy patient{.max_attempts = 0, .initial_delay = std::chrono::seconds(30), .max_delay = std::chrono::seconds(30), .stop = &stop};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
  });
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(with_retries(patient, "op", [] { throw Error(ErrorKind::Network, "down", true); }), "down");
  stopper.join();
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
}

TEST_CASE("retry: backoff delays grow exponentially up to the cap, with jitter below it", "[net]") {
  const RetryPolicy policy{.initial_delay = std::chrono::milliseconds(100), .max_delay = std::chrono::milliseconds(1000), .multiplier = 2.0};
  for (int i = 0; i < 200; ++i) {
    CHECK(backoff_delay(policy, 1) <= std::chrono::milliseconds(100));
    CHECK(backoff_delay(policy, 3) <= std::chrono::milliseconds(400));
    CHECK(backoff_delay(policy, 20) <= std::chrono::milliseconds(1000));
  }
  std::chrono::milliseconds largest{0};
  for (int i = 0; i < 200; ++i) largest = std::max(largest, backoff_delay(policy, 20));
  CHECK(largest > std::chrono::milliseconds(500));  // jitter spreads over the whole range, not a constant
}

}  // namespace
}  // namespace solver::net
