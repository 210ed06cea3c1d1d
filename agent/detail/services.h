// What the agent lends each job it runs: the market, the store, the input cache, the key, the
// status board, the stop flag and the operator's controls. The agent owns them; a job only
// borrows them while it runs.
#pragma once

#include <atomic>
#include <mutex>

#include "agent/agent_config.h"
#include "agent/detail/agent_controls.h"
#include "agent/detail/status_board.h"
#include "net/fetch.h"
#include "net/market_client.h"
#include "net/store.h"

namespace solver {
class SigningKey;
}

namespace solver::agent::detail {

struct AgentServices {
  const SigningKey& key;
  const std::atomic<bool>& stop;
  net::MarketClient& market;
  net::BundleStore& store;
  net::FileCache& cache;
  std::mutex& publish_mutex;  // one upload at a time: the uplink is shared anyway
  StatusBoard& status;
  int max_worker_faults;      // limits.max_worker_faults, logged when reached
  const AgentControls& controls;  // the operator's drain, pause and disabled devices
};

class GpuSteward;

// Where a job runs: a slot of the agent (its index on the status board) and its device, with
// the steward of the device's GPUs (gpu_steward.h; none: nothing is watched).
struct SlotPlace {
  int index = 0;
  std::string device;
  GpuSteward* steward = nullptr;
};

}  // namespace solver::agent::detail
