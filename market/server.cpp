// The market server: routes, request authentication (signature, clock window, per-key rate,
// nonce), body parsing, and the mapping of the store's refusals and errors to statuses. Nothing a
// client sends can crash it: every handler runs under one catch that answers with a JSON error.
// Connections, deadlines, sizes and per-address rates are the front's (market/detail/http_server.h).
#include "market/server.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <regex>
#include <thread>

#include "common/error.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/task.h"
#include "common/version.h"
#include "market/detail/http_server.h"
#include "market/detail/rate_limiter.h"
#include "market/store.h"
#include "net/market_protocol.h"

namespace solver::market {
namespace {

using nlohmann::json;

constexpr const char* kTaskId = "([0-9a-f]{16})";
constexpr const char* kJobId = "([0-9a-f]{32})";
constexpr std::size_t kTaskPageDefault = 100;  // GET /v1/tasks without ?limit=
constexpr std::size_t kTaskPageMax = 500;

std::int64_t system_unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Reply {
  int status = 200;
  json body;  // null: no body (204)
};

// A request after authentication: the id in its path, who signed it, its parsed body, the market's clock.
struct Call {
  const detail::Request& request;
  std::string id;   // the path's task or job id; empty for routes without one
  std::string key;  // empty for the one unsigned endpoint
  json body;
  std::int64_t now = 0;
};

// Messages may quote what a client sent (a header, a path), which need not be UTF-8: replaced, never thrown on.
std::string json_text(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// ?limit= of GET /v1/tasks: 1 to kTaskPageMax.
std::size_t page_limit(const detail::Request& request) {
  const std::optional<std::string> text = request.query_parameter("limit");
  if (!text) return kTaskPageDefault;
  const bool digits = !text->empty() && text->size() <= 6 && std::all_of(text->begin(), text->end(), [](unsigned char c) { return std::isdigit(c); });
  const std::size_t limit = digits ? std::stoul(*text) : 0;
  if (limit < 1 || limit > kTaskPageMax)
    throw Refusal(400, "bad_request", "limit: expected 1 to " + std::to_string(kTaskPageMax) + ", got \"" + *text + "\"");
  return limit;
}

// ?after= of GET /v1/tasks: a task id, or empty for the first page.
std::string page_after(const detail::Request& request) {
  const std::optional<std::string> after = request.query_parameter("after");
  if (!after) return "";
  if (!is_lower_hex(*after, 16))
    throw Refusal(400, "bad_request", "after: expected a task id (16 hex digits), got \"" + after->substr(0, 40) + "\"");
  return *after;
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

  struct Route {
    std::string method;
    std::regex path;
    bool is_signed;
    Handler handler;
  };

  explicit Impl(MarketServerOptions opts)
      : options(std::move(opts)),
        min_agent_version(parse_min_agent_version(options.min_agent_version)),
        store(options.db_path, StorePolicy{options.lease_seconds, options.verification_lease_seconds, options.max_attempts,
                                          options.fault_hold_seconds}),
        key_rate(options.limits.per_key),
        http(options.limits, [this](const detail::Request& request) { return respond(request); }) {}

  MarketServerOptions options;
  std::optional<Version> min_agent_version;
  Store store;
  detail::RateLimiter key_rate;
  std::vector<Route> routes;  // filled before the front starts, read-only after
  detail::HttpServer http;
  std::thread expiry;
  std::mutex lifecycle;  // start() and stop()
  std::mutex timer_mutex;
  std::condition_variable timer_wake;
  bool timer_stopping = false;
  std::atomic<bool> serving{false};
  int bound_port = 0;

  static std::optional<Version> parse_min_agent_version(const std::string& text) {
    if (text.empty()) return std::nullopt;
    try {
      return Version::parse(text, "--min-agent-version");
    } catch (const Error& error) {
      throw Error(ErrorKind::Config, error.what());
    }
  }

  std::int64_t now() const { return options.clock ? options.clock() : system_unix_seconds(); }

  // The key whose valid signature the request carries, within its rate, with a fresh nonce.
  // The rate is checked before the nonce is stored: storing is a disk write, and a client over
  // its rate should not get to make one.
  std::string authenticate(const detail::Request& request, std::int64_t now) {
    const auto header = [&](std::string_view name) { return std::string(request.header(name).value_or("")); };
    const net::SignedHeaders headers{header(net::kKeyHeader), header(net::kTimestampHeader), header(net::kNonceHeader),
                                     header(net::kSignatureHeader)};
    const net::RequestCheck check = net::verify_request(headers, request.method, request.target, request.body, now);
    if (!check.ok) throw Refusal(401, check.reason, check.message);
    if (const std::optional<int> wait = key_rate.admit(headers.key, std::chrono::steady_clock::now()))
      throw Refusal(429, "rate_limited",
                    "more than " + std::to_string(static_cast<int>(options.limits.per_key.per_second)) + " requests per second from key " +
                        short_key(headers.key) + "; retry in " + std::to_string(*wait) + " s",
                    wait);
    if (!store.remember_nonce(headers.key, headers.nonce, check.timestamp, now))
      throw Refusal(401, "replayed", "nonce " + headers.nonce + " was already used by this key; every request needs a fresh one");
    return headers.key;
  }

  // The profile of a worker that may claim work in `role`: registered with it, by an agent at
  // least min_agent_version (leases it already holds it may still finish).
  net::WorkerProfile worker_with_role(const std::string& key, const std::string& role) {
    std::optional<net::WorkerProfile> profile = store.worker(key);
    if (!profile) throw Refusal(403, "unregistered", "worker " + short_key(key) + " is not registered; POST /v1/workers first");
    if (std::find(profile->roles.begin(), profile->roles.end(), role) == profile->roles.end())
      throw Refusal(403, "role_missing", "worker " + short_key(key) + " did not register the role \"" + role + "\"");
    if (min_agent_version &&
        (profile->agent_version.empty() || Version::parse(profile->agent_version, "worker.agent_version") < *min_agent_version))
      throw Refusal(403, "agent_outdated",
                    "worker " + short_key(key) + " registered agent version " +
                        (profile->agent_version.empty() ? "(none)" : profile->agent_version) + "; this market accepts " +
                        min_agent_version->text() + " or newer: upgrade solver");
    return *profile;
  }

  void require_known(const std::string& key) {
    if (!store.is_known_key(key))
      throw Refusal(403, "unknown_key", "key " + short_key(key) + " has neither registered as a worker nor submitted a task");
  }

  // Runs on the front's workers, several at once.
  detail::Response respond(const detail::Request& request) {
    detail::Response response = route(request);
    log_debug("market", "{} {} {} -> {}", request.remote_address, request.method, request.path, response.status);
    return response;
  }

  detail::Response route(const detail::Request& request) {
    for (const Route& route : routes) {
      std::smatch match;
      if (route.method == request.method && std::regex_match(request.path, match, route.path))
        return handle(request, route, match.size() > 1 ? match[1].str() : std::string());
    }
    return detail::error_response(404, "not_found", "no endpoint " + request.method + " " + request.path);
  }

  detail::Response handle(const detail::Request& request, const Route& route, std::string id) {
    try {
      Call call{request, std::move(id), "", json(), now()};
      if (route.is_signed) call.key = authenticate(request, call.now);
      if (request.method == "POST") {
        try {
          call.body = request.body.empty() ? json::object() : parse_json_document(request.body, "the request body");
        } catch (const Error& error) {
          throw Refusal(400, "bad_json", error.what());
        }
        if (!call.body.is_object()) throw Refusal(400, "bad_json", "the request body must be a JSON object");
      }
      const Reply reply = route.handler(call);
      return {reply.status, reply.body.is_null() ? std::string() : json_text(reply.body), std::nullopt};
    } catch (const Refusal& refusal) {
      detail::Response refused = detail::error_response(refusal.status(), refusal.code(), refusal.what());
      refused.retry_after_seconds = refusal.retry_after_seconds();
      return refused;
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::Input) return detail::error_response(400, "bad_request", error.what());
      log_error("market", "{} {}: {} error: {}", request.method, request.path, error_kind_name(error.kind()), error.what());
      return detail::error_response(500, "internal", std::string(error_kind_name(error.kind())) + " error in the market; try again later");
    } catch (const std::exception& error) {
      log_error("market", "{} {}: internal error: {}", request.method, request.path, error.what());
      return detail::error_response(500, "internal", "internal error in the market; try again later");
    }
  }

  void get(const std::string& pattern, bool is_signed, Handler handler) {
    routes.push_back({"GET", std::regex(pattern), is_signed, std::move(handler)});
  }
  void post(const std::string& pattern, Handler handler) { routes.push_back({"POST", std::regex(pattern), true, std::move(handler)}); }

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
    entry.model_kind = name_of(task.model.kind);
    entry.max_memory_mb = task.budget.max_memory_mb;
    const bool created = store.submit_task(entry, call.now);
    return {created ? 201 : 200, {{"task_id", entry.task_id}, {"task_sha256", entry.task_sha256}}};
  }

  void add_routes() {
    get("/v1/health", false, [this](Call&) -> Reply {
      json health = {{"protocol", net::kMarketProtocol}, {"version", solver_version()}};
      if (min_agent_version) health["min_agent_version"] = min_agent_version->text();
      return {200, health};
    });
    post("/v1/workers", [this](Call& call) -> Reply {
      const net::WorkerProfile profile = net::parse_worker_profile(call.body, "body");
      store.register_worker(call.key, profile, call.now);
      // The devices the rig has taken out of work itself (a faulty GPU), as it says: for the market's operator.
      const json quarantined =
          profile.hardware.is_object() ? profile.hardware.value("quarantined", json::object()) : json::object();
      log_info("market", "worker {} ({}) registered: agent {}, roles {}, {} device(s), {} MB, models {}, quarantined {}",
               short_key(call.key), profile.name, profile.agent_version.empty() ? "(no version)" : profile.agent_version,
               json(profile.roles).dump(), profile.devices, profile.memory_mb, json(profile.model_kinds).dump(),
               quarantined.empty() ? std::string("none") : quarantined.dump().substr(0, 500));
      return {200, {{"worker", call.key}}};
    });
    post("/v1/tasks", [this](Call& call) { return submit(call); });
    get("/v1/tasks", true, [this](Call& call) -> Reply {
      require_known(call.key);
      const TaskPage page = store.list_tasks(page_after(call.request), page_limit(call.request));
      return {200, {{"tasks", page.tasks}, {"next", page.next ? json(*page.next) : json(nullptr)}}};
    });
    get(std::string("/v1/tasks/") + kTaskId, true, [this](Call& call) -> Reply {
      require_known(call.key);
      return {200, store.task_status(call.id)};
    });
    post("/v1/claims", [this](Call& call) -> Reply {
      const net::WorkerProfile profile = worker_with_role(call.key, "solve");
      std::optional<net::Lease> lease = store.claim_task(call.key, profile, call.now);
      if (!lease) return {204, json()};
      return {200, {{"lease", net::to_json(*lease)}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/heartbeat", [this](Call& call) -> Reply {
      const net::Heartbeat beat = net::parse_heartbeat(call.body, "body");
      return {200, net::to_json(store.heartbeat(call.id, call.key, beat, call.now))};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/complete", [this](Call& call) -> Reply {
      store.complete_task(call.id, call.key, net::parse_completion(call.body, "body"), call.now);
      return {200, {{"state", "completed"}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/fail", [this](Call& call) -> Reply {
      return {200, {{"state", store.fail_task(call.id, call.key, net::parse_failure_report(call.body, "body"), call.now)}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/release", [this](Call& call) -> Reply {
      return {200, {{"state", store.release_task(call.id, call.key, net::parse_release(call.body, "body"), call.now)}}};
    });
    post(std::string("/v1/tasks/") + kTaskId + "/cancel", [this](Call& call) -> Reply {
      store.cancel_task(call.id, call.key, call.now);
      return {200, {{"state", "cancelled"}}};
    });
    post("/v1/verifications/claims", [this](Call& call) -> Reply {
      worker_with_role(call.key, "verify");
      std::optional<net::VerificationJob> job = store.claim_verification(call.key, call.now);
      if (!job) return {204, json()};
      return {200, {{"job", net::to_json(*job)}}};
    });
    post(std::string("/v1/verifications/") + kJobId + "/decline", [this](Call& call) -> Reply {
      store.decline_verification(call.id, call.key, net::parse_decline_reason(call.body, "body"), call.now);
      return {200, {{"state", "declined"}}};
    });
    post(std::string("/v1/verifications/") + kJobId + "/verdict", [this](Call& call) -> Reply {
      const VerdictSummary verdict = net::parse_verdict(call.body, "body");
      store.record_verdict(call.id, call.key, verdict, call.now);
      return {200, {{"state", verdict.accepted ? "verified" : "rejected"}}};
    });
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

MarketServer::MarketServer(MarketServerOptions options) {
  const ClientLimits& limits = options.limits;
  for (const auto& [name, rate] : {std::pair{"per_address", limits.per_address}, std::pair{"per_key", limits.per_key}})
    if (!(rate.per_second > 0) || !(rate.burst >= 1))
      throw Error(ErrorKind::Config, std::string("market limits.") + name + ": per_second must be > 0 and burst >= 1, got " +
                                         std::to_string(rate.per_second) + " and " + std::to_string(rate.burst));
  if (limits.worker_threads < 1 || limits.max_connections < 1 || limits.max_connections_per_address < 1)
    throw Error(ErrorKind::Config, "market limits: worker_threads, max_connections and max_connections_per_address must be at least 1");
  impl_ = std::make_unique<Impl>(std::move(options));
  impl_->add_routes();
}

MarketServer::~MarketServer() { stop(); }

void MarketServer::start() {
  std::lock_guard lock(impl_->lifecycle);
  if (impl_->serving) return;
  const MarketServerOptions& options = impl_->options;
  impl_->bound_port = impl_->http.start(options.host, options.port);
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
