// The market client: signs each attempt afresh, retries only what is worth retrying, and reads
// replies strictly, so a lying or broken market is a clear error rather than a crash.
#include "net/market_client.h"

#include <algorithm>

#include "common/json_reader.h"
#include "common/keys.h"
#include "net/http.h"

namespace solver::net {
namespace {

using nlohmann::json;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string excerpt(const std::string& body) {
  std::string text = body.substr(0, 200);
  std::replace_if(text.begin(), text.end(), [](unsigned char c) { return c < 0x20; }, ' ');
  return text;
}

// Runs a reply parser; a missing or mistyped field becomes Error(Network) naming the endpoint.
template <typename Parse>
auto read_reply(const std::string& endpoint, Parse&& parse) {
  try {
    return parse();
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::Input) throw;
    throw Error(ErrorKind::Network, "market reply to " + endpoint + ": " + error.what(), false);
  }
}

std::string endpoint_name(std::string_view method, const std::string& path) { return std::string(method) + " " + path; }

}  // namespace

MarketError::MarketError(long status, std::string code, const std::string& message)
    : Error(ErrorKind::Network, message, false), status_(status), code_(std::move(code)) {}

MarketClient::MarketClient(MarketClientOptions options, const SigningKey& key) : options_(std::move(options)), key_(key) {
  const std::size_t scheme_end = options_.base_url.find("://");
  if (scheme_end == std::string::npos || scheme_end == 0)
    throw Error(ErrorKind::Config, "market URL \"" + options_.base_url + "\": expected http://host:port or https://host:port");
  const std::size_t path_start = options_.base_url.find('/', scheme_end + 3);
  origin_ = options_.base_url.substr(0, path_start);
  if (path_start != std::string::npos) path_prefix_ = options_.base_url.substr(path_start);
  while (!path_prefix_.empty() && path_prefix_.back() == '/') path_prefix_.pop_back();
  if (origin_.size() <= scheme_end + 3) throw Error(ErrorKind::Config, "market URL \"" + options_.base_url + "\" names no host");
}

MarketClient::Reply MarketClient::call(std::string_view method, const std::string& path, const json* body) {
  const std::string endpoint = endpoint_name(method, path);
  const std::string what = "market " + endpoint;
  const std::string signed_path = path_prefix_ + path;
  const std::string body_text = body ? body->dump() : std::string();
  HttpResponse response;
  with_retries(options_.retry, what, [&] {
    HttpRequest request;
    request.method = std::string(method);
    request.url = origin_ + signed_path;
    request.timeout = options_.timeout;
    request.body = body_text;
    request.headers = sign_request(key_, method, signed_path, body_text, unix_now(), random_nonce()).as_headers();
    if (body) request.headers.emplace_back("Content-Type", "application/json");
    response = perform(request);
    if (is_transient_status(response.status)) throw_unless_success(response, what);
  });

  if (response.status >= 200 && response.status < 300) {
    if (response.status == 204) return {response.status, json()};
    json parsed;
    try {
      parsed = parse_json_document(response.body, "market reply to " + endpoint);
    } catch (const Error& error) {
      throw Error(ErrorKind::Network, std::string(error.what()) + ", got \"" + excerpt(response.body) + "\"", false);
    }
    if (!parsed.is_object())
      throw Error(ErrorKind::Network,
                  "market reply to " + endpoint + " (HTTP " + std::to_string(response.status) + "): expected a JSON object, got \"" + excerpt(response.body) + "\"",
                  false);
    return {response.status, std::move(parsed)};
  }

  // The market explains a refusal as {"error": code, "message": sentence}; anything else is quoted.
  std::string code = "http_" + std::to_string(response.status);
  std::string message = excerpt(response.body);
  json parsed;
  try {
    parsed = parse_json_document(response.body, "market refusal");
  } catch (const Error&) {  // not the market's {"error", "message"}: quoted as it came
  }
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()) {
    code = parsed["error"].get<std::string>();
    message = parsed.contains("message") && parsed["message"].is_string() ? parsed["message"].get<std::string>() : std::string();
  }
  throw MarketError(response.status, code, what + ": HTTP " + std::to_string(response.status) + " " + code + (message.empty() ? "" : ": " + message));
}

json MarketClient::health() { return call("GET", "/v1/health", nullptr).body; }

std::optional<Version> MarketClient::min_agent_version() {
  const json reply = health();
  return read_reply("GET /v1/health", [&] { return parse_min_agent_version(reply, "reply"); });
}

void MarketClient::register_worker(const WorkerProfile& profile) {
  const json body = to_json(profile);
  const Reply reply = call("POST", "/v1/workers", &body);
  const std::string worker = read_reply("POST /v1/workers", [&] { return ObjectReader(reply.body, "reply").string("worker"); });
  if (worker != key_.public_key_hex())
    throw Error(ErrorKind::Network, "market reply to POST /v1/workers: registered worker " + worker + ", expected our key " + key_.public_key_hex(), false);
}

std::string MarketClient::submit_task(const json& task) {
  const json body = {{"task", task}};
  const Reply reply = call("POST", "/v1/tasks", &body);
  return read_reply("POST /v1/tasks", [&] {
    ObjectReader reader(reply.body, "reply");
    reader.sha256("task_sha256");
    return reader.string("task_id");
  });
}

std::optional<Lease> MarketClient::claim_task() {
  const json body = json::object();
  const Reply reply = call("POST", "/v1/claims", &body);
  if (reply.status == 204) return std::nullopt;
  return read_reply("POST /v1/claims", [&] { return parse_lease(ObjectReader(reply.body, "reply").raw("lease"), "lease"); });
}

HeartbeatReply MarketClient::heartbeat(const std::string& task_id, const Heartbeat& beat) {
  const std::string path = "/v1/tasks/" + url_encode(task_id) + "/heartbeat";
  const json body = to_json(beat);
  const Reply reply = call("POST", path, &body);
  return read_reply("POST " + path, [&] { return parse_heartbeat_reply(reply.body, "reply"); });
}

void MarketClient::complete_task(const std::string& task_id, const Completion& completion) {
  const json body = to_json(completion);
  call("POST", "/v1/tasks/" + url_encode(task_id) + "/complete", &body);
}

void MarketClient::fail_task(const std::string& task_id, const std::string& lease_id, const std::string& reason, Fault fault) {
  const json body = to_json(FailureReport{lease_id, reason, fault});
  call("POST", "/v1/tasks/" + url_encode(task_id) + "/fail", &body);
}

void MarketClient::release_task(const std::string& task_id, const std::string& lease_id, const std::string& reason) {
  const json body = to_json(Release{lease_id, reason});
  call("POST", "/v1/tasks/" + url_encode(task_id) + "/release", &body);
}

void MarketClient::cancel_task(const std::string& task_id) {
  const json body = json::object();
  call("POST", "/v1/tasks/" + url_encode(task_id) + "/cancel", &body);
}

std::optional<VerificationJob> MarketClient::claim_verification() {
  const json body = json::object();
  const Reply reply = call("POST", "/v1/verifications/claims", &body);
  if (reply.status == 204) return std::nullopt;
  return read_reply("POST /v1/verifications/claims",
                    [&] { return parse_verification_job(ObjectReader(reply.body, "reply").raw("job"), "job"); });
}

void MarketClient::post_verdict(const std::string& job_id, const VerdictSummary& verdict) {
  const json body = to_json(verdict);
  call("POST", "/v1/verifications/" + url_encode(job_id) + "/verdict", &body);
}

void MarketClient::decline_verification(const std::string& job_id, const std::string& reason) {
  const json body = {{"reason", reason}};
  call("POST", "/v1/verifications/" + url_encode(job_id) + "/decline", &body);
}

json MarketClient::task_status(const std::string& task_id) {
  const std::string path = "/v1/tasks/" + url_encode(task_id);
  json status = call("GET", path, nullptr).body;
  read_reply("GET " + path, [&] {
    ObjectReader reader(status, "reply");
    reader.string("task_id");
    return reader.string("state");
  });
  return status;
}

json MarketClient::list_tasks() {
  // The market answers a page at a time (100 tasks); "next" names the last one while more follow.
  // A market that keeps answering "next" cannot hold the client forever: a repeated cursor or
  // more than kMaxListedTasks tasks is an error.
  constexpr std::size_t kMaxListedTasks = 1'000'000;
  json tasks = json::array();
  std::string after;
  for (;;) {
    const std::string path = after.empty() ? std::string("/v1/tasks") : "/v1/tasks?after=" + url_encode(after);
    const Reply reply = call("GET", path, nullptr);
    const std::string next = read_reply("GET " + path, [&] {
      ObjectReader reader(reply.body, "reply");
      for (const json& task : reader.array("tasks")) tasks.push_back(task);
      return reader.has("next") && !reply.body["next"].is_null() ? reader.string("next") : std::string();
    });
    if (next.empty()) return tasks;
    if (next == after || tasks.size() > kMaxListedTasks)
      throw Error(ErrorKind::Network, "market reply to GET " + path + ": next: \"" + next + "\" " +
                                          (next == after ? "repeats the cursor just used" : "after more than a million tasks"),
                  false);
    after = next;
  }
}

}  // namespace solver::net
