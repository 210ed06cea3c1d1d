// `solver agent`: the long-running worker. It registers with the market, then loops:
//
//   recover ─▶ spool ─▶ claim a task ─▶ fetch inputs ─▶ train (heartbeats) ─▶ bundled ─▶ published ─▶ completed
//                  └──▶ claim a verification ─▶ fetch the bundle ─▶ replay ─▶ verdict
//
// Each task in flight is a folder <work_dir>/tasks/<task id>/ holding state.json (its phase,
// rewritten durably at every transition) and the bundle. That folder is the whole state machine:
// after a crash, reboot or SIGTERM the agent picks every task up where its phase says, training
// from the last journaled checkpoint, publishing bundles spooled while the store was down,
// completing those the market has not acknowledged. A task's folder is removed only once the
// market has its completion (or has given the task to someone else). docs/agent.md explains more.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>

#include "agent/agent_config.h"

namespace solver {
class SigningKey;
}

namespace solver::agent {

class Agent {
 public:
  // `stop` is polled everywhere the agent waits (normally StopSignals::flag()). When `reload` is
  // set (SIGHUP), the agent clears it, calls `reread_config` and applies what can change while
  // it runs (docs/agent.md). Throws Error(Cuda) for a device LibTorch cannot use, Error(Config)
  // for a work or cache folder it cannot write: a rig that cannot work must not claim work.
  Agent(AgentConfig config, const SigningKey& key, const std::atomic<bool>& stop, std::atomic<bool>* reload = nullptr,
        std::function<AgentConfig()> reread_config = {});
  ~Agent();

  // Works until `stop` is set (returns 0 once in-flight work is saved), or with `until_idle`,
  // until the market has nothing for it and nothing is left to publish.
  int run(bool until_idle);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether an agent works in `work_dir` now: it holds the work dir's lock (the kernel drops it
// when that process dies, so a crashed agent or a reused pid never counts).
bool agent_running_in(const std::filesystem::path& work_dir);

}  // namespace solver::agent
