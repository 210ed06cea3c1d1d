// The market server and client together: an in-process MarketServer on a free port of
// 127.0.0.1 with its SQLite database in a scratch folder, driven by MarketClient and by raw
// signed (or forged) HTTP requests; and the client against a small misbehaving server.
#include <httplib.h>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "common/files.h"
#include "common/keys.h"
#include "common/sha256.h"
#include "common/task.h"
#include "market/server.h"
#include "market/store.h"
#include "net/http.h"
#include "net/market_client.h"
#include "tests/local_http_server.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::net;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

RetryPolicy quick_retries(int attempts = 3) {
  RetryPolicy policy;
  policy.max_attempts = attempts;
  policy.initial_delay = 10ms;
  policy.max_delay = 50ms;
  return policy;
}

json mlp_task(std::uint64_t seed) {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["seed"] = seed;
  return task;
}

WorkerProfile worker(std::vector<std::string> roles, std::int64_t memory_mb = 8192, std::vector<std::string> kinds = {"mlp", "cnn"}) {
  return {"test-worker", std::move(roles), {{"cpu", "test"}}, 1, memory_mb, std::move(kinds)};
}

// A market on a free port, its database in `db`; stopped on destruction.
struct Market {
  explicit Market(const std::filesystem::path& db, std::int64_t lease_seconds = 300, std::string min_agent_version = "") {
    market::MarketServerOptions options;
    options.db_path = db;
    options.port = 0;
    options.lease_seconds = lease_seconds;
    options.min_agent_version = std::move(min_agent_version);
    options.expiry_interval = 100ms;
    server = std::make_unique<market::MarketServer>(options);
    server->start();
  }
  MarketClient client(const SigningKey& key, std::chrono::milliseconds timeout = 10s) const {
    return MarketClient({server->url(), quick_retries(), timeout}, key);
  }
  std::unique_ptr<market::MarketServer> server;
};

Headers signed_headers(const SigningKey& key, const std::string& method, const std::string& path, const std::string& body,
                       std::int64_t timestamp, const std::string& nonce) {
  return sign_request(key, method, path, body, timestamp, nonce).as_headers();
}

HttpResponse send(const std::string& url, const std::string& method, const std::string& path, const std::string& body, Headers headers) {
  HttpRequest request;
  request.method = method;
  request.url = url + path;
  request.body = body;
  request.headers = std::move(headers);
  if (!body.empty()) request.headers.emplace_back("Content-Type", "application/json");  // as the client sends it
  request.timeout = 10s;
  return perform(request);
}

HttpResponse send_signed(const std::string& url, const SigningKey& key, const std::string& method, const std::string& path,
                         const std::string& body) {
  return send(url, method, path, body, signed_headers(key, method, path, body, unix_now(), random_nonce()));
}

std::string error_code(const HttpResponse& response) {
  const json body = json::parse(response.body, nullptr, false);
  return body.is_object() && body.contains("error") && body["error"].is_string() ? body["error"].get<std::string>() : "(no error code)";
}

// The status and code of the MarketError that `action` throws; {0, ""} when it throws none.
std::pair<long, std::string> refusal_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const MarketError& error) {
    return {error.status(), error.code()};
  }
  return {0, ""};
}

bool wait_for_state(MarketClient& client, const std::string& task_id, const std::string& state, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (client.task_status(task_id)["state"] == state) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

Heartbeat beat(const std::string& lease_id, std::int64_t step, std::vector<CheckpointCommitment> checkpoints = {}) {
  return {lease_id, step, 1874, 0.5, std::move(checkpoints)};
}

Completion completion(const std::string& lease_id, const std::string& bundle = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi") {
  return {lease_id, bundle, sha256_hex(bundle), std::string(128, 'a')};
}

std::string hash_of(const std::string& text) { return sha256_hex(text); }

}  // namespace

TEST_CASE("a task goes through its whole life on the market", "[market]") {
  test::ScratchDir dir("market-life");
  Market market(dir / "market.db");
  const SigningKey submitter_key = SigningKey::generate(), solver_key = SigningKey::generate(), verifier_key = SigningKey::generate();
  MarketClient submitter = market.client(submitter_key), solver = market.client(solver_key), verifier = market.client(verifier_key);

  CHECK(submitter.health()["protocol"] == "solver-market/1");
  solver.register_worker(worker({"solve"}));
  verifier.register_worker(worker({"verify"}));

  const json task = mlp_task(7);
  const Task parsed = parse_task(task, "/");
  const std::string task_id = submitter.submit_task(task);
  CHECK(task_id == sha256_hex(task_sha256(parsed) + submitter_key.public_key_hex()).substr(0, 16));
  CHECK(submitter.task_status(task_id)["state"] == "queued");
  CHECK_FALSE(verifier.claim_verification());

  const std::optional<Lease> lease = solver.claim_task();
  REQUIRE(lease);
  CHECK(lease->task_id == task_id);
  CHECK(lease->task == task_to_json(parsed));
  CHECK(lease->task_sha256 == task_sha256(parsed));
  CHECK(lease->lease_seconds == 300);
  CHECK(std::llabs(lease->expires_at - (unix_now() + 300)) <= 5);
  CHECK_FALSE(solver.claim_task());  // the only task is taken

  const std::vector<CheckpointCommitment> commitments = {{0, hash_of("checkpoint 0")}, {100, hash_of("checkpoint 100")}};
  const HeartbeatReply reply = solver.heartbeat(task_id, beat(lease->lease_id, 100, commitments));
  CHECK_FALSE(reply.cancel);
  CHECK(reply.expires_at >= lease->expires_at);
  json status = submitter.task_status(task_id);
  CHECK(status["state"] == "leased");
  CHECK(status["solver"] == solver_key.public_key_hex());
  CHECK(status["lease"]["lease_id"] == lease->lease_id);
  CHECK(status["progress"]["step"] == 100);
  CHECK(status["progress"]["total_steps"] == 1874);
  CHECK(status["progress"]["loss"] == 0.5);
  CHECK(status["commitments"].size() == 2);

  solver.complete_task(task_id, completion(lease->lease_id));
  status = submitter.task_status(task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["completion"]["bundle_address"] == completion(lease->lease_id).bundle_address);
  CHECK(status["completion"]["lease_id"] == lease->lease_id);

  const std::optional<VerificationJob> job = verifier.claim_verification();
  REQUIRE(job);
  CHECK(job->task_id == task_id);
  CHECK(job->task == task_to_json(parsed));
  CHECK(job->task_sha256 == task_sha256(parsed));
  CHECK(job->solver_key == solver_key.public_key_hex());
  CHECK(job->bundle_address == completion(lease->lease_id).bundle_address);
  CHECK(job->manifest_sha256 == completion(lease->lease_id).manifest_sha256);
  REQUIRE(job->commitments.size() == 2);
  CHECK(job->commitments[0].step == 0);
  CHECK(job->commitments[1].sha256 == hash_of("checkpoint 100"));
  CHECK_FALSE(verifier.claim_verification());  // one verifier at a time

  const VerdictSummary verdict{true, "2 segments replayed bit for bit", {{"replayed", 2}}};
  verifier.post_verdict(job->job_id, verdict);
  verifier.post_verdict(job->job_id, verdict);  // a retry after a lost reply
  CHECK(refusal_of([&] { verifier.post_verdict(job->job_id, VerdictSummary{false, "changed my mind", {}}); }) ==
        std::pair<long, std::string>{409, "verdict_conflict"});
  status = submitter.task_status(task_id);
  CHECK(status["state"] == "verified");
  REQUIRE(status["verdicts"].size() == 1);
  CHECK(status["verdicts"][0]["accepted"] == true);
  CHECK(status["verdicts"][0]["verifier"] == verifier_key.public_key_hex());
  CHECK(status["verdicts"][0]["report"]["replayed"] == 2);

  const json tasks = solver.list_tasks();
  REQUIRE(tasks.size() == 1);
  CHECK(tasks[0]["task_id"] == task_id);
  CHECK(tasks[0]["state"] == "verified");
}

TEST_CASE("the market refuses a solver verifying its own task", "[market]") {
  test::ScratchDir dir("market-own");
  Market market(dir / "market.db");
  const SigningKey solver_key = SigningKey::generate(), verifier_key = SigningKey::generate();
  MarketClient solver = market.client(solver_key), verifier = market.client(verifier_key);
  solver.register_worker(worker({"solve", "verify"}));
  verifier.register_worker(worker({"verify"}));
  const std::string task_id = solver.submit_task(mlp_task(1));
  const std::optional<Lease> lease = solver.claim_task();
  REQUIRE(lease);
  solver.complete_task(task_id, completion(lease->lease_id));

  CHECK_FALSE(solver.claim_verification());
  const std::optional<VerificationJob> job = verifier.claim_verification();
  REQUIRE(job);
  CHECK(job->task_id == task_id);
  // Nor can the solver pass a verdict on the job another key holds.
  CHECK(refusal_of([&] { solver.post_verdict(job->job_id, VerdictSummary{true, "", {}}); }) == std::pair<long, std::string>{409, "job_not_yours"});
}

TEST_CASE("a verifier that cannot judge a bundle declines the job: another verifier gets it, the decliner never again", "[market]") {
  test::ScratchDir dir("market-decline");
  Market market(dir / "market.db");
  const SigningKey solver_key = SigningKey::generate(), first_key = SigningKey::generate(), second_key = SigningKey::generate();
  MarketClient solver = market.client(solver_key), first = market.client(first_key), second = market.client(second_key);
  solver.register_worker(worker({"solve"}));
  first.register_worker(worker({"verify"}));
  second.register_worker(worker({"verify"}));
  const std::string task_id = solver.submit_task(mlp_task(1));
  const std::optional<Lease> lease = solver.claim_task();
  REQUIRE(lease);
  solver.complete_task(task_id, completion(lease->lease_id));

  const std::optional<VerificationJob> declined = first.claim_verification();
  REQUIRE(declined);
  CHECK(refusal_of([&] { second.decline_verification(declined->job_id, "not mine"); }) ==
        std::pair<long, std::string>{409, "job_not_yours"});
  first.decline_verification(declined->job_id, "runtime: the bundle was trained on cuda:0; no profile covers it");
  first.decline_verification(declined->job_id, "the same again");  // a retry changes nothing
  CHECK(solver.task_status(task_id)["state"] == "completed");      // neither verified nor rejected
  CHECK_FALSE(first.claim_verification());
  CHECK(refusal_of([&] { first.post_verdict(declined->job_id, VerdictSummary{true, "", {}}); }).first == 409);

  const std::optional<VerificationJob> job = second.claim_verification();
  REQUIRE(job);
  CHECK(job->task_id == task_id);
  second.post_verdict(job->job_id, VerdictSummary{true, "replayed segments match", {}});
  CHECK(solver.task_status(task_id)["state"] == "verified");
}

TEST_CASE("submitting and completing are idempotent, and a changed completion is refused", "[market]") {
  test::ScratchDir dir("market-idempotent");
  Market market(dir / "market.db");
  const SigningKey submitter_key = SigningKey::generate(), other_key = SigningKey::generate(), solver_key = SigningKey::generate();
  MarketClient submitter = market.client(submitter_key), other = market.client(other_key), solver = market.client(solver_key);
  solver.register_worker(worker({"solve"}));

  const std::string body = json{{"task", mlp_task(3)}}.dump();
  const HttpResponse first = send_signed(market.server->url(), submitter_key, "POST", "/v1/tasks", body);
  const HttpResponse again = send_signed(market.server->url(), submitter_key, "POST", "/v1/tasks", body);
  CHECK(first.status == 201);
  CHECK(again.status == 200);
  CHECK(json::parse(first.body)["task_id"] == json::parse(again.body)["task_id"]);
  const std::string task_id = json::parse(first.body)["task_id"];
  CHECK(submitter.submit_task(mlp_task(3)) == task_id);
  CHECK(other.submit_task(mlp_task(3)) != task_id);  // the id binds the submitter too
  CHECK(submitter.list_tasks().size() == 2);

  const std::optional<Lease> lease = solver.claim_task();
  REQUIRE(lease);
  REQUIRE(lease->task_id == task_id);  // oldest first
  solver.complete_task(task_id, completion(lease->lease_id));
  solver.complete_task(task_id, completion(lease->lease_id));
  CHECK(refusal_of([&] { solver.complete_task(task_id, completion(lease->lease_id, "ipfs://another")); }) ==
        std::pair<long, std::string>{409, "already_completed"});
  CHECK(refusal_of([&] { solver.heartbeat(task_id, beat(lease->lease_id, 10)); }) == std::pair<long, std::string>{409, "lease_lost"});
  CHECK(submitter.task_status(task_id)["completion"]["bundle_address"] == completion(lease->lease_id).bundle_address);
}

TEST_CASE("claims match model kind and memory, oldest first, failures requeue up to the attempt limit, and cancel stops a lease", "[market]") {
  test::ScratchDir dir("market-claims");
  Market market(dir / "market.db");
  const SigningKey submitter_key = SigningKey::generate(), small_key = SigningKey::generate(), cnn_key = SigningKey::generate(),
                   big_key = SigningKey::generate(), other_keys[2] = {SigningKey::generate(), SigningKey::generate()};
  MarketClient submitter = market.client(submitter_key), small = market.client(small_key), cnn_only = market.client(cnn_key),
               big = market.client(big_key);
  std::vector<MarketClient> others{market.client(other_keys[0]), market.client(other_keys[1])};
  small.register_worker(worker({"solve"}, 2048));  // the task's budget asks for 4096 MB
  cnn_only.register_worker(worker({"solve"}, 65536, {"cnn"}));
  big.register_worker(worker({"solve"}, 65536));
  for (MarketClient& other : others) other.register_worker(worker({"solve"}, 65536));

  const std::string first = submitter.submit_task(mlp_task(10));
  const std::string second = submitter.submit_task(mlp_task(11));
  CHECK_FALSE(small.claim_task());
  CHECK_FALSE(cnn_only.claim_task());

  // Three attempts that failed for unknown reasons, each on another worker: queued, queued, failed.
  for (int attempt = 1; attempt <= 3; ++attempt) {
    MarketClient& solver = attempt == 3 ? big : others[static_cast<std::size_t>(attempt - 1)];
    const std::optional<Lease> lease = solver.claim_task();
    REQUIRE(lease);
    REQUIRE(lease->task_id == first);
    solver.fail_task(first, lease->lease_id, "CUDA error: an illegal memory access", Fault::Unknown);
    solver.fail_task(first, lease->lease_id, "CUDA error: an illegal memory access", Fault::Unknown);  // a retry changes nothing
    const json status = submitter.task_status(first);
    CHECK(status["attempts"] == attempt);
    CHECK(status["state"] == (attempt < 3 ? "queued" : "failed"));
    CHECK(status["failure_reason"] == "unknown fault: CUDA error: an illegal memory access");
  }

  const std::optional<Lease> lease = big.claim_task();
  REQUIRE(lease);
  CHECK(lease->task_id == second);
  CHECK(refusal_of([&] { big.cancel_task(second); }) == std::pair<long, std::string>{403, "not_submitter"});
  submitter.cancel_task(second);
  submitter.cancel_task(second);
  const HeartbeatReply reply = big.heartbeat(second, beat(lease->lease_id, 5));
  CHECK(reply.cancel);
  CHECK_THAT(reply.reason, Catch::Contains("cancelled"));
  CHECK(submitter.task_status(second)["state"] == "cancelled");
  CHECK_FALSE(big.claim_task());
  CHECK(refusal_of([&] { submitter.cancel_task(first); }) == std::pair<long, std::string>{409, "not_cancellable"});
}

TEST_CASE("a gpt task goes to a worker that lists gpt, the kind every agent advertises", "[market]") {
  test::ScratchDir dir("market-gpt");
  Market market(dir / "market.db");
  const SigningKey submitter_key = SigningKey::generate(), classic_key = SigningKey::generate(), agent_key = SigningKey::generate();
  MarketClient submitter = market.client(submitter_key), classic = market.client(classic_key), agent = market.client(agent_key);
  classic.register_worker(worker({"solve"}));
  agent.register_worker(worker({"solve"}, 8192, {kModelKinds.begin(), kModelKinds.end()}));
  const std::string task_id = submitter.submit_task(task_to_json(load_task_file(test::source_dir() / "configs/tasks/text-gpt.json")));
  CHECK_FALSE(classic.claim_task());
  const std::optional<Lease> lease = agent.claim_task();
  REQUIRE(lease);
  CHECK(lease->task_id == task_id);
}

TEST_CASE("an expired lease returns its task to the queue, and its holder may renew it until someone else claims it", "[market]") {
  test::ScratchDir dir("market-expiry");
  Market market(dir / "market.db", 1);
  const SigningKey submitter_key = SigningKey::generate(), first_key = SigningKey::generate(), second_key = SigningKey::generate();
  MarketClient submitter = market.client(submitter_key), first = market.client(first_key), second = market.client(second_key);
  first.register_worker(worker({"solve"}));
  second.register_worker(worker({"solve"}));
  const std::string task_id = submitter.submit_task(mlp_task(5));

  const std::optional<Lease> lease = first.claim_task();
  REQUIRE(lease);
  first.heartbeat(task_id, beat(lease->lease_id, 10, {{0, hash_of("first 0")}}));
  REQUIRE(wait_for_state(submitter, task_id, "queued", 5s));  // the timer, with no request to trigger it
  CHECK(submitter.task_status(task_id)["attempts"] == 1);

  // Nobody claimed it meanwhile: the late heartbeat revives the lease.
  CHECK_FALSE(first.heartbeat(task_id, beat(lease->lease_id, 20)).cancel);
  json status = submitter.task_status(task_id);
  CHECK(status["state"] == "leased");
  CHECK(status["attempts"] == 0);

  REQUIRE(wait_for_state(submitter, task_id, "queued", 5s));
  const std::optional<Lease> taken = second.claim_task();
  REQUIRE(taken);
  CHECK(taken->task_id == task_id);
  CHECK(taken->lease_id != lease->lease_id);
  second.heartbeat(task_id, beat(taken->lease_id, 1, {{0, hash_of("second 0")}}));
  CHECK(refusal_of([&] { first.heartbeat(task_id, beat(lease->lease_id, 30)); }) == std::pair<long, std::string>{409, "lease_expired"});
  CHECK(refusal_of([&] { first.complete_task(task_id, completion(lease->lease_id)); }) == std::pair<long, std::string>{409, "lease_expired"});
  CHECK(refusal_of([&] { first.heartbeat(task_id, beat(taken->lease_id, 30)); }) == std::pair<long, std::string>{409, "lease_not_yours"});

  // Both leases' commitments stay on record, each under its own lease.
  status = submitter.task_status(task_id);
  std::set<std::string> leases;
  for (const json& commitment : status["commitments"]) leases.insert(commitment["lease_id"].get<std::string>());
  CHECK(leases == std::set<std::string>{lease->lease_id, taken->lease_id});
}

TEST_CASE("a market restarted on the same database loses nothing", "[market]") {
  test::ScratchDir dir("market-restart");
  const SigningKey submitter_key = SigningKey::generate(), solver_key = SigningKey::generate();
  std::string task_id;
  std::optional<Lease> lease;
  Headers used_headers;
  const std::string status_path = "/v1/tasks";
  {
    Market market(dir / "market.db");
    MarketClient submitter = market.client(submitter_key), solver = market.client(solver_key);
    solver.register_worker(worker({"solve"}));
    task_id = submitter.submit_task(mlp_task(9));
    lease = solver.claim_task();
    REQUIRE(lease);
    solver.heartbeat(task_id, beat(lease->lease_id, 100, {{0, hash_of("c0")}, {100, hash_of("c100")}}));
    used_headers = signed_headers(submitter_key, "GET", status_path, "", unix_now(), random_nonce());
    REQUIRE(send(market.server->url(), "GET", status_path, "", used_headers).status == 200);
  }

  Market market(dir / "market.db");
  MarketClient submitter = market.client(submitter_key), solver = market.client(solver_key);
  json status = submitter.task_status(task_id);
  CHECK(status["state"] == "leased");
  CHECK(status["lease"]["lease_id"] == lease->lease_id);
  CHECK(status["progress"]["step"] == 100);
  CHECK(status["commitments"].size() == 2);
  // The nonce window survived too: the request sent before the restart cannot be replayed.
  const HttpResponse replay = send(market.server->url(), "GET", status_path, "", used_headers);
  CHECK(replay.status == 401);
  CHECK(error_code(replay) == "replayed");
  // The lease, the worker and the commitments are all still there.
  CHECK(refusal_of([&] { solver.heartbeat(task_id, beat(lease->lease_id, 150, {{100, hash_of("rewritten")}})); }) ==
        std::pair<long, std::string>{409, "commitment_conflict"});
  solver.heartbeat(task_id, beat(lease->lease_id, 200, {{200, hash_of("c200")}}));
  solver.complete_task(task_id, completion(lease->lease_id));
  status = submitter.task_status(task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["commitments"].size() == 3);
}

WorkerProfile agent_of_version(std::string version) {
  WorkerProfile profile = worker({"solve", "verify"});
  profile.agent_version = std::move(version);
  return profile;
}

TEST_CASE("a market with a minimum agent version advertises it and lets only agents that new claim, older ones finish their leases", "[market]") {
  test::ScratchDir dir("market-min-version");
  const SigningKey submitter_key = SigningKey::generate(), old_key = SigningKey::generate(), unversioned_key = SigningKey::generate(),
                   new_key = SigningKey::generate();
  std::string task_id;
  std::optional<Lease> lease;
  {
    Market market(dir / "market.db");
    MarketClient submitter = market.client(submitter_key), old_agent = market.client(old_key);
    CHECK_FALSE(submitter.health().contains("min_agent_version"));
    CHECK_FALSE(submitter.min_agent_version());
    old_agent.register_worker(agent_of_version("0.1.0"));
    task_id = submitter.submit_task(mlp_task(31));
    lease = old_agent.claim_task();
    REQUIRE(lease);
  }

  Market market(dir / "market.db", 300, "0.2.0");
  MarketClient submitter = market.client(submitter_key), old_agent = market.client(old_key),
               unversioned = market.client(unversioned_key), new_agent = market.client(new_key);
  CHECK(submitter.health()["min_agent_version"] == "0.2.0");
  REQUIRE(submitter.min_agent_version());
  CHECK(submitter.min_agent_version()->text() == "0.2.0");
  submitter.submit_task(mlp_task(32));

  // Older agents, and agents too old to say their version, claim nothing: neither tasks nor verifications.
  unversioned.register_worker(worker({"solve", "verify"}));
  for (MarketClient* outdated : {&old_agent, &unversioned}) {
    CHECK(refusal_of([&] { outdated->claim_task(); }) == std::pair<long, std::string>{403, "agent_outdated"});
    CHECK(refusal_of([&] { outdated->claim_verification(); }) == std::pair<long, std::string>{403, "agent_outdated"});
  }
  const HttpResponse refused = send_signed(market.server->url(), old_key, "POST", "/v1/claims", "{}");
  CHECK(refused.status == 403);
  CHECK_THAT(refused.body, Catch::Contains("registered agent version 0.1.0; this market accepts 0.2.0 or newer: upgrade solver"));
  // The lease it already holds it may still finish.
  old_agent.heartbeat(task_id, beat(lease->lease_id, 100));
  old_agent.complete_task(task_id, completion(lease->lease_id));
  CHECK(submitter.task_status(task_id)["state"] == "completed");

  // 0.10.0 is newer than 0.2.0 (numbers, not text); the same version is accepted too.
  new_agent.register_worker(agent_of_version("0.10.0"));
  CHECK(new_agent.claim_task());
  CHECK(new_agent.claim_verification());
  old_agent.register_worker(agent_of_version("0.2.0"));  // upgraded
  CHECK(refusal_of([&] { old_agent.claim_task(); }).first == 0);  // nothing left to claim, and no refusal

  // A malformed version is refused: the market's own setting at start, an agent's at registration.
  market::MarketServerOptions bad;
  bad.db_path = dir / "other.db";
  bad.min_agent_version = "0.2-beta";
  CHECK_THROWS_WITH(market::MarketServer(bad), Catch::Contains("--min-agent-version: \"0.2-beta\" is not a version"));
  json body = to_json(worker({"solve"}));
  body["agent_version"] = "latest";
  const HttpResponse malformed = send_signed(market.server->url(), new_key, "POST", "/v1/workers", body.dump());
  CHECK(malformed.status == 400);
  CHECK_THAT(malformed.body, Catch::Contains("body.agent_version: \\\"latest\\\" is not a version"));
}

TEST_CASE("a checkpoint commitment cannot be changed, and a heartbeat that tries records nothing", "[market]") {
  test::ScratchDir dir("market-commitments");
  Market market(dir / "market.db");
  const SigningKey key = SigningKey::generate();
  MarketClient client = market.client(key);
  client.register_worker(worker({"solve"}));
  const std::string task_id = client.submit_task(mlp_task(4));
  const std::optional<Lease> lease = client.claim_task();
  REQUIRE(lease);
  client.heartbeat(task_id, beat(lease->lease_id, 100, {{100, hash_of("a")}}));
  client.heartbeat(task_id, beat(lease->lease_id, 100, {{100, hash_of("a")}}));  // the same again is fine
  CHECK(refusal_of([&] { client.heartbeat(task_id, beat(lease->lease_id, 200, {{200, hash_of("b")}, {100, hash_of("changed")}})); }) ==
        std::pair<long, std::string>{409, "commitment_conflict"});
  const json status = client.task_status(task_id);
  REQUIRE(status["commitments"].size() == 1);
  CHECK(status["commitments"][0]["sha256"] == hash_of("a"));
  CHECK(status["progress"]["step"] == 100);
}

TEST_CASE("unsigned, forged, altered, replayed and stale requests get 401, bad input 400, 403, 404 or 413", "[market]") {
  test::ScratchDir dir("market-auth");
  Market market(dir / "market.db");
  const std::string url = market.server->url();
  const SigningKey key = SigningKey::generate(), other = SigningKey::generate();
  const std::string body = json{{"task", mlp_task(2)}}.dump();

  CHECK(send(url, "GET", "/v1/health", "", {}).status == 200);

  const HttpResponse unsigned_request = send(url, "POST", "/v1/tasks", body, {});
  CHECK(unsigned_request.status == 401);
  CHECK(error_code(unsigned_request) == "unsigned");

  Headers forged = signed_headers(key, "POST", "/v1/tasks", body, unix_now(), random_nonce());
  forged[0].second = other.public_key_hex();  // claims to be another key
  const HttpResponse forged_request = send(url, "POST", "/v1/tasks", body, forged);
  CHECK(forged_request.status == 401);
  CHECK(error_code(forged_request) == "bad_signature");

  const HttpResponse altered = send(url, "POST", "/v1/tasks", body + " ", signed_headers(key, "POST", "/v1/tasks", body, unix_now(), random_nonce()));
  CHECK(altered.status == 401);
  CHECK(error_code(altered) == "bad_signature");

  const HttpResponse stale = send(url, "POST", "/v1/tasks", body, signed_headers(key, "POST", "/v1/tasks", body, unix_now() - 1000, random_nonce()));
  CHECK(stale.status == 401);
  CHECK(error_code(stale) == "stale");

  const Headers once = signed_headers(key, "POST", "/v1/tasks", body, unix_now(), random_nonce());
  CHECK(send(url, "POST", "/v1/tasks", body, once).status == 201);
  const HttpResponse replayed = send(url, "POST", "/v1/tasks", body, once);
  CHECK(replayed.status == 401);
  CHECK(error_code(replayed) == "replayed");

  const HttpResponse bad_json = send_signed(url, key, "POST", "/v1/tasks", "{\"task\": ");
  CHECK(bad_json.status == 400);
  CHECK(error_code(bad_json) == "bad_json");
  // A key named twice: which value counts would depend on the parser, so neither does.
  const std::string task_text = mlp_task(2).dump();
  const HttpResponse repeated = send_signed(url, key, "POST", "/v1/tasks", "{\"task\": " + task_text + ", \"task\": " + task_text + "}");
  CHECK(repeated.status == 400);
  CHECK(error_code(repeated) == "bad_json");
  CHECK_THAT(repeated.body, Catch::Contains("key \\\"task\\\" appears twice in one object"));

  json bad_task = mlp_task(2);
  bad_task["training"]["batch_size"] = -3;
  const HttpResponse refused_task = send_signed(url, key, "POST", "/v1/tasks", json{{"task", bad_task}}.dump());
  CHECK(refused_task.status == 400);
  CHECK(error_code(refused_task) == "bad_task");
  CHECK_THAT(refused_task.body, Catch::Contains("task.training.batch_size"));

  json relative_task = mlp_task(2);
  relative_task["dataset"]["train_images"]["location"] = "data/train-images.gz";
  const HttpResponse relative = send_signed(url, key, "POST", "/v1/tasks", json{{"task", relative_task}}.dump());
  CHECK(relative.status == 400);
  CHECK_THAT(relative.body, Catch::Contains("task.dataset.train_images.location"));

  const HttpResponse missing_field = send_signed(url, key, "POST", "/v1/workers", R"({"name": "x", "roles": ["solve"]})");
  CHECK(missing_field.status == 400);
  CHECK_THAT(missing_field.body, Catch::Contains("body.capabilities: missing"));

  const HttpResponse unknown = send_signed(url, key, "GET", "/v1/nothing", "");
  CHECK(unknown.status == 404);
  CHECK(error_code(unknown) == "not_found");
  CHECK(send_signed(url, key, "GET", "/v1/tasks/0123456789abcdef", "").status == 404);

  const HttpResponse unregistered = send_signed(url, other, "POST", "/v1/claims", "{}");
  CHECK(unregistered.status == 403);
  CHECK(error_code(unregistered) == "unregistered");
  const HttpResponse stranger = send_signed(url, other, "GET", "/v1/tasks", "");
  CHECK(stranger.status == 403);
  CHECK(error_code(stranger) == "unknown_key");
  MarketClient verifier = market.client(other);
  verifier.register_worker(worker({"verify"}));
  CHECK(refusal_of([&] { verifier.claim_task(); }) == std::pair<long, std::string>{403, "role_missing"});

  const std::string huge = json{{"name", std::string(2 << 20, 'x')}}.dump();
  const HttpResponse too_large = send_signed(url, key, "POST", "/v1/workers", huge);
  CHECK(too_large.status == 413);

  // Bytes that are not UTF-8, quoted back in the error message, do not break the reply.
  Headers garbled = signed_headers(key, "GET", "/v1/tasks", "", unix_now(), random_nonce());
  garbled[1].second = "\xff\xfe";
  const HttpResponse garbled_request = send(url, "GET", "/v1/tasks", "", garbled);
  CHECK(garbled_request.status == 401);
  CHECK(error_code(garbled_request) == "malformed_signature");
  const HttpResponse odd_path = send_signed(url, key, "GET", "/v1/%FF%FE", "");
  CHECK(odd_path.status == 404);
  CHECK(error_code(odd_path) == "not_found");

  // JSON nested deeper than any protocol body is refused before anything walks it.
  const std::string deep = "{\"task\": " + std::string(200'000, '[') + std::string(200'000, ']') + "}";
  const HttpResponse too_deep = send_signed(url, key, "POST", "/v1/tasks", deep);
  CHECK(too_deep.status == 400);
  CHECK(error_code(too_deep) == "bad_json");

  // After all that, the market still answers.
  CHECK(market.client(key).health()["protocol"] == "solver-market/1");

  // A second market cannot take the same port.
  market::MarketServerOptions same_port;
  same_port.db_path = dir / "other.db";
  same_port.port = market.server->port();
  market::MarketServer second(same_port);
  CHECK(test::error_kind_of([&] { second.start(); }) == ErrorKind::Network);
}

namespace {

// A market that misbehaves on purpose, on a free port; checks every request's signature.
class MisbehavingMarket {
 public:
  MisbehavingMarket() {
    server_.routes().Get("/v1/health", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      response.set_content("not json", "text/plain");
    });
    server_.routes().Post("/v1/claims", [this](const httplib::Request& request, httplib::Response& response) {
      if (record(request) == 1) {
        response.status = 503;
        response.set_content("busy", "text/plain");
        return;
      }
      const json lease = {{"task_id", "0123456789abcdef"}, {"lease_id", "lease"}, {"task", json::object()},
                          {"task_sha256", std::string(64, 'a')}, {"lease_seconds", 60}, {"expires_at", 1}};
      response.set_content(json{{"lease", lease}}.dump(), "application/json");
    });
    server_.routes().Post("/v1/verifications/claims", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      response.set_content(R"({"job": {"job_id": "j", "task_id": 5}})", "application/json");
    });
    server_.routes().Post(R"(/v1/tasks/(\w+)/heartbeat)", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      response.status = 409;
      response.set_content(R"({"error": "lease_expired", "message": "lease x expired"})", "application/json");
    });
    server_.routes().Get(R"(/v1/tasks/(\w+))", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
      response.set_content("{\"task_id\": " + deep + "}", "application/json");
    });
    server_.routes().Get("/v1/tasks", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      const auto deadline = std::chrono::steady_clock::now() + 3s;
      while (!released_ && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
      response.set_content(R"({"tasks": []})", "application/json");
    });
  }
  ~MisbehavingMarket() { released_ = true; }  // a held GET /v1/tasks returns, so that server_ can stop
  std::string url() const { return server_.url(); }
  int requests(const std::string& path) {
    std::lock_guard lock(mutex_);
    return static_cast<int>(std::count(paths_.begin(), paths_.end(), path));
  }
  std::vector<std::string> nonces() {
    std::lock_guard lock(mutex_);
    return nonces_;
  }
  bool all_signed() const { return all_signed_; }

 private:
  int record(const httplib::Request& request) {
    const SignedHeaders headers{request.get_header_value("X-Solver-Key"), request.get_header_value("X-Solver-Timestamp"),
                                request.get_header_value("X-Solver-Nonce"), request.get_header_value("X-Solver-Signature")};
    if (!verify_request(headers, request.method, request.target, request.body, unix_now()).ok) all_signed_ = false;
    std::lock_guard lock(mutex_);
    paths_.push_back(request.path);
    nonces_.push_back(headers.nonce);
    return static_cast<int>(std::count(paths_.begin(), paths_.end(), request.path));
  }

  std::atomic<bool> released_{false};
  std::atomic<bool> all_signed_{true};
  std::mutex mutex_;
  std::vector<std::string> paths_, nonces_;
  test::LocalHttpServer server_;  // declared last: stopped before the state its handlers use goes
};

std::string message_of(const std::function<void()>& action, bool* retryable = nullptr) {
  try {
    action();
  } catch (const Error& error) {
    if (retryable) *retryable = error.retryable();
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the client turns garbage, failures and hangs into clear errors, retrying only what is transient", "[market]") {
  MisbehavingMarket bad;
  const SigningKey key = SigningKey::generate();
  MarketClient client({bad.url(), quick_retries(2), 300ms}, key);

  bool retryable = true;
  CHECK_THAT(message_of([&] { client.health(); }, &retryable), Catch::Contains("market reply to GET /v1/health") && Catch::Contains("not json"));
  CHECK_FALSE(retryable);
  CHECK(bad.requests("/v1/health") == 1);

  const std::optional<Lease> lease = client.claim_task();  // a 503 first, then a good reply
  REQUIRE(lease);
  CHECK(lease->task_id == "0123456789abcdef");
  CHECK(bad.requests("/v1/claims") == 2);

  CHECK(message_of([&] { client.claim_verification(); }, &retryable) ==
        "market reply to POST /v1/verifications/claims: job.task_id: expected a non-empty string, got 5");
  CHECK_FALSE(retryable);

  CHECK(refusal_of([&] { client.heartbeat("0123456789abcdef", beat("lease", 1)); }) == std::pair<long, std::string>{409, "lease_expired"});
  CHECK(bad.requests("/v1/tasks/0123456789abcdef/heartbeat") == 1);

  CHECK_THAT(message_of([&] { client.task_status("0123456789abcdef"); }),
             Catch::StartsWith("market reply to GET /v1/tasks/0123456789abcdef: JSON nested deeper than 64 levels"));

  const auto started = std::chrono::steady_clock::now();
  const std::string hung = message_of([&] { client.list_tasks(); }, &retryable);
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK_THAT(hung, Catch::Contains("market GET /v1/tasks: gave up after 2 attempts"));
  CHECK(retryable);
  CHECK(waited < 2s);
  CHECK(bad.requests("/v1/tasks") == 2);

  CHECK(bad.all_signed());
  const std::vector<std::string> nonces = bad.nonces();
  CHECK(std::set<std::string>(nonces.begin(), nonces.end()).size() == nonces.size());  // each attempt signed afresh
}

TEST_CASE("failures carry their fault: the task's fails it, a worker's requeues it at no attempt's cost, never to that worker "
          "again, and repeated faults hold the worker back until it completes one",
          "[market]") {
  test::ScratchDir dir("market-faults");
  std::atomic<std::int64_t> offset{0};  // the market's clock runs ahead by this much
  market::MarketServerOptions options;
  options.db_path = dir / "market.db";
  options.port = 0;
  options.fault_hold_seconds = 10;
  options.clock = [&] { return unix_now() + offset.load(); };
  market::MarketServer server(options);
  server.start();
  const SigningKey submitter_key = SigningKey::generate(), broken_key = SigningKey::generate(), healthy_key = SigningKey::generate();
  MarketClient submitter({server.url(), quick_retries()}, submitter_key), broken({server.url(), quick_retries()}, broken_key),
      healthy({server.url(), quick_retries()}, healthy_key);
  broken.register_worker(worker({"solve"}));
  healthy.register_worker(worker({"solve"}));
  const std::string bad_data = submitter.submit_task(mlp_task(20));
  const std::string first = submitter.submit_task(mlp_task(21));
  const std::string second = submitter.submit_task(mlp_task(22));

  std::optional<Lease> lease = broken.claim_task();
  REQUIRE(lease);
  REQUIRE(lease->task_id == bad_data);
  broken.fail_task(bad_data, lease->lease_id, "non-finite loss at step 3", Fault::Task);
  CHECK(submitter.task_status(bad_data)["state"] == "failed");  // no rig would do better

  lease = broken.claim_task();
  REQUIRE(lease);
  REQUIRE(lease->task_id == first);
  broken.fail_task(first, lease->lease_id, "cannot write the bundle: disk full", Fault::Worker);
  json status = submitter.task_status(first);
  CHECK(status["state"] == "queued");
  CHECK(status["attempts"] == 0);
  CHECK(status["failure_reason"] == "worker fault: cannot write the bundle: disk full");

  lease = broken.claim_task();  // never the task it failed
  REQUIRE(lease);
  REQUIRE(lease->task_id == second);
  broken.fail_task(second, lease->lease_id, "cannot write the bundle: disk full", Fault::Worker);
  CHECK(refusal_of([&] { broken.claim_task(); }) == std::pair<long, std::string>{403, "held_back"});

  for (const std::string& task : {first, second}) {
    lease = healthy.claim_task();
    REQUIRE(lease);
    CHECK(lease->task_id == task);
    healthy.complete_task(task, completion(lease->lease_id, "ipfs://bundle-of-" + task));
  }

  offset = 11;  // the hold is over, and nothing is left that this worker has not failed
  CHECK_FALSE(broken.claim_task());
  const std::string third = submitter.submit_task(mlp_task(23));
  lease = broken.claim_task();
  REQUIRE(lease);
  broken.complete_task(third, completion(lease->lease_id));  // clears its count: one more fault holds nothing
  const std::string fourth = submitter.submit_task(mlp_task(24));
  lease = broken.claim_task();
  REQUIRE(lease);
  broken.fail_task(fourth, lease->lease_id, "CUDA error", Fault::Unknown);
  CHECK(submitter.task_status(fourth)["attempts"] == 1);  // unknown: counted
  const std::string fifth = submitter.submit_task(mlp_task(25));
  lease = broken.claim_task();
  REQUIRE(lease);
  CHECK(lease->task_id == fifth);
}

TEST_CASE("a released lease queues its task again at no cost to the task or its worker, which may claim it again, and "
          "only the holder may release, and only a leased task",
          "[market]") {
  test::ScratchDir dir("market-release");
  std::atomic<std::int64_t> offset{0};  // the market's clock runs ahead by this much
  market::MarketServerOptions options;
  options.db_path = dir / "market.db";
  options.port = 0;
  options.lease_seconds = 60;
  options.clock = [&] { return unix_now() + offset.load(); };
  market::MarketServer server(options);
  server.start();
  const SigningKey submitter_key = SigningKey::generate(), holder_key = SigningKey::generate(), other_key = SigningKey::generate();
  MarketClient submitter({server.url(), quick_retries()}, submitter_key), holder({server.url(), quick_retries()}, holder_key),
      other({server.url(), quick_retries()}, other_key);
  holder.register_worker(worker({"solve"}));
  other.register_worker(worker({"solve"}));
  const std::string task_id = submitter.submit_task(mlp_task(30));

  // Released three times in a row: were any a fault, the task would be withheld from this worker
  // after the first, and the worker held back after the second.
  for (int round = 1; round <= 3; ++round) {
    const std::optional<Lease> lease = holder.claim_task();
    REQUIRE(lease);
    REQUIRE(lease->task_id == task_id);
    holder.heartbeat(task_id, beat(lease->lease_id, 10 * round));
    CHECK(refusal_of([&] { other.release_task(task_id, lease->lease_id, "not mine"); }) ==
          std::pair<long, std::string>{409, "lease_not_yours"});
    CHECK(submitter.task_status(task_id)["state"] == "leased");
    holder.release_task(task_id, lease->lease_id, "held by the operator for 900 s");
    const json status = submitter.task_status(task_id);
    CHECK(status["state"] == "queued");
    CHECK(status["attempts"] == 0);
    CHECK(status["lease"].is_null());
    CHECK(status["failure_reason"].is_null());
    holder.release_task(task_id, lease->lease_id, "a retry after a lost reply");  // answered, changes nothing
    CHECK(refusal_of([&] { holder.heartbeat(task_id, beat(lease->lease_id, 99)); }) ==
          std::pair<long, std::string>{409, "lease_lost"});
  }

  // A task that is queued (its last lease expired) has nothing to release.
  const std::optional<Lease> lease = holder.claim_task();
  REQUIRE(lease);
  offset = 61;
  REQUIRE(wait_for_state(submitter, task_id, "queued", 5s));
  CHECK(refusal_of([&] { holder.release_task(task_id, lease->lease_id, "too late"); }) ==
        std::pair<long, std::string>{409, "not_leased"});
  CHECK(submitter.task_status(task_id)["attempts"] == 1);  // the expiry counted; the refused release changed nothing
}

// Runs SQL on a market database directly, as an older market (or a newer one) would have left it.
void run_sql(const std::filesystem::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  char* message = nullptr;
  const int status = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  INFO((message ? message : ""));
  sqlite3_free(message);
  sqlite3_close(db);
  REQUIRE(status == SQLITE_OK);
}

TEST_CASE("a version-1 market database is migrated with its workers and tasks, and a newer one is refused", "[market]") {
  test::ScratchDir dir("market-migration");
  const auto db = dir / "market.db";
  const SigningKey worker_key = SigningKey::generate();
  { market::Store store(db, market::StorePolicy{}); }
  // What a version-1 market left: no exclusions, no fault counts, and a worker registered then.
  run_sql(db,
          "DROP TABLE exclusions; ALTER TABLE workers DROP COLUMN faults_in_a_row; ALTER TABLE workers DROP COLUMN held_until; "
          "UPDATE schema_version SET version = 1; "
          "INSERT INTO workers (key, profile, registered_at, updated_at) VALUES ('" + worker_key.public_key_hex() + "', '" +
              to_json(worker({"solve"})).dump() + "', 1, 1);");
  {
    market::Store store(db, market::StorePolicy{});
    CHECK(store.worker(worker_key.public_key_hex()).has_value());  // kept
    market::NewTask task{"0123456789abcdef", std::string(64, 'a'), mlp_task(30), std::string(64, 'b'), "mlp", 0};
    REQUIRE(store.submit_task(task, 100));
    std::optional<Lease> lease = store.claim_task(worker_key.public_key_hex(), worker({"solve"}), 100);
    REQUIRE(lease);
    // The new columns and table work: a worker fault excludes the worker from the task.
    CHECK(store.fail_task(lease->task_id, worker_key.public_key_hex(), FailureReport{lease->lease_id, "disk full", Fault::Worker},
                          101) == "queued");
    CHECK_FALSE(store.claim_task(worker_key.public_key_hex(), worker({"solve"}), 102));
  }
  run_sql(db, "UPDATE schema_version SET version = 3;");
  const std::optional<Error> newer = test::error_of([&] { market::Store store(db, market::StorePolicy{}); });
  REQUIRE(newer);
  CHECK(newer->kind() == ErrorKind::Config);
  CHECK_THAT(newer->what(), Catch::Contains("has schema version 3; this market reads versions 1 to 2"));
}
