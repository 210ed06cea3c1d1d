// The market protocol (docs/market-protocol.md), shared by the client and the server: how a
// request is signed and checked, and the JSON bodies of the endpoints. Parsing is strict about
// what it needs (a missing or mistyped field is an error naming it, "lease.task_id: missing")
// and ignores fields it does not know, so a newer peer can add some.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/records.h"
#include "common/version.h"
#include "net/http.h"

namespace solver {
class SigningKey;
}

namespace solver::net {

inline constexpr std::string_view kMarketProtocol = "solver-market/1";
inline constexpr std::string_view kKeyHeader = "X-Solver-Key";
inline constexpr std::string_view kTimestampHeader = "X-Solver-Timestamp";
inline constexpr std::string_view kNonceHeader = "X-Solver-Nonce";
inline constexpr std::string_view kSignatureHeader = "X-Solver-Signature";
// A request whose timestamp is further than this from the market's clock is refused as stale;
// the market remembers nonces for this long, so a replay is caught either way.
inline constexpr std::int64_t kRequestWindowSeconds = 300;

// Task, lease and verification-job ids: 1 to 64 characters of [A-Za-z0-9_-], the first a letter
// or a digit. Workers name folders after them, so a market may pick any ids of this form (hex,
// UUIDs), but none that could name another path ("..", "/x", "~"). Every parse_* checks them.
inline constexpr std::size_t kMaxIdLength = 64;
bool is_protocol_id(std::string_view id);

// The four signature headers of one request.
struct SignedHeaders {
  std::string key;        // the signer's Ed25519 public key, 64 hex digits
  std::string timestamp;  // unix seconds, decimal
  std::string nonce;      // 32 hex digits, fresh for every request
  std::string signature;  // Ed25519 over canonical_request(...), 128 hex digits
  Headers as_headers() const;
};

// "solver-request-v1\n" METHOD "\n" path_with_query "\n" timestamp "\n" nonce "\n" sha256_hex(body).
std::string canonical_request(std::string_view method, std::string_view path_with_query, std::string_view timestamp,
                              std::string_view nonce, std::string_view body);

// 16 random bytes as 32 lowercase hex digits (OpenSSL's generator).
std::string random_nonce();

SignedHeaders sign_request(const SigningKey& key, std::string_view method, std::string_view path_with_query,
                           std::string_view body, std::int64_t now, std::string_view nonce);

// Whether a request's signature headers hold, at the verifier's clock `now`. `reason` is one of
// the market's 401 error codes: "unsigned" (a header missing), "malformed_signature" (a header not
// in its format), "stale" (timestamp outside the window) or "bad_signature". Replays are the
// caller's to catch: it must remember (key, nonce) for kRequestWindowSeconds.
struct RequestCheck {
  bool ok = false;
  std::string reason;
  std::string message;  // a sentence for the error body
  std::int64_t timestamp = 0;
};
RequestCheck verify_request(const SignedHeaders& headers, std::string_view method, std::string_view path_with_query,
                            std::string_view body, std::int64_t now);

// --- Bodies -------------------------------------------------------------------------------------
// Each parse_* takes the object and its name in errors, and throws Error(Input)
// "<name>.<field>: <problem>"; the client turns that into Error(Network) naming the endpoint,
// the server into a 400.

// Who a failed task is down to, as its worker judges (docs/market-protocol.md, "Failures"):
// the task (bad data, a non-finite loss, an exceeded budget: no rig would do better), the worker
// (its device, disk, network or ceilings: another rig may succeed), or unknown (a download that
// failed for good: the data's host or the worker's network).
enum class Fault { Task, Worker, Unknown };
std::string_view fault_name(Fault fault);

struct WorkerProfile {
  std::string name;
  std::vector<std::string> roles;  // "solve", "verify"
  nlohmann::json hardware = nlohmann::json::object();  // free-form, shown in listings
  int devices = 0;
  std::int64_t memory_mb = 0;
  std::vector<std::string> model_kinds;  // of kModelKinds (common/task.h)
  // The agent's solver version (common/version.h), checked against the market's minimum;
  // empty when an agent older than that check registered without one.
  std::string agent_version;
};

struct Lease {
  std::string task_id, lease_id;
  nlohmann::json task;  // the normalised task (common/task.h task_to_json)
  std::string task_sha256;
  std::int64_t lease_seconds = 0;
  std::int64_t expires_at = 0;  // unix seconds
};

struct Heartbeat {
  std::string lease_id;
  std::int64_t step = 0, total_steps = 0;
  std::optional<double> loss;
  std::vector<CheckpointCommitment> checkpoints;
};

struct HeartbeatReply {
  std::int64_t expires_at = 0;
  bool cancel = false;
  std::string reason;
};

struct Completion {
  std::string lease_id, bundle_address, manifest_sha256, manifest_signature;
};

struct FailureReport {
  std::string lease_id, reason;
  Fault fault = Fault::Unknown;
};

// A lease given back unfinished through no failure (the rig's operator paused it too long): the
// task is queued again as if never claimed. `reason` is for the market's log.
struct Release {
  std::string lease_id, reason;
};

struct VerificationJob {
  std::string job_id, task_id;
  nlohmann::json task;
  std::string task_sha256, bundle_address, manifest_sha256, solver_key;
  std::vector<CheckpointCommitment> commitments;  // those of the lease that completed the task
  std::int64_t lease_seconds = 0;
};

nlohmann::json to_json(const CheckpointCommitment& commitment);
nlohmann::json to_json(const WorkerProfile& profile);
nlohmann::json to_json(const Lease& lease);
nlohmann::json to_json(const Heartbeat& beat);
nlohmann::json to_json(const HeartbeatReply& reply);
nlohmann::json to_json(const Completion& completion);
nlohmann::json to_json(const FailureReport& report);
nlohmann::json to_json(const Release& release);
nlohmann::json to_json(const VerificationJob& job);
nlohmann::json to_json(const VerdictSummary& verdict);

CheckpointCommitment parse_commitment(const nlohmann::json& json, const std::string& name);
WorkerProfile parse_worker_profile(const nlohmann::json& json, const std::string& name);
Lease parse_lease(const nlohmann::json& json, const std::string& name);
Heartbeat parse_heartbeat(const nlohmann::json& json, const std::string& name);
HeartbeatReply parse_heartbeat_reply(const nlohmann::json& json, const std::string& name);
Completion parse_completion(const nlohmann::json& json, const std::string& name);
FailureReport parse_failure_report(const nlohmann::json& json, const std::string& name);
Release parse_release(const nlohmann::json& json, const std::string& name);
VerificationJob parse_verification_job(const nlohmann::json& json, const std::string& name);
VerdictSummary parse_verdict(const nlohmann::json& json, const std::string& name);
// The lowest agent version the market accepts, from its health reply (GET /v1/health):
// nullopt when the reply names none. Throws Error(Input) "<name>.min_agent_version: ..." when it
// is not a string or not a version.
std::optional<Version> parse_min_agent_version(const nlohmann::json& health, const std::string& name);
// A decline's body, {reason}: why the verifier cannot judge the bundle.
std::string parse_decline_reason(const nlohmann::json& json, const std::string& name);

}  // namespace solver::net
