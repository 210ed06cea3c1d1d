// The market client (docs/market-protocol.md): one method per endpoint, each request signed
// with the worker's key. Transport failures and transient statuses (408, 425, 429, 5xx) are
// retried with the RetryPolicy, each attempt freshly signed (a new timestamp and nonce, since
// the market refuses a nonce twice). Everything else is a clear error at once:
//   - a 4xx (or other non-transient status) throws MarketError, whose status() and code() are
//     the market's (409 "lease_expired", "lease_lost", "commitment_conflict"...);
//   - a reply that is not JSON or lacks a field throws Error(Network, not retryable) naming the
//     endpoint and the field ("market reply to POST /v1/claims: lease.task_id: missing"). Not
//     retried: a market that answers garbage will most likely answer it again, and repeating a
//     claim would leave a lease behind on each try.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "net/market_protocol.h"
#include "net/retry.h"

namespace solver {
class SigningKey;
}

namespace solver::net {

// The market turned a request down: Error(Network, not retryable) with the HTTP status and the
// error code of the reply's body (`http_<status>` when the body had none).
class MarketError : public Error {
 public:
  MarketError(long status, std::string code, const std::string& message);
  long status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  long status_;
  std::string code_;
};

struct MarketClientOptions {
  std::string base_url;  // "http://127.0.0.1:8470"; a path after the host is kept as a prefix
  RetryPolicy retry;
  std::chrono::milliseconds timeout{30'000};  // per attempt
};

class MarketClient {
 public:
  MarketClient(MarketClientOptions options, const SigningKey& key);  // keeps a reference to key

  nlohmann::json health();
  // The lowest agent version the market accepts (its health reply's min_agent_version), or
  // nullopt when it names none. A malformed one throws Error(Network, not retryable) naming it.
  std::optional<Version> min_agent_version();
  void register_worker(const WorkerProfile& profile);
  std::string submit_task(const nlohmann::json& task);  // returns the task id
  std::optional<Lease> claim_task();                     // nullopt: no work now
  HeartbeatReply heartbeat(const std::string& task_id, const Heartbeat& beat);
  void complete_task(const std::string& task_id, const Completion& completion);
  void fail_task(const std::string& task_id, const std::string& lease_id, const std::string& reason, Fault fault);
  // Gives an active lease back unfinished, at no cost to the task or this worker (why: `reason`).
  void release_task(const std::string& task_id, const std::string& lease_id, const std::string& reason);
  void cancel_task(const std::string& task_id);
  std::optional<VerificationJob> claim_verification();  // nullopt: nothing to verify now
  void post_verdict(const std::string& job_id, const VerdictSummary& verdict);
  // Gives a job back unjudged: this verifier cannot judge the bundle (why: `reason`).
  void decline_verification(const std::string& job_id, const std::string& reason);
  nlohmann::json task_status(const std::string& task_id);  // the status object of GET /v1/tasks/{id}
  nlohmann::json list_tasks();  // every task, oldest first: GET /v1/tasks page by page, following "next"

 private:
  struct Reply {
    long status = 0;
    nlohmann::json body;  // null for 204
  };
  Reply call(std::string_view method, const std::string& path, const nlohmann::json* body);

  MarketClientOptions options_;
  const SigningKey& key_;
  std::string origin_;       // scheme://host:port
  std::string path_prefix_;  // the base URL's path, without a trailing '/'
};

}  // namespace solver::net
