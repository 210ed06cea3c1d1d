// The market's state in SQLite: workers, tasks, leases, checkpoint commitments, verification
// jobs and verdicts, and the nonces of recent requests. Every state change is one transaction
// on a WAL database with synchronous=FULL, so a market killed at any moment restarts with all
// it had acknowledged. The market's rules live here too (who may act on which lease, when a
// lease expires, when a task is requeued or failed), because each rule reads and writes in the
// same transaction. One connection behind a mutex: the market's load is a few requests per
// worker per minute, far below what a serialised SQLite handles.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "net/market_protocol.h"

namespace solver::market {

// A request the market's rules turn down: the HTTP status and error code the server answers
// with, a sentence saying why, and for 429 when to come back (the Retry-After header).
class Refusal : public std::runtime_error {
 public:
  Refusal(int status, std::string code, const std::string& message, std::optional<int> retry_after_seconds = std::nullopt)
      : std::runtime_error(message), status_(status), code_(std::move(code)), retry_after_seconds_(retry_after_seconds) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  std::optional<int> retry_after_seconds() const { return retry_after_seconds_; }

 private:
  int status_;
  std::string code_;
  std::optional<int> retry_after_seconds_;
};

struct StorePolicy {
  std::int64_t lease_seconds = 300;
  std::int64_t verification_lease_seconds = 900;
  int max_attempts = 3;  // leases that end without a completion (failed or expired) before the task fails
  std::int64_t fault_hold_seconds = 60;  // a worker's hold after its 2nd failure in a row not down to the task; doubles after
};

// A validated task, ready to be stored.
struct NewTask {
  std::string task_id;
  std::string submitter;    // the submitter's public key
  nlohmann::json task;      // normalised (task_to_json)
  std::string task_sha256;
  std::string model_kind;
  std::int64_t max_memory_mb = 0;
};

// One page of GET /v1/tasks.
struct TaskPage {
  nlohmann::json tasks;              // an array of summaries
  std::optional<std::string> next;   // the last task's id when more follow: the next page's `after`
};

class Store {
 public:
  // Opens or creates the database. Throws Error(Io) when it cannot, Error(Config) when it was
  // written by a market with another schema version.
  Store(const std::filesystem::path& path, StorePolicy policy);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Remembers (key, nonce) and returns true, or returns false when it was seen before. Nonces whose
  // timestamp has left the request window are forgotten: such a request is refused as stale anyway.
  bool remember_nonce(const std::string& key, const std::string& nonce, std::int64_t timestamp, std::int64_t now);

  void register_worker(const std::string& key, const net::WorkerProfile& profile, std::int64_t now);
  std::optional<net::WorkerProfile> worker(const std::string& key);
  // A registered worker or a key that has submitted a task: may read task statuses.
  bool is_known_key(const std::string& key);

  // True when stored now; false when the same task from the same submitter was already there.
  bool submit_task(const NewTask& task, std::int64_t now);
  void cancel_task(const std::string& task_id, const std::string& key, std::int64_t now);

  // The oldest queued task the worker can run, leased to it; nullopt when none matches.
  std::optional<net::Lease> claim_task(const std::string& key, const net::WorkerProfile& profile, std::int64_t now);
  net::HeartbeatReply heartbeat(const std::string& task_id, const std::string& key, const net::Heartbeat& beat, std::int64_t now);
  void complete_task(const std::string& task_id, const std::string& key, const net::Completion& completion, std::int64_t now);
  // By the report's fault: the task's fails it; a worker's or an unknown one requeues it (an
  // unknown one counts as an attempt), never to be leased to `key` again, and counts against
  // the worker, which is held back (403 held_back on claims) after repeated faults; a completion
  // clears that count. Returns the task's state afterwards ("queued", "failed", or what it already was).
  std::string fail_task(const std::string& task_id, const std::string& key, const net::FailureReport& report, std::int64_t now);
  // The lease's holder gives its active lease back unfinished, through no failure: the task is
  // queued again with its attempts and the worker's fault count untouched, and the same worker
  // may claim it again. Refusal 409 not_leased when the task is not leased on that lease (a lease
  // already released is a retry: answered with the task's state). Returns the task's state.
  std::string release_task(const std::string& task_id, const std::string& key, const net::Release& release, std::int64_t now);

  // The oldest completed task that `key` did not solve, has not declined and nobody is verifying, as a job.
  std::optional<net::VerificationJob> claim_verification(const std::string& key, std::int64_t now);
  // The verifier cannot judge this bundle (its runtime is not one the verifier covers): the job
  // ends without a verdict, the task goes to another verifier, never back to `key`.
  void decline_verification(const std::string& job_id, const std::string& key, const std::string& reason, std::int64_t now);
  void record_verdict(const std::string& job_id, const std::string& key, const VerdictSummary& verdict, std::int64_t now);

  // Returns tasks whose lease has passed to the queue (or fails them after max_attempts) and
  // frees verification jobs whose lease has passed. Returns how many leases and jobs expired.
  int expire_due(std::int64_t now);

  nlohmann::json task_status(const std::string& task_id);  // Refusal 404 when unknown
  // Up to `limit` task summaries, oldest first, after the task `after` (from the first when
  // empty). Refusal 400 when `after` names no task.
  TaskPage list_tasks(const std::string& after, std::size_t limit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace solver::market
