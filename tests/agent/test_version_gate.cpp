// The agent's version gate against a market's health reply: an agent older than the market's
// min_agent_version claims nothing and says so (status.json, the metric), notices when the
// market's setting changes at its next re-check, and refuses a malformed minimum naming it.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <mutex>

#include "agent/detail/status_board.h"
#include "agent/detail/version_gate.h"
#include "common/error.h"
#include "common/files.h"
#include "common/keys.h"
#include "common/version.h"
#include "net/market_client.h"
#include "tests/local_http_server.h"
#include "tests/test_support.h"

namespace solver::agent::detail {
namespace {

using Catch::Matchers::Contains;

// A market's health endpoint whose reply the test sets, counting the requests.
struct HealthStub {
  HealthStub() {
    server.routes().Get("/v1/health", [this](const httplib::Request&, httplib::Response& response) {
      const std::lock_guard lock(mutex);
      ++requests;
      if (refused) response.status = 404;
      else response.set_content(reply, "application/json");
    });
  }
  void set(nlohmann::json body) {
    const std::lock_guard lock(mutex);
    reply = body.dump();
  }
  int request_count() {
    const std::lock_guard lock(mutex);
    return requests;
  }
  std::mutex mutex;
  std::string reply = R"({"protocol": "solver-market/1", "version": "0.1.0"})";
  int requests = 0;
  bool refused = false;  // answer 404, as a market without the endpoint
  test::LocalHttpServer server;  // last: stopped before the reply it serves goes
};

struct GateRig {
  explicit GateRig(std::chrono::steady_clock::duration recheck) : gate(market, status, recheck) {}
  std::string status_field(const std::string& name) {
    return nlohmann::json::parse(read_file(dir / "status.json"))[name].get<std::string>();
  }
  test::ScratchDir dir{"version-gate"};
  HealthStub stub;
  SigningKey key = SigningKey::generate();
  std::atomic<bool> stop{false};
  net::MarketClient market{net::MarketClientOptions{stub.server.url(), net::RetryPolicy{.max_attempts = 1}}, key};
  StatusBoard status{dir / "status.json", StatusIdentity{"rig", stub.server.url(), key.public_key_hex()}, {"cpu"}, stop};
  VersionGate gate;
};

TEST_CASE("an agent older than the market's minimum claims nothing and says so until the market lowers it", "[agent][unit]") {
  GateRig rig(std::chrono::seconds(0));  // re-checks at every call
  CHECK_FALSE(rig.gate.outdated());      // no minimum advertised
  rig.stub.set({{"protocol", "solver-market/1"}, {"version", "99.0.0"}, {"min_agent_version", "99.0.0"}});
  const std::string expected =
      "this agent is " + std::string(solver_version()) + "; the market accepts 99.0.0 or newer: upgrade solver";
  CHECK(rig.gate.outdated() == expected);
  CHECK(rig.status_field("outdated") == expected);
  CHECK(rig.status_field("version") == solver_version());
  CHECK_THAT(rig.status.metrics().exposition(), Contains("solver_agent_outdated 1"));

  // The market's operator lowers the minimum to this very version: claiming again.
  rig.stub.set({{"protocol", "solver-market/1"}, {"version", "99.0.0"}, {"min_agent_version", std::string(solver_version())}});
  CHECK_FALSE(rig.gate.outdated());
  CHECK(rig.status_field("outdated").empty());
  CHECK_THAT(rig.status.metrics().exposition(), Contains("solver_agent_outdated 0"));
}

TEST_CASE("the version gate asks the market again only once its re-check interval has passed", "[agent][unit]") {
  GateRig rig(std::chrono::hours(1));
  rig.stub.set({{"protocol", "solver-market/1"}, {"version", "99.0.0"}, {"min_agent_version", "99.0.0"}});
  CHECK(rig.gate.outdated());
  rig.stub.set({{"protocol", "solver-market/1"}, {"version", "99.0.0"}});
  CHECK(rig.gate.outdated());  // still the answer of the first check
  CHECK(rig.stub.request_count() == 1);
}

TEST_CASE("a market without a health endpoint advertises no minimum: the agent claims as before", "[agent][unit]") {
  GateRig rig(std::chrono::seconds(0));
  rig.stub.set({{"min_agent_version", "99.0.0"}});
  CHECK(rig.gate.outdated());
  {
    const std::lock_guard lock(rig.stub.mutex);
    rig.stub.refused = true;
  }
  CHECK_FALSE(rig.gate.outdated());
}

TEST_CASE("a malformed minimum version from the market is an error naming the value, and it is asked again", "[agent][unit]") {
  GateRig rig(std::chrono::hours(1));
  rig.stub.set({{"protocol", "solver-market/1"}, {"min_agent_version", "2.0-final"}});
  try {
    rig.gate.outdated();
    FAIL("a malformed minimum was accepted");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Network);
    CHECK_THAT(error.what(), Contains("market reply to GET /v1/health: reply.min_agent_version: \"2.0-final\" is not a version"));
  }
  rig.stub.set({{"protocol", "solver-market/1"}, {"min_agent_version", "0.0.1"}});
  CHECK_FALSE(rig.gate.outdated());  // a failed check is no check: the next call asks again
  CHECK(rig.stub.request_count() == 2);
}

}  // namespace
}  // namespace solver::agent::detail
