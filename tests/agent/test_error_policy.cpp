// The agent's one error policy (agent/detail/error_policy.h): what each kind of error means at
// each stage of the work, and whose fault a failed task is.
#include <catch2/catch.hpp>

#include <stdexcept>

#include "agent/detail/error_policy.h"
#include "common/error.h"
#include "net/market_client.h"

using namespace solver;
using namespace solver::agent::detail;

namespace {

const Error kBadTask(ErrorKind::Input, "train_labels: sha256 mismatch");
const Error kUnreachable(ErrorKind::Network, "connection refused", true);
const Error kDiskFull(ErrorKind::Io, "no space left on device");
const Error kBug(ErrorKind::Internal, "unreachable code");
const net::MarketError kLeaseGone(409, "lease_not_active", "the lease expired");
const net::MarketError kHeldBack(403, "held_back", "too many faults");

}  // namespace

TEST_CASE("a bad task found while preparing fails the task, but a download cut short by a stop waits", "[agent][unit]") {
  CHECK(remedy_for(Stage::Preparing, kBadTask, false) == Remedy::FailTask);
  CHECK(remedy_for(Stage::Preparing, kUnreachable, false) == Remedy::FailTask);
  CHECK(remedy_for(Stage::Preparing, kUnreachable, true) == Remedy::Later);
}

TEST_CASE("an unusable journal restarts the bundle, while other resume errors fail the task", "[agent][unit]") {
  CHECK(remedy_for(Stage::Resuming, kBadTask, false) == Remedy::RestartBundle);
  CHECK(remedy_for(Stage::Resuming, Error(ErrorKind::Capacity, "too large"), false) == Remedy::FailTask);
  CHECK(remedy_for(Stage::Resuming, kDiskFull, false) == Remedy::FailTask);
}

TEST_CASE("a finished bundle is never dropped for a store or market that is down, only when the task is not ours",
          "[agent][unit]") {
  CHECK(remedy_for(Stage::Delivering, kUnreachable, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Delivering, kDiskFull, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Delivering, kHeldBack, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Delivering, kLeaseGone, false) == Remedy::DropTask);
  CHECK(remedy_for(Stage::Delivering, net::MarketError(404, "not_found", "no such task"), false) == Remedy::DropTask);
  CHECK(remedy_for(Stage::Delivering, kBug, false) == Remedy::StopAgent);
}

TEST_CASE("training goes on through failed heartbeats and stops for a lost lease", "[agent][unit]") {
  CHECK(remedy_for(Stage::Heartbeat, kUnreachable, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Heartbeat, net::MarketError(500, "internal", "database locked"), false) == Remedy::Later);
  CHECK(remedy_for(Stage::Heartbeat, kLeaseGone, false) == Remedy::DropTask);
}

TEST_CASE("a verifier rejects a bundle only for the bundle's faults, and skips the job for its own", "[agent][unit]") {
  CHECK(remedy_for(Stage::Verifying, kBadTask, false) == Remedy::RejectBundle);
  CHECK(remedy_for(Stage::Verifying, Error(ErrorKind::Budget, "replay past its budget"), false) == Remedy::RejectBundle);
  CHECK(remedy_for(Stage::Verifying, kUnreachable, false) == Remedy::SkipJob);
  CHECK(remedy_for(Stage::Verifying, kDiskFull, false) == Remedy::SkipJob);
  CHECK(remedy_for(Stage::Verifying, Error(ErrorKind::Cuda, "device lost"), false) == Remedy::SkipJob);
  CHECK(remedy_for(Stage::Verifying, std::runtime_error("bad_alloc"), false) == Remedy::SkipJob);
}

TEST_CASE("registration waits for a market that is down, and a bug anywhere in the loop stops the agent", "[agent][unit]") {
  CHECK(remedy_for(Stage::Registering, kUnreachable, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Registering, kHeldBack, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Registering, kBug, false) == Remedy::StopAgent);
  CHECK(remedy_for(Stage::Polling, kHeldBack, false) == Remedy::Later);
  CHECK(remedy_for(Stage::Polling, kBug, false) == Remedy::StopAgent);
  CHECK(remedy_for(Stage::Polling, std::runtime_error("escaped"), false) == Remedy::StopAgent);
}

TEST_CASE("a failed task is the task's fault for bad input and budgets, the rig's for its own troubles", "[agent][unit]") {
  CHECK(fault_of(kBadTask) == net::Fault::Task);
  CHECK(fault_of(Error(ErrorKind::Budget, "step past its time limit")) == net::Fault::Task);
  CHECK(fault_of(kUnreachable) == net::Fault::Unknown);
  CHECK(fault_of(Error(ErrorKind::Cuda, "illegal address")) == net::Fault::Unknown);
  CHECK(fault_of(kDiskFull) == net::Fault::Worker);
  CHECK(fault_of(Error(ErrorKind::Capacity, "past the ceiling")) == net::Fault::Worker);
  CHECK(fault_of(kBug) == net::Fault::Worker);
}

TEST_CASE("a step out of memory splits the batch wherever the task was, and is never the task's or the bundle's fault",
          "[agent][unit]") {
  const Error out_of_memory(ErrorKind::OutOfMemory, "training step 1: out of memory on cpu");
  CHECK(remedy_for(Stage::Preparing, out_of_memory, false) == Remedy::SplitBatch);
  CHECK(remedy_for(Stage::Resuming, out_of_memory, false) == Remedy::SplitBatch);
  CHECK(remedy_for(Stage::Training, out_of_memory, false) == Remedy::SplitBatch);
  CHECK(remedy_for(Stage::Verifying, out_of_memory, false) == Remedy::SkipJob);
  CHECK(fault_of(out_of_memory) == net::Fault::Worker);
  CHECK(remedy_for(Stage::Training, Error(ErrorKind::Budget, "budget.max_memory_mb exceeded"), false) ==
        Remedy::FailTask);
}
