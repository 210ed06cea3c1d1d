// The market under attack, measured in one run (docs/performance.md, "The market under attack"):
// health-check latency and signed-request throughput while the market is quiet, then again while
// 64 slowloris connections, 1000 idle sockets and 8 concurrent compressed-body bombs run against
// it; its resident memory before, at the peak and after; and whether every task it acknowledged
// during the attack is in its database afterwards.
//
// The market runs in a child process, so the memory measured is its own, with the default client
// limits except the two rates: every client here, honest or not, is 127.0.0.1, where the
// per-address rate would (rightly) refuse the honest client along with the attacker, and the
// per-key rate would measure a key's allowance instead of the market. Both are tested elsewhere
// (tests/market/test_market_hostile.cpp). Connection caps and eviction stay on, and are what the
// honest client shares its address with the attacker through.
//
//   market_under_attack [--seconds N] [--attacks slowloris,idle,bombs] [--attacker-nice N]
//     --seconds: each measurement's length (default 10); --attacks: which to run (default all
//     three); --attacker-nice: the attacking threads' nice value (default 19, see Attack)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/keys.h"
#include "common/log.h"
#include "market/server.h"
#include "market/store.h"
#include "net/http.h"
#include "net/market_client.h"

namespace {

using namespace solver;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kSlowlorisConnections = 64;
constexpr int kIdleSockets = 1000;
constexpr int kBombs = 8;
constexpr std::size_t kBombInflatedBytes = 400u << 20;  // ~400 KiB as sent
constexpr int kThroughputThreads = 4;

std::atomic<bool> g_child_stop{false};

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A line of /proc/PID/status in bytes ("VmRSS", "VmHWM").
std::int64_t proc_status_bytes(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with(field + ":")) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return 0;
}

void raise_descriptor_limit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2 * (kIdleSockets + kSlowlorisConnections + kBombs) + 200)
    throw Error(ErrorKind::Config, fmt::format("the descriptor limit is {}; this bench needs about {}", limit.rlim_cur,
                                               2 * (kIdleSockets + kSlowlorisConnections + kBombs) + 200));
}

// Starts the market in a child process; returns its pid and port.
std::pair<pid_t, int> start_market(const std::filesystem::path& db) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw Error(ErrorKind::Io, std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(ErrorKind::Io, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the bench, whatever ends it
    ::close(pipe_fds[0]);
    set_log_level(LogLevel::Warn);
    struct sigaction stop{};
    stop.sa_handler = [](int) { g_child_stop = true; };
    sigaction(SIGTERM, &stop, nullptr);
    try {
      market::MarketServerOptions options;
      options.db_path = db;
      options.port = 0;
      options.limits.per_address = {1e6, 1e6};
      options.limits.per_key = {1e6, 1e6};
      market::MarketServer server(options);
      server.start();
      const int port = server.port();
      [[maybe_unused]] const ssize_t written = ::write(pipe_fds[1], &port, sizeof port);
      ::close(pipe_fds[1]);
      server.serve_forever(&g_child_stop);
      std::_Exit(0);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "market: %s\n", error.what());
      std::_Exit(1);
    }
  }
  ::close(pipe_fds[1]);
  int port = 0;
  const bool got = ::read(pipe_fds[0], &port, sizeof port) == sizeof port;
  ::close(pipe_fds[0]);
  if (!got) throw Error(ErrorKind::Network, "the market child did not start");
  return {pid, port};
}

int connect_to(int port, bool blocking) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) return -1;
  if (blocking) {
    const timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 || (!blocking && errno == EINPROGRESS)) return fd;
  ::close(fd);
  return -1;
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

std::string gzip_of_zeros(std::size_t size) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    throw Error(ErrorKind::Internal, "deflateInit2 failed");
  const std::string zeros(1 << 20, '\0');
  std::string compressed;
  std::vector<char> out(1 << 16);
  for (std::size_t fed = 0; fed < size; fed += zeros.size()) {
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    stream.avail_in = static_cast<uInt>(zeros.size());
    const int flush = fed + zeros.size() >= size ? Z_FINISH : Z_NO_FLUSH;
    do {
      stream.next_out = reinterpret_cast<Bytef*>(out.data());
      stream.avail_out = static_cast<uInt>(out.size());
      deflate(&stream, flush);
      compressed.append(out.data(), out.size() - stream.avail_out);
    } while (stream.avail_out == 0);
  }
  deflateEnd(&stream);
  return compressed;
}

// The three attacks, each on its own thread, until destroyed.
class Attack {
 public:
  // Each attacking thread runs at `nice`: at 19 it stands in for an attacker on another machine,
  // whose CPU is not the market's, rather than taking turns with the market on this one's two cores.
  Attack(int port, std::string bomb, const std::string& which, int nice) : port_(port), bomb_(std::move(bomb)) {
    const auto start = [&](void (Attack::*attack)()) {
      threads_.emplace_back([this, attack, nice] {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
        (this->*attack)();
      });
    };
    if (which.find("slowloris") != std::string::npos) start(&Attack::slowloris);
    if (which.find("idle") != std::string::npos) start(&Attack::idle_sockets);
    if (which.find("bombs") != std::string::npos)
      for (int i = 0; i < kBombs; ++i) start(&Attack::bombard);
  }
  ~Attack() {
    stop_ = true;
    for (std::thread& thread : threads_) thread.join();
  }
  std::string summary() {
    std::lock_guard lock(mutex_);
    std::string statuses;
    for (const auto& [status, count] : bomb_statuses_) statuses += fmt::format("{}{}: {}", statuses.empty() ? "" : ", ", status, count);
    return fmt::format("slowloris connections opened {}, idle sockets opened {}, bombs sent {} ({})", slowloris_opened_.load(),
                       idle_opened_.load(), bombs_sent_.load(), statuses.empty() ? "no replies" : "replies " + statuses);
  }

 private:
  // A head sent one byte a second, reopened whenever the market closes it.
  void slowloris() {
    std::vector<int> fds(kSlowlorisConnections, -1);
    while (!stop_) {
      for (int& fd : fds) {
        if (fd < 0 || !send_all(fd, "X")) {
          if (fd >= 0) ::close(fd);
          fd = connect_to(port_, true);
          ++slowloris_opened_;
          if (fd >= 0) send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        }
      }
      for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(100ms);
    }
    for (const int fd : fds)
      if (fd >= 0) ::close(fd);
  }

  // Sockets that connect and say nothing, reopened as soon as the market closes one.
  void idle_sockets() {
    std::vector<pollfd> sockets(kIdleSockets);
    for (pollfd& socket : sockets) socket = {connect_to(port_, false), POLLIN, 0};
    idle_opened_ += kIdleSockets;
    while (!stop_) {
      if (::poll(sockets.data(), sockets.size(), 100) <= 0) continue;
      for (pollfd& socket : sockets) {
        if (socket.fd >= 0 && socket.revents == 0) continue;
        if (socket.fd >= 0) ::close(socket.fd);
        socket.fd = connect_to(port_, false);
        socket.revents = 0;
        ++idle_opened_;
      }
    }
    for (const pollfd& socket : sockets)
      if (socket.fd >= 0) ::close(socket.fd);
  }

  // A gzip body that inflates a thousandfold, sent whole, again and again.
  void bombard() {
    const std::string head = fmt::format(
        "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        "Content-Length: {}\r\n\r\n",
        bomb_.size());
    while (!stop_) {
      const int fd = connect_to(port_, true);
      if (fd < 0) continue;
      ++bombs_sent_;
      send_all(fd, head);
      send_all(fd, bomb_);
      char reply[256];
      const ssize_t received = ::recv(fd, reply, sizeof reply, 0);
      const std::string status = received >= 12 ? std::string(reply + 9, 3) : "none";
      ::close(fd);
      std::lock_guard lock(mutex_);
      ++bomb_statuses_[status];
    }
  }

  int port_;
  std::string bomb_;
  std::atomic<bool> stop_{false};
  std::atomic<long> slowloris_opened_{0}, idle_opened_{0}, bombs_sent_{0};
  std::mutex mutex_;
  std::map<std::string, long> bomb_statuses_;
  std::vector<std::thread> threads_;
};

struct Latency {
  double p50_ms = 0, p99_ms = 0;
  long count = 0, failures = 0;
};

// Sequential GET /v1/health for `duration`, each on a new connection (as the agent's client makes them).
Latency health_latency(const std::string& url, std::chrono::seconds duration) {
  std::vector<double> ms;
  long failures = 0;
  const auto started = Clock::now();
  while (Clock::now() - started < duration) {
    net::HttpRequest request;
    request.url = url + "/v1/health";
    request.timeout = 10s;
    const auto sent = Clock::now();
    try {
      if (net::perform(request).status != 200) ++failures;
    } catch (const Error&) {
      ++failures;
    }
    ms.push_back(seconds_since(sent) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  const auto at = [&](double quantile) { return ms[std::min(ms.size() - 1, static_cast<std::size_t>(quantile * ms.size()))]; };
  return {at(0.5), at(0.99), static_cast<long>(ms.size()), failures};
}

struct Throughput {
  double per_second = 0;
  long failures = 0;
};

// Signed GET /v1/tasks/{id} from kThroughputThreads keys at once, for `duration`.
Throughput signed_throughput(const std::string& url, const std::vector<std::pair<SigningKey, std::string>>& keys_and_tasks,
                             std::chrono::seconds duration) {
  std::atomic<long> done{0}, failures{0};
  std::vector<std::thread> threads;
  const auto started = Clock::now();
  for (const auto& [key, task_id] : keys_and_tasks) {
    threads.emplace_back([&, &key = key, &task_id = task_id] {
      const std::string path = "/v1/tasks/" + task_id;
      while (Clock::now() - started < duration) {
        net::HttpRequest request;
        request.url = url + path;
        request.timeout = 10s;
        request.headers = net::sign_request(key, "GET", path, "", unix_now(), net::random_nonce()).as_headers();
        try {
          if (net::perform(request).status == 200) ++done;
          else ++failures;
        } catch (const Error&) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return {static_cast<double>(done) / seconds_since(started), failures};
}

json task_with_seed(std::uint64_t seed) {
  json task = json::parse(read_file(std::filesystem::path(SOLVER_SOURCE_DIR) / "configs/tasks/fashion-mnist-mlp.json"));
  task["seed"] = seed;
  return task;
}

double mb(std::int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

int run(std::chrono::seconds duration, const std::string& attacks, int attacker_nice) {
  raise_descriptor_limit();
  char scratch_template[] = "/tmp/market-under-attack-XXXXXX";
  if (!::mkdtemp(scratch_template)) throw Error(ErrorKind::Io, std::string("mkdtemp: ") + std::strerror(errno));
  const std::filesystem::path scratch = scratch_template;
  // Forked before this process starts any thread or allocates the bomb.
  const auto [pid, port] = start_market(scratch / "market.db");
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  set_log_level(LogLevel::Error);  // the attacks' failed requests are counted, not logged

  net::RetryPolicy no_retries;
  no_retries.max_attempts = 1;
  std::vector<std::pair<SigningKey, std::string>> readers;
  for (int i = 0; i < kThroughputThreads; ++i) {
    SigningKey key = SigningKey::generate();
    std::string task_id = net::MarketClient({url, no_retries, 10s}, key).submit_task(task_with_seed(1000 + i));
    readers.emplace_back(std::move(key), std::move(task_id));
  }

  const std::int64_t rss_start = proc_status_bytes(pid, "VmRSS");
  const Latency quiet_health = health_latency(url, duration);
  const Throughput quiet_signed = signed_throughput(url, readers, duration);
  const std::int64_t rss_quiet = proc_status_bytes(pid, "VmRSS");
  const std::int64_t hwm_quiet = proc_status_bytes(pid, "VmHWM");

  const std::string bomb = gzip_of_zeros(kBombInflatedBytes);
  std::vector<std::string> acknowledged;
  long submit_failures = 0;
  Latency attack_health;
  Throughput attack_signed;
  std::string attack_summary;
  {
    Attack attack(port, bomb, attacks, attacker_nice);
    std::atomic<bool> submitting{true};
    std::thread submitter([&] {
      const SigningKey key = SigningKey::generate();
      net::MarketClient client({url, no_retries, 10s}, key);
      for (std::uint64_t seed = 1; submitting; ++seed) {
        try {
          acknowledged.push_back(client.submit_task(task_with_seed(seed)));
        } catch (const Error&) {
          ++submit_failures;
        }
      }
    });
    std::this_thread::sleep_for(2s);  // every attack under way
    attack_health = health_latency(url, duration);
    attack_signed = signed_throughput(url, readers, duration);
    submitting = false;
    submitter.join();
    attack_summary = attack.summary();
  }
  const std::int64_t hwm_attack = proc_status_bytes(pid, "VmHWM");
  std::this_thread::sleep_for(3s);  // lingering connections and deadlines run out
  const std::int64_t rss_after = proc_status_bytes(pid, "VmRSS");

  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  long lost = 0;
  {
    market::Store store(scratch / "market.db", market::StorePolicy{});
    for (const std::string& task_id : acknowledged) {
      try {
        store.task_status(task_id);
      } catch (const market::Refusal&) {
        ++lost;
      }
    }
  }
  std::filesystem::remove_all(scratch);

  const double p99_ratio = attack_health.p99_ms / quiet_health.p99_ms;
  // Against the resident size before the attack, so a peak reached while quiet counts as growth too.
  const std::int64_t growth = std::max(hwm_attack, hwm_quiet) - rss_quiet;
  std::printf("market under attack: %d slowloris connections, %d idle sockets, %d gzip bombs of %zu KiB (%zu MiB inflated), all from 127.0.0.1\n",
              kSlowlorisConnections, kIdleSockets, kBombs, bomb.size() >> 10, kBombInflatedBytes >> 20);
  std::printf("each measurement %lld s; health: sequential GET /v1/health, a new connection each; signed: %d keys at once, GET /v1/tasks/{id}\n",
              static_cast<long long>(duration.count()), kThroughputThreads);
  std::printf("attacks run: %s, at nice %d\n\n", attacks.c_str(), attacker_nice);
  std::printf("%-34s %12s %12s %9s  %s\n", "", "quiet", "attack", "ratio", "goal");
  std::printf("%-34s %12.2f %12.2f %8.2fx\n", "health p50 ms", quiet_health.p50_ms, attack_health.p50_ms, attack_health.p50_ms / quiet_health.p50_ms);
  std::printf("%-34s %12.2f %12.2f %8.2fx  <= 5x: %s\n", "health p99 ms", quiet_health.p99_ms, attack_health.p99_ms, p99_ratio,
              p99_ratio <= 5 ? "met" : "missed");
  std::printf("%-34s %12s %12s\n", "health checks (failed)", fmt::format("{} ({})", quiet_health.count, quiet_health.failures).c_str(),
              fmt::format("{} ({})", attack_health.count, attack_health.failures).c_str());
  std::printf("%-34s %12.1f %12.1f %8.2fx\n", "signed requests/s", quiet_signed.per_second, attack_signed.per_second,
              attack_signed.per_second / quiet_signed.per_second);
  std::printf("%-34s %12ld %12ld\n", "signed requests failed", quiet_signed.failures, attack_signed.failures);
  std::printf("%-34s %12.1f %12.1f %+8.1f MB  < 50 MB: %s\n", "market RSS MB (before / peak)", mb(rss_quiet), mb(hwm_attack), mb(growth),
              mb(growth) < 50 ? "met" : "missed");
  std::printf("%-34s %12.1f %12.1f\n", "market RSS MB (at start / after)", mb(rss_start), mb(rss_after));
  std::printf("%-34s %12s %12zu\n", "tasks acknowledged during attack", "", acknowledged.size());
  std::printf("%-34s %12s %12ld %9s  0: %s\n", "acknowledged tasks lost", "", lost, "", lost == 0 ? "met" : "missed");
  std::printf("%-34s %12s %12ld\n", "submissions that failed", "", submit_failures);
  std::printf("\nattack: %s\n", attack_summary.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::chrono::seconds duration{10};
  std::string attacks = "slowloris,idle,bombs";
  int attacker_nice = 19;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      duration = std::chrono::seconds(std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--attacks") == 0 && i + 1 < argc) {
      attacks = argv[++i];
    } else if (std::strcmp(argv[i], "--attacker-nice") == 0 && i + 1 < argc) {
      attacker_nice = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: market_under_attack [--seconds N] [--attacks slowloris,idle,bombs] [--attacker-nice N]\n");
      return 64;
    }
  }
  try {
    return run(duration, attacks, attacker_nice);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "market_under_attack: %s\n", error.what());
    return 2;
  }
}
