// The market server: routes, request authentication (signature, clock window, nonce), body
// parsing, and the mapping of the store's refusals and errors to statuses. Nothing a client
// sends can crash it: every handler runs under one catch that answers with a JSON error.
#include "market/server.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/task.h"
#include "common/version.h"
#include "market/store.h"
#include "net/market_protocol.h"

namespace solver::market {
namespace {

using nlohmann::json;

constexpr const char* kTaskId = "([0-9a-f]{16})";
constexpr const char* kJobId = "([0-9a-f]{32})";

std::int64_t system_unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Reply {
  int status = 200;
  json body;  // null: no body (204)
};

// A request after authentication: who signed it, its parsed body, the market's clock.
struct Call {
  const httplib::Request& request;
  std::string key;  // empty for the one unsigned endpoint
  json body;
  std::int64_t now = 0;
  std::string id() const { return request.matches[1]; }
};

// Messages may quote what a client sent (a header, a path), which need not be UTF-8: replaced, never thrown on.
std::string json_text(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

void write_error(httplib::Response& response, int status, const std::string& code, const std::string& message) {
  response.status = status;
  response.set_content(json_text({{"error", code}, {"message", message}}), "application/json");
}

// A relative path would be resolved against the submitter's folder, which the market cannot
// know; resolving it against / would silently name another file. Refused, naming the field.
void refuse_relative_locations(const json& value, const std::string& path) {
  if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      const std::string field = path + "." + key;
      if (key == "location" && item.is_string()) {
        std::string location = item.get<std::string>();
        if (location.starts_with("file://")) location.erase(0, 7);
        if (location.find("://") == std::string::npos && !location.starts_with("/"))
          throw Refusal(400, "bad_task", field + ": \"" + location + "\" is a relative path, which the market cannot resolve; "
                                                 "submit absolute paths or URLs (solver market submit does)");
      }
      refuse_relative_locations(item, field);
    }
  } else if (value.is_array()) {
    for (std::size_t i = 0; i < value.size(); ++i) refuse_relative_locations(value[i], path + "[" + std::to_string(i) + "]");
  }
}

std::string short_key(const std::string& key) { return key.substr(0, 12) + "…"; }

}  // namespace

struct MarketServer::Impl {
  using Handler = std::function<Reply(Call&)>;

  explicit Impl(MarketServerOptions opts)
      : options(std::move(opts)),
        store(options.db_path, StorePolicy{options.lease_seconds, options.verification_lease_seconds, options.max_attempts}) {}

  MarketServerOptions options;
  Store store;
  httplib::Server http;
  std::thread listener;
  std::thread expiry;
  std::mutex lifecycle;  // start() and stop()
  std::mutex timer_mutex;
  std::condition_variable timer_wake;
  bool timer_stopping = false;
  std::atomic<bool> serving{false};
  std::atomic<bool> listener_returned{false};
  int bound_port = 0;

  std::int64_t now() const { return options.clock ? options.clock() : system_unix_seconds(); }

  std::string authenticate(const httplib::Request& request, std::int64_t now) {
    const net::SignedHeaders headers{request.get_header_value(std::string(net::kKeyHeader)),
                                     request.get_header_value(std::string(net::kTimestampHeader)),
                                     request.get_header_value(std::string(net::kNonceHeader)),
                                     request.get_header_value(std::string(net::kSignatureHeader))};
    const net::RequestCheck check = net::verify_request(headers, request.method, request.target, request.body, now);
    if (!check.ok) throw Refusal(401, check.reason, check.message);
    if (!store.remember_nonce(headers.key, headers.nonce, check.timestamp, now))
      throw Refusal(401, "replayed", "nonce " + headers.nonce + " was already used by this key; every request needs a fresh one");
    return headers.key;
  }

  net::WorkerProfile worker_with_role(const std::string& key, const std::string& role) {
    std::optional<net::WorkerProfile> profile = store.worker(key);
    if (!profile) throw Refusal(403, "unregistered", "worker " + short_key(key) + " is not registered; POST /v1/workers first");
    if (std::find(profile->roles.begin(), profile->roles.end(), role) == profile->roles.end())
      throw Refusal(403, "role_missing", "worker " + short_key(key) + " did not register the role \"" + role + "\"");
    return *profile;
  }

  void require_known(const std::string& key) {
    if (!store.is_known_key(key))
      throw Refusal(403, "unknown_key", "key " + short_key(key) + " has neither registered as a worker nor submitted a task");
  }

  void handle(const httplib::Request& request, httplib::Response& response, bool is_signed, const Handler& handler) {
    try {
      Call call{request, "", json(), now()};
      if (is_signed) call.key = authenticate(request, call.now);
      if (request.method == "POST") {
        if (!json_depth_within(request.body))
          throw Refusal(400, "bad_json", "the request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        call.body = request.body.empty() ? json::object() : json::parse(request.body, nullptr, false);
        if (call.body.is_discarded()) throw Refusal(400, "bad_json", "the request body is not valid JSON");
        if (!call.body.is_object()) throw Refusal(400, "bad_json", "the request body must be a JSON object");
      }
      const Reply reply = handler(call);
      response.status = reply.status;
      if (!reply.body.is_null()) response.set_content(json_text(reply.body), "application/json");
    } catch (const Refusal& refusal) {
      write_error(response, refusal.status(), refusal.code(), refusal.what());
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::Input) {
        write_error(response, 400, "bad_request", error.what());
      } else {
        log_error("market", "{} {}: {} error: {}", request.method, request.path, error_kind_name(error.kind()), error.what());
        write_error(response, 500, "internal", std::string(error_kind_name(error.kind())) + " error in the market; try again later");
      }
    } catch (const std::exception& error) {
      log_error("market", "{} {}: internal error: {}", request.method, request.path, error.what());
      write_error(response, 500, "internal", "internal error in the market; try again later");
    }
    log_debug("market", "{} {} -> {}", request.method, request.path, response.status);
  }

  void get(const std::string& pattern, bool is_signed, Handler handler) {
    http.Get(pattern, [this, is_signed, handler = std::move(handler)](const httplib::Request& request, httplib::Response& response) {
      handle(request, response, is_signed, handler);
    });
  }
  void post(const std::string& pattern, Handler handler) {
    http.Post(pattern, [this, handler = std::move(handler)](const httplib::Request& request, httplib::Response& response) {
      handle(request, response, true, handler);
    });
  }

  Reply submit(Call& call) {
    ObjectReader reader(call.body, "body");
    const json& submitted = reader.raw("task");
    refuse_relative_locations(submitted, "task");
    Task task;
    try {
      task = parse_task(submitted, "/");
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::Input) throw Refusal(400, "bad_task", error.what());
      throw;
    }
    NewTask entry;
    entry.task = task_to_json(task);
    entry.task_sha256 = task_sha256(task);
    entry.task_id = sha256_hex(entry.task_sha256 + call.key).substr(0, 16);
    entry.submitter = call.key;
    entry.model_kind = task.model.kind;
    entry.max_memory_mb = task.budget.max_memory_mb;
    const bool created = store.submit_task(entry, call.now);
    return {created ? 201 : 200, {{"task_id", entry.task_id}, {"task_sha256", entry.task_sha256}}};
  }

  void add_routes() {
    get("/v1/health", false, [](Call&) -> Reply {
      return {200, {{"protocol", net::kMarketProtocol}, {"version", solver_version()}}};
    });
    post("/v1/workers", [this](Call& call) -> Reply {
      const net::WorkerProfile profile = net::parse_worker_profile(call.body, "body");
      store.register_worker(call.key, profile, call.now);
      log_info("market", "worker {} ({}) registered: roles {}, {} device(s), {} MB, models {}", short_key(call.key), profile.name,
               json(profile.roles).dump(), profile.devices, profile.memory_mb, json(profile.model_kinds).dump());
      return {200, {{"worker", call.key}}};
    });
    post("/v1/tasks", [this](Call& call) { return submit(call); });
    get("/v1/tasks", true, [this](Call& call) -> Reply {
      require_known(call.key);
      return {200, {{"tasks", store.list_tasks()}}};
    });
    get(std::string("/v1/tasks/") + kTaskId, true, [this](Call& call) -> Reply {
      require_known(call.key);
      return {200, store.task_status(call.id())};
    });
    post("/v1/claims", [this](Call& call) -> Reply {
      const net::WorkerProfile profile = worker_with_role(call.key, "solve");
      std::optional<net::Lease> lease = store.claim_task(call.key, profile, call.now);
      if (!lease) return {204, json()};
      return {200, {{"lease", net::to_json(*lease)}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/heartbeat", [this](Call& call) -> Reply {
      const net::Heartbeat beat = net::parse_heartbeat(call.body, "body");
      return {200, net::to_json(store.heartbeat(call.id(), call.key, beat, call.now))};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/complete", [this](Call& call) -> Reply {
      store.complete_task(call.id(), call.key, net::parse_completion(call.body, "body"), call.now);
      return {200, {{"state", "completed"}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/fail", [this](Call& call) -> Reply {
      return {200, {{"state", store.fail_task(call.id(), call.key, net::parse_failure_report(call.body, "body"), call.now)}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/cancel", [this](Call& call) -> Reply {
      store.cancel_task(call.id(), call.key, call.now);
      return {200, {{"state", "cancelled"}}};
    });
    post("/v1/verifications/claims", [this](Call& call) -> Reply {
      worker_with_role(call.key, "verify");
      std::optional<net::VerificationJob> job = store.claim_verification(call.key, call.now);
      if (!job) return {204, json()};
      return {200, {{"job", net::to_json(*job)}}};
    });
    post(std::string("/v1/verifications/") + kJobId + "/verdict", [this](Call& call) -> Reply {
      const net::Verdict verdict = net::parse_verdict(call.body, "body");
      store.record_verdict(call.id(), call.key, verdict, call.now);
      return {200, {{"state", verdict.accepted ? "verified" : "rejected"}}};
    });

    // Statuses httplib sets itself (no route, body too large, unreadable request) get a JSON body too.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& request, httplib::Response& response) {
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (response.status == 404)
        write_error(response, 404, "not_found", "no endpoint " + request.method + " " + request.path);
      else if (response.status == 413)
        write_error(response, 413, "body_too_large", "the request body exceeds the market's limit");
      else
        write_error(response, response.status, "http_" + std::to_string(response.status), "the request could not be handled");
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  void run_expiry_timer() {
    std::unique_lock lock(timer_mutex);
    while (!timer_wake.wait_for(lock, options.expiry_interval, [this] { return timer_stopping; })) {
      lock.unlock();
      try {
        store.expire_due(now());
      } catch (const Error& error) {
        log_warn("market", "returning expired leases to the queue failed: {}", error.what());
      }
      lock.lock();
    }
  }
};

MarketServer::MarketServer(MarketServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->http.set_payload_max_length(impl_->options.max_body_bytes);
  // httplib's default is SO_REUSEPORT, which lets a second market bind the same port and share
  // its connections; SO_REUSEADDR alone allows a quick restart but makes the second bind fail.
  impl_->http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  impl_->add_routes();
}

MarketServer::~MarketServer() { stop(); }

void MarketServer::start() {
  std::lock_guard lock(impl_->lifecycle);
  if (impl_->serving) return;
  const MarketServerOptions& options = impl_->options;
  const int port = options.port == 0 ? impl_->http.bind_to_any_port(options.host)
                                     : (impl_->http.bind_to_port(options.host, options.port) ? options.port : -1);
  if (port <= 0)
    throw Error(ErrorKind::Network, "market: cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                                        std::strerror(errno) + " (is another market running there?)");
  impl_->bound_port = port;
  impl_->listener_returned = false;
  impl_->listener = std::thread([this] {
    impl_->http.listen_after_bind();
    impl_->listener_returned = true;
  });
  // httplib ignores a stop() that comes before its accept loop runs, so wait until it does.
  while (!impl_->http.is_running() && !impl_->listener_returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->timer_stopping = false;
  impl_->expiry = std::thread([this] { impl_->run_expiry_timer(); });
  impl_->serving = true;
  log_info("market", "listening on {} (database {}, leases {} s)", url(), options.db_path.string(), options.lease_seconds);
}

void MarketServer::stop() {
  std::lock_guard lock(impl_->lifecycle);
  if (!impl_->serving) return;
  impl_->serving = false;
  impl_->http.stop();
  impl_->listener.join();
  {
    std::lock_guard timer_lock(impl_->timer_mutex);
    impl_->timer_stopping = true;
  }
  impl_->timer_wake.notify_all();
  impl_->expiry.join();
  log_info("market", "stopped");
}

void MarketServer::serve_forever(const std::atomic<bool>* stop_requested) {
  start();
  while (impl_->serving && !(stop_requested && stop_requested->load()))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop();
}

int MarketServer::port() const { return impl_->bound_port; }

std::string MarketServer::url() const { return "http://" + impl_->options.host + ":" + std::to_string(impl_->bound_port); }

}  // namespace solver::market
