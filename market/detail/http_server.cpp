// The market's front (see http_server.h for why it is ours). Threads: one I/O thread owns the
// listening socket, every connection, the per-address counts and rates and the buffered-bytes
// total; workers only run the handler on a complete request and pass the serialised reply back
// through a queue and an eventfd. The invariant a reader could break: a connection is handed to
// a worker only whole (Working) and is never read, evicted or timed out while it is there, so
// its reply always finds it or finds it closed (ids are never reused, fds may be).
//
// A connection's phases: Reading (head, then body, each under its deadline) -> Working -> Writing
// -> Reading again (keep-alive) or Lingering (after a refusal or "Connection: close": the write side
// is shut and what the client still sends is read and dropped for a moment, so it sees the
// reply instead of a reset) -> closed.
#include "market/detail/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "market/detail/rate_limiter.h"

namespace solver::market::detail {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kListenerId = 0;  // epoll tags; connection ids start above them and are never reused
constexpr std::uint64_t kWakeId = 1;
constexpr auto kTick = std::chrono::milliseconds(100);   // deadlines are checked this often
constexpr auto kLinger = std::chrono::seconds(2);
constexpr std::size_t kLingerBytes = 64 << 10;  // dropped at most while lingering, then the connection is reset
// Accepted per readiness of the listening socket. Each new connection is read at once, and one
// whose request has not arrived yet is read on the next round, before a flood of later
// connections from its address could push it out as the oldest.
constexpr int kAcceptBatch = 16;
constexpr auto kAcceptPause = std::chrono::milliseconds(100);  // after accept() fails for want of descriptors
constexpr auto kSummaryInterval = std::chrono::seconds(60);
constexpr std::size_t kReadChunk = 64 << 10;

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

// RFC 9110's IMF-fixdate of now: every reply carries it (an origin server with a clock must), and
// `solver doctor` measures a rig's clock offset against it.
std::string http_date_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char text[40];
  const std::size_t length = std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return std::string(text, length);
}

std::string serialize(const Response& response, bool keep_alive, bool head_only) {
  std::string bytes = "HTTP/1.1 " + std::to_string(response.status) + " " + std::string(reason_phrase(response.status)) + "\r\n";
  bytes += "Date: " + http_date_now() + "\r\n";
  const bool has_body = response.status != 204;
  if (has_body) bytes += "Content-Type: application/json\r\nContent-Length: " + std::to_string(response.body.size()) + "\r\n";
  if (response.retry_after_seconds) bytes += "Retry-After: " + std::to_string(*response.retry_after_seconds) + "\r\n";
  bytes += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (has_body && !head_only) bytes += response.body;
  return bytes;
}

struct PeerAddress {
  std::string text;       // for logs
  std::string limit_key;  // what the per-address limits count: the IPv4 address or the IPv6 /64,
                          // since one subscriber usually holds a whole /64
};

PeerAddress peer_address(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = "";
  if (peer.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(peer).sin_addr, text, sizeof text);
    return {text, text};
  }
  if (peer.ss_family == AF_INET6) {
    const in6_addr& address = reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&address)) {
      in_addr v4{};
      std::memcpy(&v4, address.s6_addr + 12, sizeof v4);
      inet_ntop(AF_INET, &v4, text, sizeof text);
      return {text, text};
    }
    inet_ntop(AF_INET6, &address, text, sizeof text);
    in6_addr prefix = address;
    std::memset(prefix.s6_addr + 8, 0, 8);
    char key[INET6_ADDRSTRLEN] = "";
    inet_ntop(AF_INET6, &prefix, key, sizeof key);
    return {text, std::string(key) + "/64"};
  }
  return {"unknown", "unknown"};
}

enum class Phase { Reading, Working, Writing, Lingering };

struct Connection {
  std::uint64_t id;
  int fd;
  PeerAddress peer;
  RequestReader reader;
  Phase phase = Phase::Reading;
  std::string in;   // received and not yet parsed
  std::string out;  // the reply being written
  std::size_t out_sent = 0;
  bool keep_alive_after_reply = false;
  Clock::time_point waiting_since;  // when the current request began; eviction takes the oldest
  Clock::time_point deadline;       // of the current phase; none while Working
  std::size_t held_bytes = 0;       // counted against max_buffered_bytes
  std::size_t lingered_bytes = 0;
};

struct Job {
  std::uint64_t connection;
  Request request;
};

struct Reply {
  std::uint64_t connection;
  std::string bytes;
  bool keep_alive;
};

}  // namespace

Response error_response(int status, std::string_view code, std::string_view message) {
  const nlohmann::json body = {{"error", code}, {"message", message}};
  return {status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), std::nullopt};
}

struct HttpServer::Impl {
  Impl(ClientLimits limits_, RequestHandler handler_)
      : limits(limits_), handler(std::move(handler_)), address_rate(limits.per_address), read_buffer(kReadChunk, '\0') {}

  const ClientLimits limits;
  const RequestHandler handler;
  int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
  std::thread io_thread;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};

  // The I/O thread's alone.
  std::unordered_map<std::uint64_t, Connection> connections;
  std::unordered_map<std::string, std::size_t> connections_per_address;
  std::uint64_t next_id = kWakeId + 1;
  std::size_t buffered_bytes = 0;
  RateLimiter address_rate;
  std::string read_buffer;
  std::optional<Clock::time_point> accepting_resumes_at;
  std::map<std::string, std::uint64_t> turned_away;  // by reason, since the last summary
  Clock::time_point next_summary;

  // Shared with the workers.
  std::mutex jobs_mutex;
  std::condition_variable jobs_ready;
  std::deque<Job> jobs;
  bool workers_stopping = false;
  std::mutex replies_mutex;
  std::vector<Reply> replies;

  RequestLimits request_limits() const { return {limits.max_head_bytes, limits.max_body_bytes}; }

  int bind_and_listen(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string where = host + ":" + std::to_string(port);
    if (const int status = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); status != 0)
      throw Error(ErrorKind::Network, "market: cannot listen on " + where + ": " + gai_strerror(status));
    int last_errno = 0;
    for (const addrinfo* address = found; address && listen_fd < 0; address = address->ai_next) {
      const int fd = ::socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, address->ai_protocol);
      if (fd < 0) {
        last_errno = errno;
        continue;
      }
      // SO_REUSEADDR alone: a quick restart may bind, a second market on the same port may not.
      const int yes = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      if (::bind(fd, address->ai_addr, address->ai_addrlen) == 0 && ::listen(fd, limits.listen_backlog) == 0) {
        listen_fd = fd;
      } else {
        last_errno = errno;
        ::close(fd);
      }
    }
    freeaddrinfo(found);
    if (listen_fd < 0)
      throw Error(ErrorKind::Network, "market: cannot listen on " + where + ": " + std::strerror(last_errno) + " (is another market running there?)");
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &length);
    return ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port : reinterpret_cast<sockaddr_in&>(bound).sin_port);
  }

  void watch(int fd, std::uint64_t id, std::uint32_t events, int operation = EPOLL_CTL_MOD) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_fd, operation, fd, &event) != 0)
      throw Error(ErrorKind::Internal, std::string("market: epoll_ctl: ") + std::strerror(errno));
  }

  void wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_fd, &one, sizeof one);
  }

  void count_turned_away(const std::string& reason) { ++turned_away[reason]; }

  void set_held(Connection& connection, std::size_t bytes) {
    buffered_bytes = buffered_bytes - connection.held_bytes + bytes;
    connection.held_bytes = bytes;
  }

  // ---- the I/O thread ----

  void run_io() {
    std::vector<epoll_event> events(256);
    auto next_sweep = Clock::now() + kTick;
    next_summary = Clock::now() + kSummaryInterval;
    accepting_resumes_at.reset();
    turned_away.clear();
    while (!stopping) {
      const int count = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), static_cast<int>(kTick.count()));
      if (count < 0 && errno != EINTR) {
        log_error("market", "epoll_wait failed: {}; the market stops serving", std::strerror(errno));
        break;
      }
      for (int i = 0; i < count; ++i) on_event(events[static_cast<std::size_t>(i)]);
      const auto now = Clock::now();
      if (now >= next_sweep) {
        sweep(now);
        next_sweep = now + kTick;
      }
    }
    for (auto& [id, connection] : connections) ::close(connection.fd);
    connections.clear();
    connections_per_address.clear();
    buffered_bytes = 0;
  }

  void on_event(const epoll_event& event) {
    const auto now = Clock::now();
    const std::uint64_t id = event.data.u64;
    try {
      if (id == kListenerId) return accept_connections(now);
      if (id == kWakeId) return deliver_replies(now);
      const auto found = connections.find(id);
      if (found == connections.end()) return;
      Connection& connection = found->second;
      if (event.events & EPOLLERR) return close_connection(connection);
      switch (connection.phase) {
        case Phase::Reading: return receive(connection, now);
        case Phase::Writing: return flush(connection, now);
        case Phase::Lingering: return drain(connection);
        case Phase::Working:
          if (event.events & EPOLLHUP) close_connection(connection);  // its reply will find it gone
          return;
      }
    } catch (const std::exception& error) {
      // A bug or an exhausted resource, on one connection: it goes, the market stays.
      log_error("market", "connection {}: {}", id, error.what());
      if (const auto found = connections.find(id); found != connections.end()) close_connection(found->second);
    }
  }

  void accept_connections(Clock::time_point now) {
    for (int accepted = 0; accepted < kAcceptBatch; ++accepted) {
      sockaddr_storage peer{};
      socklen_t length = sizeof peer;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        // Out of descriptors (or kernel memory): free one by eviction if we can, else stop
        // accepting for a moment, since the listening socket stays readable and would spin.
        if ((errno == EMFILE || errno == ENFILE) && evict_oldest(nullptr)) continue;
        count_turned_away(std::string("accept_failed_") + std::strerror(errno));
        watch(listen_fd, kListenerId, 0);
        accepting_resumes_at = now + kAcceptPause;
        return;
      }
      PeerAddress address = peer_address(peer);
      if (!make_room(address.limit_key)) {
        count_turned_away("no_room");
        ::close(fd);
        continue;
      }
      const std::uint64_t id = next_id++;
      Connection& connection =
          connections.emplace(id, Connection{id, fd, std::move(address), RequestReader(request_limits())}).first->second;
      ++connections_per_address[connection.peer.limit_key];
      connection.waiting_since = now;
      connection.deadline = now + limits.head_timeout;
      watch(fd, id, EPOLLIN, EPOLL_CTL_ADD);
      receive(connection, now);  // an honest client's request is usually there already
    }
  }

  bool make_room(const std::string& limit_key) {
    const auto same_address = connections_per_address.find(limit_key);
    if (same_address != connections_per_address.end() && same_address->second >= limits.max_connections_per_address &&
        !evict_oldest(&limit_key))
      return false;
    return connections.size() < limits.max_connections || evict_oldest(nullptr);
  }

  // Closes the connection that has waited longest for its request (of that address, if given).
  // Connections with a worker or being written to are never evicted.
  bool evict_oldest(const std::string* limit_key) {
    Connection* oldest = nullptr;
    for (auto& [id, connection] : connections) {
      if (connection.phase == Phase::Working || connection.phase == Phase::Writing) continue;
      if (limit_key && connection.peer.limit_key != *limit_key) continue;
      if (!oldest || connection.waiting_since < oldest->waiting_since) oldest = &connection;
    }
    if (!oldest) return false;
    count_turned_away("evicted");
    close_connection(*oldest);
    return true;
  }

  void close_connection(Connection& connection) {
    ::close(connection.fd);  // also leaves the epoll set
    const auto same_address = connections_per_address.find(connection.peer.limit_key);
    if (--same_address->second == 0) connections_per_address.erase(same_address);
    set_held(connection, 0);
    connections.erase(connection.id);
  }

  void receive(Connection& connection, Clock::time_point now) {
    // While the head is incomplete, no more than it may still hold: a body behind a head that
    // will be refused (a compressed one, say) is then never copied, only dropped.
    const std::size_t head_room = limits.max_head_bytes + 4 - std::min(connection.in.size(), limits.max_head_bytes);
    const std::size_t wanted = connection.reader.head_done() ? read_buffer.size() : std::min(read_buffer.size(), head_room);
    const ssize_t received = ::recv(connection.fd, read_buffer.data(), wanted, 0);
    if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (received <= 0) return close_connection(connection);  // the client left, or reset
    if (buffered_bytes + static_cast<std::size_t>(received) > limits.max_buffered_bytes)
      return refuse(connection, {503, "busy", "the market is holding too many request bytes; retry shortly"}, 1, now);
    connection.in.append(read_buffer.data(), static_cast<std::size_t>(received));
    parse(connection, now);
  }

  void parse(Connection& connection, Clock::time_point now) {
    for (;;) {
      switch (connection.reader.read(connection.in)) {
        case RequestReader::Progress::NeedMore:
          set_held(connection, connection.in.size() + connection.reader.body_bytes());
          return;
        case RequestReader::Progress::Refused:
          return refuse(connection, connection.reader.refusal(), std::nullopt, now);
        case RequestReader::Progress::HeadDone:
          if (const std::optional<int> wait = address_rate.admit(connection.peer.limit_key, now))
            return refuse(connection,
                          {429, "rate_limited", "more than " + std::to_string(static_cast<int>(limits.per_address.per_second)) +
                                                    " requests per second from your address; retry in " + std::to_string(*wait) + " s"},
                          wait, now);
          connection.deadline = now + limits.body_timeout;
          if (connection.reader.expects_continue()) {
            static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
            if (::send(connection.fd, kContinue.data(), kContinue.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(kContinue.size()))
              return close_connection(connection);
          }
          break;
        case RequestReader::Progress::Complete:
          return dispatch(connection, now);
      }
    }
  }

  void dispatch(Connection& connection, Clock::time_point now) {
    {
      std::lock_guard lock(jobs_mutex);
      if (jobs.size() < limits.max_queued_requests) {
        Request request = connection.reader.take();
        request.remote_address = connection.peer.text;
        set_held(connection, connection.in.size() + request.body.size());  // until the reply is back
        jobs.push_back({connection.id, std::move(request)});
        connection.phase = Phase::Working;
      }
    }
    if (connection.phase != Phase::Working)
      return refuse(connection, {503, "busy", "the market has too many requests waiting; retry shortly"}, 1, now);
    watch(connection.fd, connection.id, 0);
    jobs_ready.notify_one();
  }

  void deliver_replies(Clock::time_point now) {
    std::uint64_t ignored = 0;
    [[maybe_unused]] const ssize_t read = ::read(wake_fd, &ignored, sizeof ignored);
    std::vector<Reply> ready;
    {
      std::lock_guard lock(replies_mutex);
      ready.swap(replies);
    }
    for (Reply& reply : ready) {
      const auto found = connections.find(reply.connection);
      if (found == connections.end()) continue;  // the client left meanwhile
      on_connection(found->second, [&] {
        set_held(found->second, found->second.in.size());
        start_reply(found->second, std::move(reply.bytes), reply.keep_alive, now);
      });
    }
  }

  // Answers a request the front turns down, then closes: after a refusal the rest of the
  // request cannot be trusted to say where the next one starts.
  void refuse(Connection& connection, const HttpRefusal& refusal, std::optional<int> retry_after_seconds, Clock::time_point now) {
    count_turned_away(refusal.code);
    log_debug("market", "{}: {} {}: {}", connection.peer.text, refusal.status, refusal.code, refusal.message);
    Response response = error_response(refusal.status, refusal.code, refusal.message);
    response.retry_after_seconds = retry_after_seconds;
    connection.in.clear();
    set_held(connection, 0);
    start_reply(connection, serialize(response, false, false), false, now);
  }

  void start_reply(Connection& connection, std::string bytes, bool keep_alive, Clock::time_point now) {
    connection.out = std::move(bytes);
    connection.out_sent = 0;
    connection.keep_alive_after_reply = keep_alive;
    connection.phase = Phase::Writing;
    connection.deadline = now + limits.write_timeout;
    flush(connection, now);
  }

  void flush(Connection& connection, Clock::time_point now) {
    while (connection.out_sent < connection.out.size()) {
      const ssize_t sent = ::send(connection.fd, connection.out.data() + connection.out_sent, connection.out.size() - connection.out_sent, MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return watch(connection.fd, connection.id, EPOLLOUT);
      if (sent < 0) return close_connection(connection);
      connection.out_sent += static_cast<std::size_t>(sent);
    }
    std::string().swap(connection.out);
    if (!connection.keep_alive_after_reply) return start_lingering(connection, now);
    connection.phase = Phase::Reading;
    connection.waiting_since = now;
    connection.deadline = now + limits.head_timeout;
    watch(connection.fd, connection.id, EPOLLIN);
    if (!connection.in.empty()) parse(connection, now);  // a request sent before this reply
  }

  void start_lingering(Connection& connection, Clock::time_point now) {
    ::shutdown(connection.fd, SHUT_WR);
    connection.phase = Phase::Lingering;
    connection.waiting_since = Clock::time_point::min();  // evicted before anyone still waiting for a reply
    connection.deadline = now + kLinger;
    std::string().swap(connection.in);
    set_held(connection, 0);
    watch(connection.fd, connection.id, EPOLLIN);
  }

  void drain(Connection& connection) {
    // MSG_TRUNC: TCP drops the bytes in the kernel instead of copying them out.
    const ssize_t received = ::recv(connection.fd, nullptr, kLingerBytes, MSG_TRUNC);
    if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (received > 0) connection.lingered_bytes += static_cast<std::size_t>(received);
    if (received <= 0 || connection.lingered_bytes > kLingerBytes) close_connection(connection);
  }

  void sweep(Clock::time_point now) {
    std::vector<std::uint64_t> due;
    for (const auto& [id, connection] : connections)
      if (connection.phase != Phase::Working && now >= connection.deadline) due.push_back(id);
    for (const std::uint64_t id : due) on_connection(connections.at(id), [&] { time_out(connections.at(id), now); });
    if (accepting_resumes_at && now >= *accepting_resumes_at) {
      watch(listen_fd, kListenerId, EPOLLIN);
      accepting_resumes_at.reset();
    }
    if (now >= next_summary) {
      log_summary();
      next_summary = now + kSummaryInterval;
    }
  }

  // Ends a connection whose deadline passed: with a 408 when a request was under way.
  void time_out(Connection& connection, Clock::time_point now) {
    if (connection.phase != Phase::Reading) {
      count_turned_away(connection.phase == Phase::Writing ? "reply_not_read" : "lingered");
      close_connection(connection);
    } else if (!connection.reader.started() && connection.in.empty()) {
      close_connection(connection);  // idle between requests: no one to tell
    } else if (!connection.reader.head_done()) {
      refuse(connection, {408, "request_timeout", "the request head did not arrive within " + std::to_string(limits.head_timeout.count()) + " ms"},
             std::nullopt, now);
    } else {
      refuse(connection, {408, "request_timeout", "the request body did not arrive within " + std::to_string(limits.body_timeout.count()) + " ms"},
             std::nullopt, now);
    }
  }

  // Runs `work` on one connection; an error there (a bug, an exhausted resource) closes that
  // connection, never the market, and never leaves it waiting for a reply that will not come.
  template <typename Work>
  void on_connection(Connection& connection, Work&& work) {
    const std::uint64_t id = connection.id;
    try {
      work();
    } catch (const std::exception& error) {
      log_error("market", "connection {}: {}", id, error.what());
      if (const auto found = connections.find(id); found != connections.end()) close_connection(found->second);
    }
  }

  // One line a minute at most while clients are being turned away, instead of one per refusal,
  // which a flood would turn into a flood of log lines.
  void log_summary() {
    if (turned_away.empty()) return;
    std::string counts;
    for (const auto& [reason, count] : turned_away) counts += (counts.empty() ? "" : ", ") + reason + " " + std::to_string(count);
    log_warn("market", "turned away in the last {} s: {} (open connections {})", kSummaryInterval.count(), counts, connections.size());
    turned_away.clear();
  }

  // ---- the workers ----

  void run_worker() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(jobs_mutex);
        jobs_ready.wait(lock, [this] { return workers_stopping || !jobs.empty(); });
        if (workers_stopping) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      Response response;
      try {
        response = handler(job.request);
      } catch (const std::exception& error) {
        log_error("market", "{} {}: internal error: {}", job.request.method, job.request.path, error.what());
        response = error_response(500, "internal", "internal error in the market; try again later");
      }
      Reply reply{job.connection, serialize(response, job.request.keep_alive, job.request.method == "HEAD"), job.request.keep_alive};
      {
        std::lock_guard lock(replies_mutex);
        replies.push_back(std::move(reply));
      }
      wake();
    }
  }
};

HttpServer::HttpServer(ClientLimits limits, RequestHandler handler) : impl_(std::make_unique<Impl>(limits, std::move(handler))) {}

HttpServer::~HttpServer() { stop(); }

int HttpServer::start(const std::string& host, int port) {
  Impl& impl = *impl_;
  const int bound_port = impl.bind_and_listen(host, port);
  impl.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  impl.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl.epoll_fd < 0 || impl.wake_fd < 0) {
    const std::string reason = std::strerror(errno);
    stop();
    throw Error(ErrorKind::Network, "market: cannot set up its event loop: " + reason);
  }
  impl.watch(impl.listen_fd, kListenerId, EPOLLIN, EPOLL_CTL_ADD);
  impl.watch(impl.wake_fd, kWakeId, EPOLLIN, EPOLL_CTL_ADD);
  impl.stopping = false;
  impl.workers_stopping = false;
  impl.io_thread = std::thread([&impl] { impl.run_io(); });
  for (int i = 0; i < impl.limits.worker_threads; ++i) impl.workers.emplace_back([&impl] { impl.run_worker(); });
  return bound_port;
}

void HttpServer::stop() {
  Impl& impl = *impl_;
  impl.stopping = true;
  if (impl.io_thread.joinable()) {
    impl.wake();
    impl.io_thread.join();
  }
  {
    std::lock_guard lock(impl.jobs_mutex);
    impl.workers_stopping = true;
    impl.jobs.clear();
  }
  impl.jobs_ready.notify_all();
  for (std::thread& worker : impl.workers) worker.join();
  impl.workers.clear();
  impl.replies.clear();
  for (int* fd : {&impl.listen_fd, &impl.epoll_fd, &impl.wake_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

}  // namespace solver::market::detail
