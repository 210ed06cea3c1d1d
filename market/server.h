// The reference market server (docs/market-protocol.md): HTTP + JSON over cpp-httplib, state in
// SQLite (market/store.h). A plain class, so `solver market serve` and `solver agent --local`
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

struct MarketServerOptions {
  std::filesystem::path db_path = "market.db";
  std::string host = "127.0.0.1";
  int port = 8470;  // 0: any free port; port() tells which
  std::int64_t lease_seconds = 300;
  std::int64_t verification_lease_seconds = 900;
  int max_attempts = 3;  // leases that end without a completion before a task fails
  std::size_t max_body_bytes = 1 << 20;
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
