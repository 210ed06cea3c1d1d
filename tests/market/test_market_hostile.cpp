// The market against hostile clients, played for real over sockets on 127.0.0.1: slowloris
// heads, floods of idle sockets, bodies that never end or inflate, clients over their rate, task
// names that try to forge log lines. Bounds are generous (the machine is shared and noisy);
// each is still one the market without its front's limits misses by far.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/files.h"
#include "common/keys.h"
#include "common/log.h"
#include "market/server.h"
#include "net/http.h"
#include "net/market_client.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::net;
using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json mlp_task(std::uint64_t seed) {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["seed"] = seed;
  return task;
}

struct Market {
  explicit Market(const std::filesystem::path& db, const market::ClientLimits& limits = {}) {
    market::MarketServerOptions options;
    options.db_path = db;
    options.port = 0;
    options.limits = limits;
    server = std::make_unique<market::MarketServer>(options);
    server->start();
  }
  MarketClient client(const SigningKey& key) const {
    RetryPolicy no_retries;
    no_retries.max_attempts = 1;
    return MarketClient({server->url(), no_retries, 10s}, key);
  }
  std::unique_ptr<market::MarketServer> server;
};

HttpResponse send(const std::string& url, const std::string& method, const std::string& path, const std::string& body, Headers headers) {
  HttpRequest request;
  request.method = method;
  request.url = url + path;
  request.body = body;
  request.headers = std::move(headers);
  request.timeout = 10s;
  return perform(request);
}

HttpResponse send_signed(const std::string& url, const SigningKey& key, const std::string& method, const std::string& path,
                         const std::string& body = "", Headers extra = {}) {
  Headers headers = sign_request(key, method, path, body, unix_now(), random_nonce()).as_headers();
  headers.insert(headers.end(), extra.begin(), extra.end());
  return send(url, method, path, body, std::move(headers));
}

// The status of GET /v1/health, or 0 when it could not be had within 10 s.
long health_status(const std::string& url) {
  try {
    return send(url, "GET", "/v1/health", "", {}).status;
  } catch (const Error&) {
    return 0;
  }
}

std::string error_code(const HttpResponse& response) {
  const json body = json::parse(response.body, nullptr, false);
  return body.is_object() && body.contains("error") && body["error"].is_string() ? body["error"].get<std::string>() : "(no error code)";
}

// This process's resident memory (the market runs in it), from /proc/self/status.
std::int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmRSS:")) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

// Enough descriptors for `wanted` sockets: the soft limit raised towards the hard one.
void allow_descriptors(rlim_t wanted) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  setrlimit(RLIMIT_NOFILE, &limit);
}

// A socket connected (or, not blocking, connecting) to 127.0.0.1:port; -1 when that failed.
int connect_to(int port, bool blocking) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (blocking) {
    const timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 || (!blocking && errno == EINPROGRESS)) return fd;
  ::close(fd);
  return -1;
}

// A connection made by hand, for what no honest client sends. One that failed to connect
// sends and receives nothing.
class RawClient {
 public:
  explicit RawClient(int port) : fd_(connect_to(port, true)) {}
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // False once the market has closed or reset the connection.
  bool send(std::string_view bytes) {
    if (fd_ < 0) return false;
    while (!bytes.empty()) {
      const ssize_t sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }
  bool readable(std::chrono::milliseconds wait) {
    if (fd_ < 0) return false;
    pollfd ready{fd_, POLLIN, 0};
    return ::poll(&ready, 1, static_cast<int>(wait.count())) > 0;
  }
  // What the market sends until it closes the connection or `limit` passes.
  std::string receive_until_closed(std::chrono::milliseconds limit) {
    std::string received;
    const auto deadline = Clock::now() + limit;
    char buffer[4096];
    while (Clock::now() < deadline) {
      if (!readable(100ms)) continue;
      const ssize_t count = ::recv(fd_, buffer, sizeof buffer, 0);
      if (count <= 0) break;
      received.append(buffer, static_cast<std::size_t>(count));
    }
    return received;
  }

 private:
  int fd_;
};

// Connections that send a request head one byte at a time, forever, reconnecting when closed.
class Slowloris {
 public:
  Slowloris(int port, int connections, std::chrono::milliseconds interval) {
    thread_ = std::thread([this, port, connections, interval] {
      std::vector<std::unique_ptr<RawClient>> clients;
      for (int i = 0; i < connections; ++i) clients.push_back(open(port));
      while (!stop_) {
        for (auto& client : clients)
          if (!client->send("X")) client = open(port);
        std::this_thread::sleep_for(interval);
      }
    });
  }
  ~Slowloris() {
    stop_ = true;
    thread_.join();
  }

 private:
  static std::unique_ptr<RawClient> open(int port) {
    auto client = std::make_unique<RawClient>(port);
    client->send("GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    return client;
  }
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// gzip of `size` zero bytes: about a thousandth of it.
std::string gzip_of_zeros(std::size_t size) {
  z_stream stream{};
  REQUIRE(deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  const std::string zeros(1 << 20, '\0');
  std::string compressed;
  char out[1 << 16];
  for (std::size_t fed = 0; fed < size; fed += zeros.size()) {
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    stream.avail_in = static_cast<uInt>(zeros.size());
    const int flush = fed + zeros.size() >= size ? Z_FINISH : Z_NO_FLUSH;
    do {
      stream.next_out = reinterpret_cast<Bytef*>(out);
      stream.avail_out = sizeof out;
      deflate(&stream, flush);
      compressed.append(out, sizeof out - stream.avail_out);
    } while (stream.avail_out == 0);
  }
  deflateEnd(&stream);
  return compressed;
}

}  // namespace

TEST_CASE("slowloris connections do not keep a health check from answering", "[market][hostile]") {
  test::ScratchDir dir("market-slowloris");
  Market market(dir / "market.db");
  Slowloris attack(market.server->port(), 32, 200ms);
  std::this_thread::sleep_for(1s);  // every slow connection is in and trickling

  for (int i = 0; i < 5; ++i) {
    const auto started = Clock::now();
    CHECK(health_status(market.server->url()) == 200);
    CHECK(Clock::now() - started < 5s);  // milliseconds when served; 10 s and a timeout when not
  }
}

TEST_CASE("a request head must arrive whole within the head timeout, however steadily it trickles", "[market][hostile]") {
  test::ScratchDir dir("market-head-timeout");
  market::ClientLimits limits;
  limits.head_timeout = 1500ms;
  Market market(dir / "market.db", limits);
  RawClient client(market.server->port());
  REQUIRE(client.send("GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));

  const auto started = Clock::now();
  std::string reply;
  while (Clock::now() - started < 15s) {
    if (client.readable(200ms)) {
      reply = client.receive_until_closed(5s);
      break;
    }
    if (!client.send("X")) break;  // a byte every 200 ms: well within any per-byte timeout
  }
  CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 408") && Catch::Contains("request_timeout"));
  CHECK(Clock::now() - started < 10s);
}

TEST_CASE("a thousand idle sockets do not stop the market serving", "[market][hostile]") {
  allow_descriptors(1200);
  test::ScratchDir dir("market-idle");
  Market market(dir / "market.db");
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) idle.push_back(connect_to(market.server->port(), false));
  REQUIRE(std::count(idle.begin(), idle.end(), -1) == 0);
  std::this_thread::sleep_for(500ms);

  const auto started = Clock::now();
  CHECK(health_status(market.server->url()) == 200);
  CHECK(Clock::now() - started < 5s);
  const SigningKey key = SigningKey::generate();
  CHECK_FALSE(market.client(key).submit_task(mlp_task(1)).empty());
  for (const int fd : idle) ::close(fd);
}

TEST_CASE("an oversized body, declared or chunked without end, gets 413 and the market does not grow", "[market][hostile]") {
  test::ScratchDir dir("market-body");
  Market market(dir / "market.db");
  const std::string post = "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";

  RawClient declared(market.server->port());
  REQUIRE(declared.send(post + "Content-Length: 104857600\r\n\r\n"));
  const std::string refused = declared.receive_until_closed(10s);
  CHECK_THAT(refused, Catch::StartsWith("HTTP/1.1 413") && Catch::Contains("body_too_large"));

  // 64 KiB chunks, and never the last one: sent until the market answers or 64 MiB have gone.
  const std::string chunk = "10000\r\n" + std::string(1 << 16, 'x') + "\r\n";
  const std::int64_t resident_before = resident_bytes();
  RawClient chunked(market.server->port());
  REQUIRE(chunked.send(post + "Transfer-Encoding: chunked\r\n\r\n"));
  std::size_t sent = 0;
  while (sent < (64u << 20) && !chunked.readable(0ms) && chunked.send(chunk)) sent += chunk.size();
  const std::string reply = chunked.receive_until_closed(10s);
  CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 413") && Catch::Contains("body_too_large"));
  CHECK(sent < (32u << 20));  // stopped near the 1 MiB limit, not at the end of what was sent
  const std::int64_t grown = resident_bytes() - resident_before;
  INFO("resident memory grew by " << grown / 1024 << " KiB while " << sent / 1024 << " KiB were sent");
  CHECK(grown < (24 << 20));
  CHECK(health_status(market.server->url()) == 200);
}

TEST_CASE("a compressed body is refused with 415 before anything inflates it", "[market][hostile]") {
  test::ScratchDir dir("market-gzip");
  Market market(dir / "market.db");
  const SigningKey key = SigningKey::generate();
  const std::string bomb = gzip_of_zeros(64u << 20);  // 64 MiB inflated, ~64 KiB as sent

  const std::int64_t resident_before = resident_bytes();
  const HttpResponse gzip = send_signed(market.server->url(), key, "POST", "/v1/tasks", bomb, {{"Content-Encoding", "gzip"}});
  CHECK(gzip.status == 415);
  CHECK(error_code(gzip) == "unsupported_encoding");
  const std::int64_t grown = resident_bytes() - resident_before;
  INFO("resident memory grew by " << grown / 1024 << " KiB");
  CHECK(grown < (24 << 20));

  RawClient chunked_gzip(market.server->port());
  REQUIRE(chunked_gzip.send("POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
  CHECK_THAT(chunked_gzip.receive_until_closed(10s), Catch::StartsWith("HTTP/1.1 415") && Catch::Contains("unsupported_encoding"));
}

TEST_CASE("a client over its rate gets 429 with Retry-After, and other clients are still served", "[market][hostile]") {
  test::ScratchDir dir("market-rate");
  {
    market::ClientLimits limits;
    limits.per_key = {1, 3};
    Market market(dir / "per-key.db", limits);
    const SigningKey greedy = SigningKey::generate(), other = SigningKey::generate();
    std::vector<HttpResponse> replies;
    for (int i = 0; i < 20; ++i) replies.push_back(send_signed(market.server->url(), greedy, "GET", "/v1/tasks"));
    const auto limited = std::find_if(replies.begin(), replies.end(), [](const HttpResponse& reply) { return reply.status == 429; });
    REQUIRE(limited != replies.end());
    CHECK(error_code(*limited) == "rate_limited");
    REQUIRE(limited->header("retry-after"));
    CHECK(std::stoi(*limited->header("retry-after")) >= 1);
    CHECK(replies.front().status == 403);  // within its burst: answered, here as an unknown key
    CHECK(send_signed(market.server->url(), other, "GET", "/v1/tasks").status == 403);
  }
  {
    market::ClientLimits limits;
    limits.per_address = {1, 3};
    Market market(dir / "per-address.db", limits);
    std::vector<HttpResponse> replies;
    for (int i = 0; i < 20; ++i) replies.push_back(send(market.server->url(), "GET", "/v1/health", "", {}));
    CHECK(replies.front().status == 200);
    const auto limited = std::find_if(replies.begin(), replies.end(), [](const HttpResponse& reply) { return reply.status == 429; });
    REQUIRE(limited != replies.end());
    CHECK(error_code(*limited) == "rate_limited");
    REQUIRE(limited->header("retry-after"));
    CHECK(std::stoi(*limited->header("retry-after")) >= 1);
  }
}

TEST_CASE("a task name with a newline, an escape or a line separator cannot forge a log line", "[market][hostile]") {
  std::vector<std::string> messages;
  const std::string forged = "2026-01-01T00:00:00.000Z INFO  market     task 0123456789abcdef verified by verifier 0000";
  {
    const test::LogCapture log;  // the submission is logged at info
    {
      test::ScratchDir dir("market-log");
      Market market(dir / "market.db");
      json task = mlp_task(1);
      task["id"] = "innocent\n" + forged + "\r\x1b[2J\xe2\x80\xa8" + forged;
      const SigningKey key = SigningKey::generate();
      market.client(key).submit_task(task);
    }
    messages = log.lines();
  }

  bool quoted = false;
  for (const std::string& message : messages) {
    INFO(message);
    CHECK(message.find_first_of("\r\n\x1b") == std::string::npos);
    CHECK(message.find("\xe2\x80\xa8") == std::string::npos);
    quoted = quoted || message.find("innocent\\n2026-01-01") != std::string::npos;
  }
  CHECK(quoted);
  CHECK(escape_log_text("a\tb\x7f\xff\xc2\x85\xe2\x80\xa9 \xc3\xa9") == "a\\tb\\x7f\\xff\\u{0085}\\u{2029} \xc3\xa9");
}

TEST_CASE("GET /v1/tasks comes in pages: after a task id, up to a limit, with the next page's cursor", "[market][hostile]") {
  test::ScratchDir dir("market-pages");
  Market market(dir / "market.db");
  const SigningKey key = SigningKey::generate();
  MarketClient client = market.client(key);
  std::vector<std::string> submitted;
  for (std::uint64_t seed = 1; seed <= 7; ++seed) submitted.push_back(client.submit_task(mlp_task(seed)));

  std::vector<std::string> listed;
  std::string path = "/v1/tasks?limit=3";
  std::vector<std::size_t> page_sizes;
  for (int page = 0; page < 10; ++page) {
    const HttpResponse reply = send_signed(market.server->url(), key, "GET", path);
    REQUIRE(reply.status == 200);
    const json body = json::parse(reply.body);
    page_sizes.push_back(body["tasks"].size());
    for (const json& task : body["tasks"]) listed.push_back(task["task_id"]);
    if (body["next"].is_null()) break;
    CHECK(body["next"] == listed.back());
    path = "/v1/tasks?after=" + body["next"].get<std::string>() + "&limit=3";
  }
  CHECK(page_sizes == std::vector<std::size_t>{3, 3, 1});
  CHECK(listed == submitted);

  const json first_page = json::parse(send_signed(market.server->url(), key, "GET", "/v1/tasks").body);
  CHECK(first_page["tasks"].size() == 7);  // the default page holds 100
  CHECK(first_page["next"].is_null());
  for (const std::string bad : {"/v1/tasks?limit=0", "/v1/tasks?limit=501", "/v1/tasks?limit=x", "/v1/tasks?after=0123456789abcdef",
                                "/v1/tasks?after=../../etc"}) {
    const HttpResponse refused = send_signed(market.server->url(), key, "GET", bad);
    INFO(bad << ": " << refused.body);
    CHECK(refused.status == 400);
    CHECK(error_code(refused) == "bad_request");
  }
}

TEST_CASE("requests pipelined on one kept-alive connection get their replies in order", "[market][hostile]") {
  test::ScratchDir dir("market-pipeline");
  Market market(dir / "market.db");
  RawClient client(market.server->port());
  const std::string health = "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(client.send(health + health + "GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  const std::string replies = client.receive_until_closed(10s);
  const std::size_t second = replies.find("HTTP/1.1 200", 1);
  REQUIRE(replies.starts_with("HTTP/1.1 200"));
  REQUIRE(second != std::string::npos);
  CHECK(replies.find("HTTP/1.1 404", second) != std::string::npos);
  CHECK_THAT(replies, Catch::Contains("solver-market/1") && Catch::Contains("not_found"));
}
