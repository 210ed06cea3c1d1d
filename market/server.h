// The reference market server (docs/market-protocol.md): HTTP + JSON through the market's own
// bounded front (market/detail/http_server.h), state in SQLite (market/store.h). A plain class, so `solver market serve` and `solver agent --local`
// (and the tests) run it in-process: start() serves on background threads, stop() ends them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

namespace solver::market {

// A token bucket: `burst` requests at once, refilled at `per_second`.
struct RateLimit {
  double per_second = 0;
  double burst = 0;
};

// What any one client may hold of the market, checked before a request is authenticated (except
// the per-key rate, checked right after its signature). Defaults sized for a pool of hundreds of
// rigs that each send a few requests a minute (docs/market-protocol.md, "Limits").
struct ClientLimits {
  std::size_t max_connections = 512;              // in total; beyond it the oldest idle connection is closed
  std::size_t max_connections_per_address = 64;   // per IPv4 address or IPv6 /64
  std::chrono::milliseconds head_timeout{10'000};   // a whole request head, from connecting or the previous reply
  std::chrono::milliseconds body_timeout{30'000};   // a whole body, from the end of its head
  std::chrono::milliseconds write_timeout{10'000};  // a whole reply
  std::size_t max_head_bytes = 16 << 10;
  std::size_t max_body_bytes = 1 << 20;           // after chunked decoding; compressed bodies are refused
  std::size_t max_buffered_bytes = 128 << 20;     // request bytes held across all connections
  int worker_threads = 4;                         // run handlers; reading and writing never take one
  std::size_t max_queued_requests = 256;          // complete requests waiting for a worker; beyond: 503
  int listen_backlog = 4096;                      // the kernel caps it at net.core.somaxconn
  RateLimit per_address{100, 200};                // requests per second, before authentication
  RateLimit per_key{20, 60};                      // signed requests per second, per public key
};

struct MarketServerOptions {
  std::filesystem::path db_path = "market.db";
  std::string host = "127.0.0.1";
  int port = 8470;  // 0: any free port; port() tells which
  std::int64_t lease_seconds = 300;
  std::int64_t verification_lease_seconds = 900;
  int max_attempts = 3;  // leases that end without a completion before a task fails
  std::int64_t fault_hold_seconds = 60;  // StorePolicy::fault_hold_seconds
  // The lowest agent version allowed to claim, advertised in GET /v1/health; empty: any.
  // A dotted version ("0.2.0"); the constructor throws Error(Config) on another value.
  std::string min_agent_version;
  ClientLimits limits;
  std::chrono::milliseconds expiry_interval{1000};  // how often the timer returns expired leases to the queue
  std::function<std::int64_t()> clock;              // unix seconds; empty: the system clock
};

class MarketServer {
 public:
  // Opens (or creates) the database. Throws Error(Io) or Error(Config).
  explicit MarketServer(MarketServerOptions options);
  ~MarketServer();  // stops
  MarketServer(const MarketServer&) = delete;
  MarketServer& operator=(const MarketServer&) = delete;

  // Binds and serves on background threads; returns once connections are accepted.
  // Throws Error(Network) when the address cannot be bound.
  void start();
  // Stops serving and waits for the threads. Safe to call twice, or without start().
  void stop();
  // start(), then blocks until stop() is called from another thread or `stop_requested` is set.
  void serve_forever(const std::atomic<bool>* stop_requested = nullptr);

  int port() const;         // the bound port, after start()
  std::string url() const;  // http://host:port

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace solver::market
