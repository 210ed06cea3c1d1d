// The market protocol's signing and bodies. The canonical string binds the method, the exact
// path and query, the time, a nonce and the body's hash, so a captured request cannot be
// replayed later, pointed at another endpoint or given another body.
#include "net/market_protocol.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "common/error.h"
#include "common/json_reader.h"
#include "common/keys.h"
#include "common/sha256.h"
#include "common/task.h"

namespace solver::net {
namespace {

using nlohmann::json;

constexpr std::string_view kCanonicalPrefix = "solver-request-v1\n";
constexpr std::array<std::string_view, 2> kRoles = {"solve", "verify"};

std::optional<std::int64_t> parse_timestamp(std::string_view text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  if (text.empty() || text.size() > 18) return std::nullopt;  // far beyond any plausible clock
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || stop != end || value < 0) return std::nullopt;
  return value;
}

RequestCheck refuse(std::string reason, std::string message) {
  RequestCheck check;
  check.reason = std::move(reason);
  check.message = std::move(message);
  return check;
}

// A string field that may be empty (reasons), unlike ObjectReader::string.
std::string text_or_empty(ObjectReader& reader, std::string_view key) {
  if (!reader.has(key)) return {};
  const json& value = reader.raw(key);
  if (!value.is_string()) ObjectReader::fail(reader.field(key), "expected a string, got " + ObjectReader::shown(value));
  return value.get<std::string>();
}

std::string hex_field(ObjectReader& reader, std::string_view key, std::size_t digits) {
  std::string value = reader.string(key);
  if (!is_lower_hex(value, digits))
    ObjectReader::fail(reader.field(key), "expected " + std::to_string(digits) + " lowercase hex digits, got \"" + value + "\"");
  return value;
}

template <std::size_t N>
std::vector<std::string> names_from(ObjectReader& reader, std::string_view key, const std::array<std::string_view, N>& allowed) {
  const json& values = reader.array(key);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::string field = reader.field(key) + "[" + std::to_string(i) + "]";
    const json& value = values[i];
    if (!value.is_string() || std::find(allowed.begin(), allowed.end(), value.get<std::string>()) == allowed.end()) {
      std::string expected;
      for (const std::string_view name : allowed) expected += (expected.empty() ? "" : ", ") + std::string(name);
      ObjectReader::fail(field, "expected one of " + expected + ", got " + ObjectReader::shown(value));
    }
    names.push_back(value.get<std::string>());
  }
  return names;
}

std::string id_field(ObjectReader& reader, std::string_view key) {
  std::string value = reader.string(key);
  if (!is_protocol_id(value))
    ObjectReader::fail(reader.field(key), "expected an id of 1 to " + std::to_string(kMaxIdLength) +
                                              " letters, digits, '-' or '_' starting with a letter or digit, got " +
                                              ObjectReader::shown(json(value)));
  return value;
}

json object_field(ObjectReader& reader, std::string_view key) {
  const json& value = reader.raw(key);
  if (!value.is_object()) ObjectReader::fail(reader.field(key), "expected an object, got " + ObjectReader::shown(value));
  return value;
}

std::vector<CheckpointCommitment> commitments_from(ObjectReader& reader, std::string_view key) {
  std::vector<CheckpointCommitment> commitments;
  if (!reader.has(key)) return commitments;
  const json& values = reader.array(key);
  for (std::size_t i = 0; i < values.size(); ++i)
    commitments.push_back(parse_commitment(values[i], reader.field(key) + "[" + std::to_string(i) + "]"));
  return commitments;
}

json commitments_json(const std::vector<CheckpointCommitment>& commitments) {
  json values = json::array();
  for (const CheckpointCommitment& commitment : commitments) values.push_back(to_json(commitment));
  return values;
}

}  // namespace

std::string_view fault_name(Fault fault) {
  switch (fault) {
    case Fault::Task: return "task";
    case Fault::Worker: return "worker";
    case Fault::Unknown: return "unknown";
  }
  return "unknown";
}

bool is_protocol_id(std::string_view id) {
  const auto allowed = [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; };
  return !id.empty() && id.size() <= kMaxIdLength && std::isalnum(static_cast<unsigned char>(id.front())) &&
         std::all_of(id.begin(), id.end(), allowed);
}

Headers SignedHeaders::as_headers() const {
  return {{std::string(kKeyHeader), key},
          {std::string(kTimestampHeader), timestamp},
          {std::string(kNonceHeader), nonce},
          {std::string(kSignatureHeader), signature}};
}

std::string canonical_request(std::string_view method, std::string_view path_with_query, std::string_view timestamp,
                              std::string_view nonce, std::string_view body) {
  std::string text(kCanonicalPrefix);
  text.append(method).append("\n").append(path_with_query).append("\n");
  text.append(timestamp).append("\n").append(nonce).append("\n").append(sha256_hex(body));
  return text;
}

std::string random_nonce() {
  std::array<std::uint8_t, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
    throw Error(ErrorKind::Internal, "OpenSSL's random generator failed to produce a request nonce");
  return to_hex(bytes);
}

SignedHeaders sign_request(const SigningKey& key, std::string_view method, std::string_view path_with_query,
                           std::string_view body, std::int64_t now, std::string_view nonce) {
  SignedHeaders headers;
  headers.key = key.public_key_hex();
  headers.timestamp = std::to_string(now);
  headers.nonce = std::string(nonce);
  headers.signature = key.sign_hex(canonical_request(method, path_with_query, headers.timestamp, nonce, body));
  return headers;
}

RequestCheck verify_request(const SignedHeaders& headers, std::string_view method, std::string_view path_with_query,
                            std::string_view body, std::int64_t now) {
  if (headers.key.empty() || headers.timestamp.empty() || headers.nonce.empty() || headers.signature.empty())
    return refuse("unsigned", "the request lacks one of the headers X-Solver-Key, X-Solver-Timestamp, X-Solver-Nonce, X-Solver-Signature");
  if (!is_lower_hex(headers.key, 64))
    return refuse("malformed_signature", "X-Solver-Key must be 64 lowercase hex digits, got " + std::to_string(headers.key.size()) + " characters");
  if (!is_lower_hex(headers.nonce, 32))
    return refuse("malformed_signature", "X-Solver-Nonce must be 32 lowercase hex digits, got " + std::to_string(headers.nonce.size()) + " characters");
  if (!is_lower_hex(headers.signature, 128))
    return refuse("malformed_signature", "X-Solver-Signature must be 128 lowercase hex digits, got " + std::to_string(headers.signature.size()) + " characters");
  const std::optional<std::int64_t> timestamp = parse_timestamp(headers.timestamp);
  if (!timestamp) return refuse("malformed_signature", "X-Solver-Timestamp must be unix seconds, got \"" + headers.timestamp.substr(0, 24) + "\"");
  if (std::llabs(*timestamp - now) > kRequestWindowSeconds)
    return refuse("stale", "X-Solver-Timestamp " + headers.timestamp + " is " + std::to_string(*timestamp - now) +
                               " s from the market's clock; at most " + std::to_string(kRequestWindowSeconds) + " s is accepted");
  if (!verify_signature(headers.key, canonical_request(method, path_with_query, headers.timestamp, headers.nonce, body), headers.signature))
    return refuse("bad_signature", "X-Solver-Signature does not verify for this key, method, path, timestamp, nonce and body");
  RequestCheck check;
  check.ok = true;
  check.timestamp = *timestamp;
  return check;
}

json to_json(const CheckpointCommitment& commitment) { return {{"step", commitment.step}, {"sha256", commitment.sha256}}; }

json to_json(const WorkerProfile& profile) {
  json body = {{"name", profile.name},
               {"roles", profile.roles},
               {"hardware", profile.hardware.is_null() ? json::object() : profile.hardware},
               {"capabilities", {{"devices", profile.devices}, {"memory_mb", profile.memory_mb}, {"model_kinds", profile.model_kinds}}}};
  if (!profile.agent_version.empty()) body["agent_version"] = profile.agent_version;
  return body;
}

json to_json(const Lease& lease) {
  return {{"task_id", lease.task_id},         {"lease_id", lease.lease_id},           {"task", lease.task},
          {"task_sha256", lease.task_sha256}, {"lease_seconds", lease.lease_seconds}, {"expires_at", lease.expires_at}};
}

json to_json(const Heartbeat& beat) {
  json body = {{"lease_id", beat.lease_id},
               {"step", beat.step},
               {"total_steps", beat.total_steps},
               {"checkpoints", commitments_json(beat.checkpoints)}};
  if (beat.loss && std::isfinite(*beat.loss)) body["loss"] = *beat.loss;
  return body;
}

json to_json(const HeartbeatReply& reply) {
  return {{"expires_at", reply.expires_at}, {"cancel", reply.cancel}, {"reason", reply.reason}};
}

json to_json(const Completion& completion) {
  return {{"lease_id", completion.lease_id},
          {"bundle_address", completion.bundle_address},
          {"manifest_sha256", completion.manifest_sha256},
          {"manifest_signature", completion.manifest_signature}};
}

json to_json(const FailureReport& report) {
  return {{"lease_id", report.lease_id}, {"reason", report.reason}, {"fault", fault_name(report.fault)}};
}

json to_json(const Release& release) { return {{"lease_id", release.lease_id}, {"reason", release.reason}}; }

json to_json(const VerificationJob& job) {
  return {{"job_id", job.job_id},
          {"task_id", job.task_id},
          {"task", job.task},
          {"task_sha256", job.task_sha256},
          {"bundle_address", job.bundle_address},
          {"manifest_sha256", job.manifest_sha256},
          {"solver_key", job.solver_key},
          {"commitments", commitments_json(job.commitments)},
          {"lease_seconds", job.lease_seconds}};
}

json to_json(const VerdictSummary& verdict) {
  return {{"accepted", verdict.accepted}, {"reason", verdict.reason}, {"report", verdict.report.is_null() ? json::object() : verdict.report}};
}

CheckpointCommitment parse_commitment(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  CheckpointCommitment commitment;
  commitment.step = reader.non_negative("step");
  commitment.sha256 = reader.sha256("sha256");
  return commitment;
}

WorkerProfile parse_worker_profile(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  WorkerProfile profile;
  profile.name = reader.string("name");
  profile.roles = names_from(reader, "roles", kRoles);
  if (profile.roles.empty()) ObjectReader::fail(reader.field("roles"), "expected at least one of solve, verify");
  if (reader.has("hardware")) profile.hardware = object_field(reader, "hardware");
  ObjectReader capabilities = reader.object("capabilities");
  const std::int64_t devices = capabilities.non_negative("devices");
  if (devices > 1024) ObjectReader::fail(capabilities.field("devices"), "expected at most 1024, got " + std::to_string(devices));
  profile.devices = static_cast<int>(devices);
  profile.memory_mb = capabilities.non_negative("memory_mb");
  profile.model_kinds = names_from(capabilities, "model_kinds", kModelKinds);
  if (reader.has("agent_version"))
    profile.agent_version = Version::parse(reader.string("agent_version"), reader.field("agent_version")).text();
  return profile;
}

std::optional<Version> parse_min_agent_version(const json& health, const std::string& name) {
  ObjectReader reader(health, name);
  if (!reader.has("min_agent_version") || health.at("min_agent_version").is_null()) return std::nullopt;
  return Version::parse(reader.string("min_agent_version"), reader.field("min_agent_version"));
}

Lease parse_lease(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  Lease lease;
  lease.task_id = id_field(reader, "task_id");
  lease.lease_id = id_field(reader, "lease_id");
  lease.task = object_field(reader, "task");
  lease.task_sha256 = reader.sha256("task_sha256");
  lease.lease_seconds = reader.non_negative("lease_seconds");
  lease.expires_at = reader.non_negative("expires_at");
  return lease;
}

Heartbeat parse_heartbeat(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  Heartbeat beat;
  beat.lease_id = id_field(reader, "lease_id");
  beat.step = reader.non_negative("step");
  beat.total_steps = reader.non_negative("total_steps");
  if (reader.has("loss") && !reader.raw("loss").is_null()) beat.loss = reader.number("loss");
  beat.checkpoints = commitments_from(reader, "checkpoints");
  return beat;
}

HeartbeatReply parse_heartbeat_reply(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  HeartbeatReply reply;
  reply.expires_at = reader.non_negative("expires_at");
  reply.cancel = reader.boolean("cancel");
  reply.reason = text_or_empty(reader, "reason");
  return reply;
}

Completion parse_completion(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  Completion completion;
  completion.lease_id = id_field(reader, "lease_id");
  completion.bundle_address = reader.string("bundle_address");
  completion.manifest_sha256 = reader.sha256("manifest_sha256");
  completion.manifest_signature = hex_field(reader, "manifest_signature", 128);
  return completion;
}

FailureReport parse_failure_report(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  FailureReport report;
  report.lease_id = id_field(reader, "lease_id");
  report.reason = text_or_empty(reader, "reason");
  const std::string fault = reader.string("fault");
  if (fault == "task") report.fault = Fault::Task;
  else if (fault == "worker") report.fault = Fault::Worker;
  else if (fault == "unknown") report.fault = Fault::Unknown;
  else ObjectReader::fail(reader.field("fault"), "expected \"task\", \"worker\" or \"unknown\", got \"" + fault + "\"");
  return report;
}

Release parse_release(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  Release release;
  release.lease_id = id_field(reader, "lease_id");
  release.reason = text_or_empty(reader, "reason");
  return release;
}

VerificationJob parse_verification_job(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  VerificationJob job;
  job.job_id = id_field(reader, "job_id");
  job.task_id = id_field(reader, "task_id");
  job.task = object_field(reader, "task");
  job.task_sha256 = reader.sha256("task_sha256");
  job.bundle_address = reader.string("bundle_address");
  job.manifest_sha256 = reader.sha256("manifest_sha256");
  job.solver_key = hex_field(reader, "solver_key", 64);
  reader.raw("commitments");  // required here, even when empty
  job.commitments = commitments_from(reader, "commitments");
  job.lease_seconds = reader.non_negative("lease_seconds");
  return job;
}

VerdictSummary parse_verdict(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  VerdictSummary verdict;
  verdict.accepted = reader.boolean("accepted");
  verdict.reason = text_or_empty(reader, "reason");
  if (reader.has("report")) verdict.report = reader.raw("report");
  return verdict;
}

std::string parse_decline_reason(const json& value, const std::string& name) {
  ObjectReader reader(value, name);
  std::string reason = reader.string("reason");
  reader.finish();
  return reason;
}

}  // namespace solver::net
