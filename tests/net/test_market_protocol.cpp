// The market protocol's request signing and body codecs: the canonical string is exactly the
// documented one, a signature holds only for the request it was made for, and malformed bodies
// are errors naming the field.
#include <catch2/catch.hpp>

#include "common/keys.h"
#include "net/market_protocol.h"
#include "tests/test_support.h"

using namespace solver;
using namespace solver::net;
using nlohmann::json;

namespace {

constexpr std::int64_t kNow = 1'760'000'000;
const std::string kNonce = "00112233445566778899aabbccddeeff";

std::string error_message(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the canonical request string is the documented one", "[net][market]") {
  // sha256("{}") = 44136fa3..., computed independently (printf '{}' | sha256sum).
  CHECK(canonical_request("POST", "/v1/claims?x=1", "1760000000", kNonce, "{}") ==
        "solver-request-v1\nPOST\n/v1/claims?x=1\n1760000000\n" + kNonce +
            "\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  // An empty body hashes as the empty string.
  CHECK(canonical_request("GET", "/v1/tasks", "1", kNonce, "").ends_with("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

TEST_CASE("a signed request verifies, and any change to it does not", "[net][market]") {
  const SigningKey key = SigningKey::generate();
  const std::string body = R"({"lease_id":"abc","step":3})";
  const SignedHeaders headers = sign_request(key, "POST", "/v1/tasks/0123456789abcdef/heartbeat", body, kNow, kNonce);
  CHECK(headers.key == key.public_key_hex());
  CHECK(headers.timestamp == "1760000000");
  CHECK(headers.nonce == kNonce);
  CHECK(verify_signature(key.public_key_hex(),
                         canonical_request("POST", "/v1/tasks/0123456789abcdef/heartbeat", "1760000000", kNonce, body), headers.signature));

  const RequestCheck good = verify_request(headers, "POST", "/v1/tasks/0123456789abcdef/heartbeat", body, kNow + 10);
  REQUIRE(good.ok);
  CHECK(good.timestamp == kNow);

  auto reason = [&](const SignedHeaders& sent, std::string_view method, std::string_view path, std::string_view sent_body) {
    return verify_request(sent, method, path, sent_body, kNow).reason;
  };
  const std::string path = "/v1/tasks/0123456789abcdef/heartbeat";
  CHECK(reason(headers, "PUT", path, body) == "bad_signature");
  CHECK(reason(headers, "POST", "/v1/tasks/fedcba9876543210/heartbeat", body) == "bad_signature");
  CHECK(reason(headers, "POST", path + "?x=1", body) == "bad_signature");
  CHECK(reason(headers, "POST", path, R"({"lease_id":"abc","step":4})") == "bad_signature");

  SignedHeaders other_time = headers;
  other_time.timestamp = std::to_string(kNow + 1);
  CHECK(reason(other_time, "POST", path, body) == "bad_signature");
  SignedHeaders other_nonce = headers;
  other_nonce.nonce = "ffeeddccbbaa99887766554433221100";
  CHECK(reason(other_nonce, "POST", path, body) == "bad_signature");
  SignedHeaders other_key = headers;
  other_key.key = SigningKey::generate().public_key_hex();
  CHECK(reason(other_key, "POST", path, body) == "bad_signature");
}

TEST_CASE("requests outside the clock window, unsigned or with malformed headers are refused with a reason", "[net][market]") {
  const SigningKey key = SigningKey::generate();
  const SignedHeaders headers = sign_request(key, "GET", "/v1/tasks", "", kNow, kNonce);
  CHECK(verify_request(headers, "GET", "/v1/tasks", "", kNow + kRequestWindowSeconds).ok);
  CHECK(verify_request(headers, "GET", "/v1/tasks", "", kNow - kRequestWindowSeconds).ok);
  const RequestCheck late = verify_request(headers, "GET", "/v1/tasks", "", kNow + kRequestWindowSeconds + 1);
  CHECK(late.reason == "stale");
  CHECK_THAT(late.message, Catch::Contains("301 s"));
  CHECK(verify_request(headers, "GET", "/v1/tasks", "", kNow - kRequestWindowSeconds - 1).reason == "stale");

  SignedHeaders missing = headers;
  missing.signature.clear();
  CHECK(verify_request(missing, "GET", "/v1/tasks", "", kNow).reason == "unsigned");
  SignedHeaders not_hex = headers;
  not_hex.key = std::string(64, 'G');
  CHECK(verify_request(not_hex, "GET", "/v1/tasks", "", kNow).reason == "malformed_signature");
  SignedHeaders short_nonce = headers;
  short_nonce.nonce = "abc";
  CHECK(verify_request(short_nonce, "GET", "/v1/tasks", "", kNow).reason == "malformed_signature");
  for (const std::string timestamp : {"-5", "12x", "", "99999999999999999999"}) {
    SignedHeaders bad_time = headers;
    bad_time.timestamp = timestamp;
    CHECK(!verify_request(bad_time, "GET", "/v1/tasks", "", kNow).ok);
  }
}

TEST_CASE("nonces are 32 fresh hex digits", "[net][market]") {
  const std::string first = random_nonce();
  CHECK(first.size() == 32);
  CHECK(first.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(random_nonce() != first);
}

TEST_CASE("ids that could name a path are refused where a lease or a job is parsed", "[net][market]") {
  CHECK(is_protocol_id("0123456789abcdef"));
  CHECK(is_protocol_id("3f2b1c9e-0d4a-4c55-9a8e-6b1f2d3c4e5f"));
  CHECK(is_protocol_id("job_7"));
  CHECK(is_protocol_id(std::string(kMaxIdLength, 'a')));
  for (const std::string& hostile : std::vector<std::string>{"", "..", ".", "../../home", "/home/op", "a/b", "~", "-rf", "_x", ".hidden", "a b",
                                    "a\nb", std::string(kMaxIdLength + 1, 'a'), std::string("a\0b", 3)})
    CHECK_FALSE(is_protocol_id(hostile));

  const Lease honest{"0123456789abcdef", "lease-1", {{"id", "t"}}, std::string(64, 'c'), 300, kNow};
  for (const char* field : {"task_id", "lease_id"}) {
    json lease = to_json(honest);
    lease[field] = "../../home";
    CHECK_THAT(error_message([&] { parse_lease(lease, "lease"); }), Catch::Contains(std::string("lease.") + field + ": expected an id"));
  }
  const VerificationJob job{"job", "task", {{"id", "t"}}, std::string(64, 'c'), "ipfs://x", std::string(64, 'd'),
                            std::string(64, 'e'), {}, 600};
  for (const char* field : {"job_id", "task_id"}) {
    json hostile = to_json(job);
    hostile[field] = "/home/op";
    CHECK_THAT(error_message([&] { parse_verification_job(hostile, "job"); }), Catch::Contains(std::string("job.") + field + ": expected an id"));
  }
  json beat = to_json(Heartbeat{"../x", 1, 2, std::nullopt, {}});
  CHECK_THAT(error_message([&] { parse_heartbeat(beat, "body"); }), Catch::Contains("body.lease_id"));
}

TEST_CASE("protocol bodies round-trip through JSON and malformed ones name the field", "[net][market]") {
  Heartbeat beat;
  beat.lease_id = "lease-1";
  beat.step = 200;
  beat.total_steps = 1874;
  beat.loss = 0.5;
  beat.checkpoints = {{100, std::string(64, 'a')}, {200, std::string(64, 'b')}};
  const Heartbeat parsed = parse_heartbeat(to_json(beat), "body");
  CHECK(parsed.lease_id == "lease-1");
  CHECK(parsed.step == 200);
  CHECK(parsed.total_steps == 1874);
  CHECK(parsed.loss == 0.5);
  REQUIRE(parsed.checkpoints.size() == 2);
  CHECK(parsed.checkpoints[1].step == 200);
  CHECK(parsed.checkpoints[1].sha256 == std::string(64, 'b'));

  WorkerProfile profile{"gpu-box", {"solve", "verify"}, {{"gpus", json::array({"H100"})}}, 1, 81920, {"mlp", "cnn"}};
  const WorkerProfile worker = parse_worker_profile(to_json(profile), "body");
  CHECK(worker.roles == profile.roles);
  CHECK(worker.memory_mb == 81920);
  CHECK(worker.model_kinds == profile.model_kinds);
  CHECK(worker.hardware == profile.hardware);

  json lease = to_json(Lease{"0123456789abcdef", "lease-1", {{"id", "t"}}, std::string(64, 'c'), 300, kNow});
  lease.erase("task_id");
  CHECK(error_message([&] { parse_lease(lease, "lease"); }) == "lease.task_id: missing");
  CHECK(test::error_kind_of([&] { parse_lease(lease, "lease"); }) == ErrorKind::Input);

  json bad_role = to_json(profile);
  bad_role["roles"] = {"solve", "mine"};
  CHECK_THAT(error_message([&] { parse_worker_profile(bad_role, "body"); }), Catch::Contains("body.roles[1]: expected one of solve, verify"));
  json bad_commitment = to_json(beat);
  bad_commitment["checkpoints"][0]["sha256"] = "xyz";
  CHECK_THAT(error_message([&] { parse_heartbeat(bad_commitment, "body"); }), Catch::Contains("body.checkpoints[0].sha256"));
  json no_commitments = to_json(VerificationJob{"job", "task", {{"id", "t"}}, std::string(64, 'c'), "ipfs://x", std::string(64, 'd'),
                                                std::string(64, 'e'), {}, 600});
  CHECK(parse_verification_job(no_commitments, "job").commitments.empty());
  no_commitments.erase("commitments");
  CHECK(error_message([&] { parse_verification_job(no_commitments, "job"); }) == "job.commitments: missing");
  CHECK_THAT(error_message([] { parse_completion(json::array(), "body"); }), Catch::Contains("body: expected an object"));
}

TEST_CASE("a heartbeat's commitments and a verdict keep their documented wire form", "[net][market]") {
  Heartbeat beat;
  beat.lease_id = "lease-1";
  beat.checkpoints = {{100, std::string(64, 'a')}};
  CHECK(to_json(beat).at("checkpoints") == json::parse(R"([{"step": 100, "sha256": ")" + std::string(64, 'a') + R"("}])"));

  const VerdictSummary verdict{true, "replayed segments match", {{"segments_replayed", 2}}};
  const json body = to_json(verdict);
  CHECK(body == json{{"accepted", true}, {"reason", "replayed segments match"}, {"report", {{"segments_replayed", 2}}}});
  const VerdictSummary parsed = parse_verdict(body, "body");
  CHECK(parsed.accepted);
  CHECK(parsed.reason == verdict.reason);
  CHECK(parsed.report == verdict.report);
  CHECK(to_json(VerdictSummary{false, "unreadable", nullptr}).at("report") == json::object());  // a report is always an object
}

TEST_CASE("an agent's version travels in its registration, and the market's minimum in its health reply, both checked", "[net][market]") {
  WorkerProfile profile{"rig", {"solve"}, json::object(), 1, 8192, {"mlp"}};
  CHECK_FALSE(to_json(profile).contains("agent_version"));  // an agent too old to say stays silent
  CHECK(parse_worker_profile(to_json(profile), "body").agent_version.empty());
  profile.agent_version = "0.10.2";
  CHECK(parse_worker_profile(to_json(profile), "body").agent_version == "0.10.2");
  json bad = to_json(profile);
  bad["agent_version"] = "0.10.2-dev";
  CHECK_THAT(error_message([&] { parse_worker_profile(bad, "body"); }), Catch::Contains("body.agent_version: \"0.10.2-dev\" is not a version"));

  CHECK_FALSE(parse_min_agent_version({{"protocol", "solver-market/1"}}, "health"));
  CHECK_FALSE(parse_min_agent_version({{"min_agent_version", nullptr}}, "health"));
  CHECK(parse_min_agent_version({{"min_agent_version", "0.2.0"}}, "health")->text() == "0.2.0");
  CHECK_THAT(error_message([] { parse_min_agent_version({{"min_agent_version", "newest"}}, "health"); }),
             Catch::Contains("health.min_agent_version: \"newest\" is not a version"));
  CHECK_THAT(error_message([] { parse_min_agent_version({{"min_agent_version", 2}}, "health"); }),
             Catch::Contains("health.min_agent_version: expected a non-empty string, got 2"));
}
